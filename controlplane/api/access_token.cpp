#include "controlplane/api/access_token.h"

#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

namespace portcullis::api {
namespace {

using nlohmann::json;

constexpr std::int64_t kNotBeforeLeewayS = 30;
constexpr std::size_t kMaxTokenLen = 2048;

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// A JSON object from one base64url part, or a discarded value.
json decode_part(std::string_view part) {
  auto raw = base64url_decode(part);
  if (!raw) return json(json::value_t::discarded);
  json j = json::parse(*raw, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return json(json::value_t::discarded);
  return j;
}

}  // namespace

const char* token_failure_name(TokenFailure f) {
  switch (f) {
    case TokenFailure::kMalformed:
      return "malformed";
    case TokenFailure::kAlgorithm:
      return "algorithm";
    case TokenFailure::kSignature:
      return "signature";
    case TokenFailure::kClaims:
      return "claims";
    case TokenFailure::kExpired:
      return "expired";
    case TokenFailure::kNotYetValid:
      return "not_yet_valid";
  }
  return "unknown";
}

IssuedAccessToken issue_access_token(const SigningKey& key, const std::string& device_id,
                                     std::int64_t now, std::int64_t lifetime_s) {
  IssuedAccessToken out;
  out.claims = {.device_id = device_id,
                .token_id = random_base64url(16),
                .issued_at = now,
                .expires_at = now + lifetime_s};
  // nlohmann's object keeps keys sorted, so the text is stable.
  const json header = {{"alg", "EdDSA"}, {"typ", "JWT"}, {"kid", key.key_id()}};
  const json payload = {{"iss", key.key_id()},
                        {"sub", device_id},
                        {"aud", kAccessTokenAudience},
                        {"iat", now},
                        {"nbf", now},
                        {"exp", out.claims.expires_at},
                        {"jti", out.claims.token_id}};
  std::string signing_input =
      base64url_encode(as_bytes(header.dump())) + "." + base64url_encode(as_bytes(payload.dump()));
  Signature sig = key.sign(signing_input);
  out.token = signing_input + "." + base64url_encode(sig);
  return out;
}

tl::expected<AccessTokenClaims, TokenFailure> verify_access_token(const SigningKey& key,
                                                                  std::string_view token,
                                                                  std::int64_t now) {
  using tl::unexpected;
  if (token.size() > kMaxTokenLen) return unexpected(TokenFailure::kMalformed);
  const auto dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return unexpected(TokenFailure::kMalformed);
  const auto dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return unexpected(TokenFailure::kMalformed);
  }
  const json header = decode_part(token.substr(0, dot1));
  if (header.is_discarded()) return unexpected(TokenFailure::kMalformed);
  const auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string() || alg->get<std::string>() != "EdDSA" ||
      header.contains("crit")) {
    return unexpected(TokenFailure::kAlgorithm);
  }
  auto sig_raw = base64url_decode(token.substr(dot2 + 1));
  if (!sig_raw || sig_raw->size() != kSignatureLen) return unexpected(TokenFailure::kMalformed);
  Signature sig;
  std::copy(sig_raw->begin(), sig_raw->end(), sig.begin());
  if (!ed25519_verify(key.public_key(), token.substr(0, dot2), sig)) {
    return unexpected(TokenFailure::kSignature);
  }

  // Signed by us: the payload is ours, but still read it defensively.
  const json payload = decode_part(token.substr(dot1 + 1, dot2 - dot1 - 1));
  if (payload.is_discarded()) return unexpected(TokenFailure::kMalformed);
  auto str = [&](const char* name) -> const std::string* {
    auto it = payload.find(name);
    return it != payload.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
  };
  auto num = [&](const char* name) -> std::optional<std::int64_t> {
    auto it = payload.find(name);
    if (it == payload.end()) return std::nullopt;
    if (it->is_number_unsigned()) {
      auto v = it->get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
      return static_cast<std::int64_t>(v);
    }
    if (it->is_number_integer()) return it->get<std::int64_t>();
    return std::nullopt;
  };
  const std::string* sub = str("sub");
  const std::string* jti = str("jti");
  const std::string* aud = str("aud");
  const std::string* iss = str("iss");
  const std::optional<std::int64_t> iat = num("iat");
  const std::optional<std::int64_t> exp = num("exp");
  if (!sub || sub->empty() || !jti || !aud || !iss || !iat || !exp) {
    return unexpected(TokenFailure::kMalformed);
  }
  if (*aud != kAccessTokenAudience || *iss != key.key_id()) {
    return unexpected(TokenFailure::kClaims);
  }
  if (*exp <= now) return unexpected(TokenFailure::kExpired);
  const std::optional<std::int64_t> nbf = num("nbf");
  if (*iat > now + kNotBeforeLeewayS || (nbf && *nbf > now + kNotBeforeLeewayS)) {
    return unexpected(TokenFailure::kNotYetValid);
  }
  return AccessTokenClaims{
      .device_id = *sub, .token_id = *jti, .issued_at = *iat, .expires_at = *exp};
}

}  // namespace portcullis::api
