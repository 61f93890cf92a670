#pragma once
// Login rate limiting per (user name, source address), in memory (a restart forgets it):
// after `max_failures` failed logins within `window_s`, that pair is refused for `lockout_s`
// (answered 429 with Retry-After) even with the right password. A success clears the pair.
// At most `max_entries` pairs are tracked; when full, the pair with the oldest failure goes.

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace portcullis::operator_api {

struct LoginLimits {
  int max_failures = 5;
  std::int64_t window_s = 15 * 60;
  std::int64_t lockout_s = 5 * 60;
  std::size_t max_entries = 10'000;
};

class LoginLimiter {
 public:
  explicit LoginLimiter(LoginLimits limits = {}) : limits_(limits) {}

  // Seconds until the pair may try again; 0: it may try now.
  std::int64_t retry_after(const std::string& user, const std::string& source, std::int64_t now);
  void record_failure(const std::string& user, const std::string& source, std::int64_t now);
  void record_success(const std::string& user, const std::string& source);
  std::size_t size() const;

 private:
  struct Entry {
    int failures = 0;
    std::int64_t first_failure = 0;
    std::int64_t last_failure = 0;
    std::int64_t locked_until = 0;
  };
  using Key = std::pair<std::string, std::string>;

  LoginLimits limits_;
  mutable std::mutex mu_;
  std::map<Key, Entry> entries_;
};

}  // namespace portcullis::operator_api
