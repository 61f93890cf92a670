#pragma once
// Failure injection for the fakes: "the 3rd call from now fails with this error".

#include <cstdint>
#include <map>
#include <optional>

#include "dataplane/base/result.h"

namespace portcullis::testing {

class ScheduledFailures {
 public:
  // The nth call from now (1: the next one) fails with `error`.
  void fail_call(int nth, Error error) { at_[calls_ + static_cast<std::uint64_t>(nth)] = error; }
  // Counts one call; returns the error scheduled for it, if any.
  std::optional<Error> next_call() {
    ++calls_;
    auto it = at_.find(calls_);
    if (it == at_.end()) return std::nullopt;
    Error e = std::move(it->second);
    at_.erase(it);
    return e;
  }
  std::uint64_t calls() const { return calls_; }

 private:
  std::uint64_t calls_ = 0;
  std::map<std::uint64_t, Error> at_;  // by call number
};

}  // namespace portcullis::testing
