#pragma once
// Identifiers and digests of the state store: random ids for rows the API names, and SHA-256 for
// secrets stored only as their hash (enrollment codes, refresh tokens).

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "dataplane/base/key.h"

namespace portcullis::state {

// 16 random bytes (libsodium randombytes) as 26 characters of lowercase RFC 4648 base32 without
// padding: URL-safe, case-insensitive-safe, e.g. "k5vq3m7x2hbdqyc4tzr6wjgnla".
std::string random_id();

// The first 8 characters and an ellipsis, for error contexts and logs: "k5vq3m7x…".
std::string short_id(std::string_view id);

// SHA-256 (libsodium crypto_hash_sha256).
KeyBytes sha256(std::span<const std::uint8_t> data);
KeyBytes sha256(std::string_view text);

}  // namespace portcullis::state
