#pragma once
// Shared error vocabulary of every Portcullis layer. Kernel and library failures are values:
// a std::error_code (errno category for the kernel) plus a context string that says what was
// being done ("add peer 'aBc…=' to device 'portcullis0'"). Nothing throws across the dataplane.

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

#include <tl/expected.hpp>

namespace portcullis {

class Error {
 public:
  Error() = default;
  Error(std::error_code code, std::string context) : code_(code), context_(std::move(context)) {}

  // An errno value (positive, as in errno; a negative kernel-style value is accepted too).
  static Error from_errno(int err, std::string context) {
    return Error(std::error_code(err < 0 ? -err : err, std::generic_category()),
                 std::move(context));
  }
  // The current errno.
  static Error last_errno(std::string context) { return from_errno(errno, std::move(context)); }
  // A failure without an errno, e.g. a malformed key or reply: reported as EINVAL / EPROTO.
  static Error invalid(std::string context) { return from_errno(EINVAL, std::move(context)); }
  static Error protocol(std::string context) { return from_errno(EPROTO, std::move(context)); }

  const std::error_code& code() const { return code_; }
  int errno_value() const {
    return code_.category() == std::generic_category() ? code_.value() : 0;
  }
  const std::string& context() const { return context_; }

  // "context: strerror" — the one line that callers log or show.
  std::string message() const;

  // Prepends an outer context: "open device 'wg0': read state: No such device".
  Error&& wrap(const std::string& outer) &&;

 private:
  std::error_code code_;
  std::string context_;
};

template <class T>
using Result = tl::expected<T, Error>;
using Status = Result<void>;

inline tl::unexpected<Error> fail(Error e) { return tl::unexpected<Error>(std::move(e)); }
inline tl::unexpected<Error> fail_errno(int err, std::string context) {
  return fail(Error::from_errno(err, std::move(context)));
}
inline tl::unexpected<Error> fail_invalid(std::string context) {
  return fail(Error::invalid(std::move(context)));
}

}  // namespace portcullis
