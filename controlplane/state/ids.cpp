#include "controlplane/state/ids.h"

#include <sodium.h>

#include <cstdlib>

namespace portcullis::state {

std::string random_id() {
  // sodium_init is idempotent and thread-safe; it fails only without a usable random source.
  if (sodium_init() < 0) std::abort();
  constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz234567";
  std::uint8_t bytes[16];
  randombytes_buf(bytes, sizeof bytes);
  std::string out;
  out.reserve(26);
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::uint8_t b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(acc >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (5 - bits)) & 31]);
  return out;
}

std::string short_id(std::string_view id) {
  if (id.size() <= 8) return std::string(id);
  return std::string(id.substr(0, 8)) + "…";
}

KeyBytes sha256(std::span<const std::uint8_t> data) {
  KeyBytes out{};
  crypto_hash_sha256(out.data(), data.data(), data.size());
  return out;
}

KeyBytes sha256(std::string_view text) {
  return sha256(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()),
                                              text.size()));
}

}  // namespace portcullis::state
