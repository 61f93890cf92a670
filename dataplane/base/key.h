#pragma once
// WireGuard key material (Curve25519, 32 bytes) and its base64 text form.
//   Key:       a public key. Printable, comparable, hashable.
//   SecretKey: a private or preshared key. Wiped with sodium_memzero when destroyed; it never
//              prints itself, only a fingerprint (for a private key: of its public key).

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>

#include "dataplane/base/result.h"

namespace portcullis {

inline constexpr std::size_t kKeyLen = 32;
inline constexpr std::size_t kKeyBase64Len = 44;  // 43 characters and one '=' pad

using KeyBytes = std::array<std::uint8_t, kKeyLen>;

// Strict decoding, as wg(8) does: exactly 44 characters, standard alphabet, one '=' pad, and the
// unused low bits of the last character zero. Anything else is an error that says which rule broke.
Result<KeyBytes> decode_key_base64(std::string_view text);
std::string encode_key_base64(std::span<const std::uint8_t, kKeyLen> bytes);

class Key {
 public:
  Key() : bytes_{} {}
  explicit Key(const KeyBytes& bytes) : bytes_(bytes) {}
  static Result<Key> from_base64(std::string_view text);
  static Result<Key> from_bytes(std::span<const std::uint8_t> bytes);

  const KeyBytes& bytes() const { return bytes_; }
  const std::uint8_t* data() const { return bytes_.data(); }
  std::string to_base64() const { return encode_key_base64(bytes_); }
  // First 8 characters of the base64 form: enough to tell peers apart in logs.
  std::string short_name() const { return to_base64().substr(0, 8); }
  bool is_zero() const;

  auto operator<=>(const Key&) const = default;
  bool operator==(const Key&) const = default;

 private:
  KeyBytes bytes_;
};

std::ostream& operator<<(std::ostream& os, const Key& key);

class SecretKey {
 public:
  SecretKey() : bytes_{} {}
  explicit SecretKey(const KeyBytes& bytes) : bytes_(bytes) {}
  SecretKey(const SecretKey& other) : bytes_(other.bytes_) {}
  SecretKey& operator=(const SecretKey& other) {
    bytes_ = other.bytes_;
    return *this;
  }
  ~SecretKey();

  static Result<SecretKey> from_base64(std::string_view text);
  static Result<SecretKey> from_bytes(std::span<const std::uint8_t> bytes);
  // A new Curve25519 private key from the system CSPRNG, clamped as wg genkey clamps it.
  static SecretKey generate_private();
  // 32 random bytes, as wg genpsk.
  static SecretKey generate_preshared();

  // The Curve25519 public key of this private key.
  Key public_key() const;
  // For writing to a 0600 file or a UAPI/netlink message only; never for logs.
  std::string reveal_base64() const { return encode_key_base64(bytes_); }
  const std::uint8_t* data() const { return bytes_.data(); }
  bool is_zero() const;
  // Constant time comparison.
  bool equals(const SecretKey& other) const;

 private:
  KeyBytes bytes_;
};

// Prints "(secret)" and never the key.
std::ostream& operator<<(std::ostream& os, const SecretKey& key);

}  // namespace portcullis

template <>
struct std::hash<portcullis::Key> {
  std::size_t operator()(const portcullis::Key& k) const noexcept {
    std::size_t h;
    std::memcpy(&h, k.data(), sizeof h);  // keys are uniformly random
    return h;
  }
};
