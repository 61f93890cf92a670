#pragma once
// Operator passwords: Argon2id strings from libsodium crypto_pwhash_str (salt and cost inside).
//
// Cost: crypto_pwhash's INTERACTIVE limits (2 passes over 64 MiB) by default, ~0.1 s of one core
// per login or set-up (measured in the operator API test's log). Hashing runs on the HTTPS worker
// thread that asked, but at most `max_concurrent` hashes run at once (default 2, the machine's
// cores): the rest wait their turn, so a burst of logins costs at most 2 x 64 MiB of memory and
// leaves the other worker threads (16 by default) free for every other request.

#include <cstddef>
#include <memory>
#include <semaphore>
#include <string>
#include <string_view>

#include "dataplane/base/result.h"

namespace portcullis::operator_api {

inline constexpr std::size_t kMinPasswordBytes = 12;
inline constexpr std::size_t kMaxPasswordBytes = 1024;

struct PasswordCost {
  unsigned long long opslimit;
  std::size_t memlimit;
  static PasswordCost interactive();  // crypto_pwhash_*_INTERACTIVE
  static PasswordCost minimum();      // crypto_pwhash_*_MIN: tests only
};

class PasswordHasher {
 public:
  explicit PasswordHasher(PasswordCost cost = PasswordCost::interactive(),
                          std::ptrdiff_t max_concurrent = 2);

  // ENOMEM when the hash could not be computed (memory).
  Result<std::string> hash(std::string_view password);
  // False for a wrong password or a malformed hash.
  bool verify(const std::string& hash, std::string_view password);
  // Costs as much as verify(): called for unknown user names so their answer takes as long.
  void verify_dummy(std::string_view password);

 private:
  PasswordCost cost_;
  std::counting_semaphore<64> slots_;
  std::string dummy_hash_;
};

}  // namespace portcullis::operator_api
