#include "dataplane/base/result.h"

namespace portcullis {

std::string Error::message() const {
  if (!code_) return context_;
  if (context_.empty()) return code_.message();
  return context_ + ": " + code_.message();
}

Error&& Error::wrap(const std::string& outer) && {
  context_ = context_.empty() ? outer : outer + ": " + context_;
  return std::move(*this);
}

}  // namespace portcullis
