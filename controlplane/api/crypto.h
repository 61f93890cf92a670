#pragma once
// The agent API's cryptography, all libsodium: SHA-256, random tokens, base64 (standard and
// URL-safe), Ed25519 verification, and the gateway's Ed25519 signing key.
//
// Text forms used on the wire:
//   Ed25519 public keys:  standard base64 with padding, 44 characters (as WireGuard keys)
//   Ed25519 signatures:   standard base64 with padding, 88 characters
//   tokens, nonces, ids:  base64url without padding (RFC 4648 §5), as JWS uses it

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "dataplane/base/key.h"
#include "dataplane/base/result.h"

namespace portcullis::api {

inline constexpr std::size_t kSignatureLen = 64;
using Signature = std::array<std::uint8_t, kSignatureLen>;
using Sha256 = std::array<std::uint8_t, 32>;

Sha256 sha256(std::string_view bytes);
std::string hex(std::span<const std::uint8_t> bytes);  // lower case

// `n` bytes from the system CSPRNG in base64url (16 bytes -> 22 characters).
std::string random_base64url(std::size_t n);

std::string base64url_encode(std::span<const std::uint8_t> bytes);
// Strict: URL-safe alphabet, no padding, no whitespace, unused trailing bits zero.
Result<std::string> base64url_decode(std::string_view text);
std::string base64_encode(std::span<const std::uint8_t> bytes);
// Strict: standard alphabet with padding.
Result<std::string> base64_decode(std::string_view text);

// Signature from its 88-character base64 form.
Result<Signature> decode_signature(std::string_view text);
bool ed25519_verify(const Key& public_key, std::string_view message, const Signature& signature);

// The gateway's Ed25519 signing key: signs access tokens and orchestration documents. Agents pin
// its public key after enrollment. Kept as the 32-byte libsodium crypto_sign seed; the expanded
// secret key is wiped when the object dies.
class SigningKey {
 public:
  // Reads the seed file (base64 seed and a newline, mode 0600), or creates it (O_EXCL, 0600) with
  // a new random seed. A file readable by group or others is refused ("chmod 600 it").
  static Result<SigningKey> load_or_create(const std::string& path);
  static SigningKey generate();
  static SigningKey from_seed(const SecretKey& seed);

  SigningKey(const SigningKey& other) = default;
  SigningKey& operator=(const SigningKey& other) = default;
  ~SigningKey();

  const Key& public_key() const { return public_key_; }
  // base64url of the first 16 bytes of SHA-256(public key), 22 characters: the JWS "kid" and
  // "iss", and what logs show.
  const std::string& key_id() const { return key_id_; }

  Signature sign(std::string_view message) const;
  std::string sign_base64(std::string_view message) const;

 private:
  SigningKey() = default;

  std::array<std::uint8_t, 64> secret_{};  // libsodium's seed || public key form
  Key public_key_;
  std::string key_id_;
};

}  // namespace portcullis::api
