#include "controlplane/operator/login_limiter.h"

#include <algorithm>

namespace portcullis::operator_api {

std::int64_t LoginLimiter::retry_after(const std::string& user, const std::string& source,
                                       std::int64_t now) {
  std::lock_guard lock(mu_);
  auto it = entries_.find({user, source});
  if (it == entries_.end()) return 0;
  return std::max<std::int64_t>(0, it->second.locked_until - now);
}

void LoginLimiter::record_failure(const std::string& user, const std::string& source,
                                  std::int64_t now) {
  std::lock_guard lock(mu_);
  Key key{user, source};
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= limits_.max_entries) {
      auto oldest = std::min_element(entries_.begin(), entries_.end(), [](auto& a, auto& b) {
        return a.second.last_failure < b.second.last_failure;
      });
      entries_.erase(oldest);
    }
    it = entries_.emplace(std::move(key), Entry{}).first;
  }
  Entry& e = it->second;
  if (e.failures == 0 || now - e.first_failure >= limits_.window_s) {
    e.failures = 0;
    e.first_failure = now;
  }
  e.last_failure = now;
  if (++e.failures >= limits_.max_failures) {
    e.locked_until = now + limits_.lockout_s;
    e.failures = 0;
  }
}

void LoginLimiter::record_success(const std::string& user, const std::string& source) {
  std::lock_guard lock(mu_);
  entries_.erase({user, source});
}

std::size_t LoginLimiter::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace portcullis::operator_api
