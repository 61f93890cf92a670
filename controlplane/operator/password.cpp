#include "controlplane/operator/password.h"

#include <sodium.h>

#include <algorithm>

namespace portcullis::operator_api {
namespace {

// Holds one hashing slot for its lifetime.
class Slot {
 public:
  explicit Slot(std::counting_semaphore<64>& s) : s_(s) { s_.acquire(); }
  ~Slot() { s_.release(); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  std::counting_semaphore<64>& s_;
};

}  // namespace

PasswordCost PasswordCost::interactive() {
  return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}

PasswordCost PasswordCost::minimum() {
  return {crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN};
}

PasswordHasher::PasswordHasher(PasswordCost cost, std::ptrdiff_t max_concurrent)
    : cost_(cost), slots_(std::clamp<std::ptrdiff_t>(max_concurrent, 1, 64)) {
  if (sodium_init() < 0) std::abort();
  unsigned char random[24];
  randombytes_buf(random, sizeof random);
  auto dummy = hash(std::string_view(reinterpret_cast<const char*>(random), sizeof random));
  dummy_hash_ = dummy ? *dummy : std::string();
}

Result<std::string> PasswordHasher::hash(std::string_view password) {
  char out[crypto_pwhash_STRBYTES];
  Slot slot(slots_);
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), cost_.opslimit, cost_.memlimit,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return fail_errno(ENOMEM, "hash a password (Argon2id)");
  }
  return std::string(out);
}

bool PasswordHasher::verify(const std::string& hash, std::string_view password) {
  if (hash.empty() || hash.size() >= crypto_pwhash_STRBYTES) return false;
  Slot slot(slots_);
  return crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
}

void PasswordHasher::verify_dummy(std::string_view password) {
  (void)verify(dummy_hash_, password);
}

}  // namespace portcullis::operator_api
