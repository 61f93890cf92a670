#pragma once
// Access tokens: compact JWS (RFC 7515) signed with the gateway's Ed25519 key (alg "EdDSA",
// RFC 8037), 15 minutes.
//
//   base64url(header) "." base64url(payload) "." base64url(64-byte signature over the first two)
//   header:  {"alg":"EdDSA","kid":"<gateway key id>","typ":"JWT"}
//   payload: {"aud":"portcullis-agent","exp":<iat+900>,"iat":<now>,"iss":"<gateway key id>",
//             "jti":"<16 random bytes>","nbf":<iat>,"sub":"<device id>"}
//
// Verification checks the shape, alg == "EdDSA", the signature with the gateway key, aud, iss,
// exp > now and nbf <= now (+30 s) with the caller's clock. Whether the device is still active
// is the API's check (it needs the store).

#include <cstdint>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

#include "controlplane/api/crypto.h"

namespace portcullis::api {

inline constexpr std::int64_t kAccessTokenLifetimeS = 15 * 60;
inline constexpr std::string_view kAccessTokenAudience = "portcullis-agent";

struct AccessTokenClaims {
  std::string device_id;  // "sub"
  std::string token_id;   // "jti"
  std::int64_t issued_at = 0;
  std::int64_t expires_at = 0;
};

struct IssuedAccessToken {
  std::string token;
  AccessTokenClaims claims;
};

IssuedAccessToken issue_access_token(const SigningKey& key, const std::string& device_id,
                                     std::int64_t now,
                                     std::int64_t lifetime_s = kAccessTokenLifetimeS);

enum class TokenFailure {
  kMalformed,    // not three base64url parts of JSON objects, wrong types, missing claims
  kAlgorithm,    // alg other than EdDSA, or a "crit" header
  kSignature,    // not signed by this gateway's key (a foreign or altered token)
  kClaims,       // aud or iss not ours
  kExpired,      // exp <= now
  kNotYetValid,  // nbf (or iat) in the future
};
const char* token_failure_name(TokenFailure f);  // "malformed", "algorithm", …

tl::expected<AccessTokenClaims, TokenFailure> verify_access_token(const SigningKey& key,
                                                                  std::string_view token,
                                                                  std::int64_t now);

}  // namespace portcullis::api
