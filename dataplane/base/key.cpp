#include "dataplane/base/key.h"

#include <sodium.h>

#include <cstdlib>

namespace portcullis {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(char c) {
  auto pos = kAlphabet.find(c);
  return pos == std::string_view::npos ? -1 : static_cast<int>(pos);
}

void ensure_sodium() {
  // sodium_init is idempotent and thread-safe; it fails only without a usable random source.
  if (sodium_init() < 0) std::abort();
}

}  // namespace

Result<KeyBytes> decode_key_base64(std::string_view text) {
  if (text.size() != kKeyBase64Len) {
    return fail_invalid("key must be 44 base64 characters, got " + std::to_string(text.size()));
  }
  if (text[43] != '=') return fail_invalid("key must end with a single '=' pad");
  KeyBytes out{};
  std::uint32_t acc = 0;
  int bits = 0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < 43; ++i) {
    int v = b64_value(text[i]);
    if (v < 0)
      return fail_invalid("key has a character outside base64 at position " +
                          std::to_string(i + 1));
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = static_cast<std::uint8_t>(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  // 43 characters carry 258 bits: 256 of key and 2 that must be zero.
  if (n != kKeyLen || bits != 2) return fail_invalid("key does not decode to 32 bytes");
  if (acc != 0) return fail_invalid("key's last character has non-zero padding bits");
  return out;
}

std::string encode_key_base64(std::span<const std::uint8_t, kKeyLen> bytes) {
  std::string out;
  out.reserve(kKeyBase64Len);
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::uint8_t b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 0x3f]);
    }
  }
  out.push_back(kAlphabet[(acc << (6 - bits)) & 0x3f]);
  out.push_back('=');
  return out;
}

Result<Key> Key::from_base64(std::string_view text) {
  auto bytes = decode_key_base64(text);
  if (!bytes) return fail(std::move(bytes.error()));
  return Key(*bytes);
}

Result<Key> Key::from_bytes(std::span<const std::uint8_t> bytes) {
  if (bytes.size() != kKeyLen) {
    return fail_invalid("key must be 32 bytes, got " + std::to_string(bytes.size()));
  }
  KeyBytes k;
  std::memcpy(k.data(), bytes.data(), kKeyLen);
  return Key(k);
}

bool Key::is_zero() const { return sodium_is_zero(bytes_.data(), bytes_.size()) == 1; }

std::ostream& operator<<(std::ostream& os, const Key& key) { return os << key.to_base64(); }

SecretKey::~SecretKey() { sodium_memzero(bytes_.data(), bytes_.size()); }

Result<SecretKey> SecretKey::from_base64(std::string_view text) {
  auto bytes = decode_key_base64(text);
  if (!bytes) return fail(std::move(bytes.error()));
  SecretKey k(*bytes);
  sodium_memzero(bytes->data(), bytes->size());
  return k;
}

Result<SecretKey> SecretKey::from_bytes(std::span<const std::uint8_t> bytes) {
  if (bytes.size() != kKeyLen) {
    return fail_invalid("secret key must be 32 bytes, got " + std::to_string(bytes.size()));
  }
  SecretKey k;
  std::memcpy(k.bytes_.data(), bytes.data(), kKeyLen);
  return k;
}

SecretKey SecretKey::generate_private() {
  ensure_sodium();
  SecretKey k;
  randombytes_buf(k.bytes_.data(), kKeyLen);
  // Curve25519 clamping (RFC 7748), as wg genkey does.
  k.bytes_[0] &= 248;
  k.bytes_[31] = (k.bytes_[31] & 127) | 64;
  return k;
}

SecretKey SecretKey::generate_preshared() {
  ensure_sodium();
  SecretKey k;
  randombytes_buf(k.bytes_.data(), kKeyLen);
  return k;
}

Key SecretKey::public_key() const {
  ensure_sodium();
  KeyBytes pub;
  // crypto_scalarmult_curve25519_base clamps its input itself; it fails only for a result of all
  // zeroes, which a clamped scalar cannot produce.
  if (crypto_scalarmult_curve25519_base(pub.data(), bytes_.data()) != 0) pub.fill(0);
  return Key(pub);
}

bool SecretKey::is_zero() const { return sodium_is_zero(bytes_.data(), bytes_.size()) == 1; }

bool SecretKey::equals(const SecretKey& other) const {
  return sodium_memcmp(bytes_.data(), other.bytes_.data(), kKeyLen) == 0;
}

std::ostream& operator<<(std::ostream& os, const SecretKey&) { return os << "(secret)"; }

}  // namespace portcullis
