#include "controlplane/api/access_token.h"

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

namespace portcullis::api {
namespace {

using nlohmann::json;

constexpr std::int64_t kNow = 1'700'000'000;

std::span<const std::uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// A token built by hand from header and payload, signed with `key`.
std::string forge(const SigningKey& key, const json& header, const json& payload) {
  std::string input =
      base64url_encode(bytes(header.dump())) + "." + base64url_encode(bytes(payload.dump()));
  return input + "." + base64url_encode(key.sign(input));
}

json good_payload(const SigningKey& key) {
  return {{"iss", key.key_id()}, {"sub", "dev1"}, {"aud", "portcullis-agent"},
          {"iat", kNow},         {"nbf", kNow},   {"exp", kNow + 900},
          {"jti", "j"}};
}

const json kHeader = {{"alg", "EdDSA"}, {"typ", "JWT"}};

TEST(AccessToken, IssuedTokenVerifiesAndCarriesItsClaims) {
  SigningKey key = SigningKey::generate();
  IssuedAccessToken t = issue_access_token(key, "dev-7", kNow);
  EXPECT_EQ(t.claims.expires_at, kNow + 900);
  EXPECT_EQ(std::count(t.token.begin(), t.token.end(), '.'), 2);
  auto claims = verify_access_token(key, t.token, kNow + 10);
  ASSERT_TRUE(claims) << token_failure_name(claims.error());
  EXPECT_EQ(claims->device_id, "dev-7");
  EXPECT_EQ(claims->token_id, t.claims.token_id);
  EXPECT_EQ(claims->issued_at, kNow);
  EXPECT_EQ(claims->expires_at, kNow + 900);

  // The header is what RFC 8037 asks for.
  auto header = json::parse(base64url_decode(t.token.substr(0, t.token.find('.'))).value());
  EXPECT_EQ(header["alg"], "EdDSA");
  EXPECT_EQ(header["kid"], key.key_id());
}

TEST(AccessToken, ExpiresAfterFifteenMinutes) {
  SigningKey key = SigningKey::generate();
  IssuedAccessToken t = issue_access_token(key, "dev", kNow);
  EXPECT_TRUE(verify_access_token(key, t.token, kNow + 899));
  EXPECT_EQ(verify_access_token(key, t.token, kNow + 900).error(), TokenFailure::kExpired);
}

TEST(AccessToken, NotYetValid) {
  SigningKey key = SigningKey::generate();
  IssuedAccessToken t = issue_access_token(key, "dev", kNow + 100);
  EXPECT_EQ(verify_access_token(key, t.token, kNow).error(), TokenFailure::kNotYetValid);
  EXPECT_TRUE(verify_access_token(key, t.token, kNow + 70));  // 30 s leeway
}

TEST(AccessToken, ForeignAndAlteredTokensFailTheSignature) {
  SigningKey key = SigningKey::generate();
  SigningKey foreign = SigningKey::generate();
  IssuedAccessToken t = issue_access_token(foreign, "dev", kNow);
  EXPECT_EQ(verify_access_token(key, t.token, kNow).error(), TokenFailure::kSignature);

  // Same signature, payload naming another device.
  IssuedAccessToken mine = issue_access_token(key, "dev", kNow);
  const auto dot1 = mine.token.find('.');
  const auto dot2 = mine.token.find('.', dot1 + 1);
  json payload = good_payload(key);
  payload["sub"] = "someone-else";
  std::string altered = mine.token.substr(0, dot1) + "." + base64url_encode(bytes(payload.dump())) +
                        mine.token.substr(dot2);
  EXPECT_EQ(verify_access_token(key, altered, kNow).error(), TokenFailure::kSignature);
}

TEST(AccessToken, AlgorithmMustBeEdDsa) {
  SigningKey key = SigningKey::generate();
  EXPECT_EQ(
      verify_access_token(key, forge(key, {{"alg", "none"}}, good_payload(key)), kNow).error(),
      TokenFailure::kAlgorithm);
  EXPECT_EQ(
      verify_access_token(key, forge(key, {{"alg", "HS256"}}, good_payload(key)), kNow).error(),
      TokenFailure::kAlgorithm);
  json crit = kHeader;
  crit["crit"] = json::array({"exp"});
  EXPECT_EQ(verify_access_token(key, forge(key, crit, good_payload(key)), kNow).error(),
            TokenFailure::kAlgorithm);
  // alg "none" with an empty signature part.
  std::string none = base64url_encode(bytes(R"({"alg":"none"})")) + "." +
                     base64url_encode(bytes(good_payload(key).dump())) + ".";
  EXPECT_EQ(verify_access_token(key, none, kNow).error(), TokenFailure::kAlgorithm);
}

TEST(AccessToken, ClaimsAreChecked) {
  SigningKey key = SigningKey::generate();
  EXPECT_TRUE(verify_access_token(key, forge(key, kHeader, good_payload(key)), kNow));
  json aud = good_payload(key);
  aud["aud"] = "someone-else";
  EXPECT_EQ(verify_access_token(key, forge(key, kHeader, aud), kNow).error(),
            TokenFailure::kClaims);
  json iss = good_payload(key);
  iss["iss"] = "other-gateway";
  EXPECT_EQ(verify_access_token(key, forge(key, kHeader, iss), kNow).error(),
            TokenFailure::kClaims);
  for (const char* claim : {"sub", "exp", "iat", "jti", "aud"}) {
    json missing = good_payload(key);
    missing.erase(claim);
    EXPECT_EQ(verify_access_token(key, forge(key, kHeader, missing), kNow).error(),
              TokenFailure::kMalformed)
        << claim;
  }
  json wrong_type = good_payload(key);
  wrong_type["exp"] = "tomorrow";
  EXPECT_EQ(verify_access_token(key, forge(key, kHeader, wrong_type), kNow).error(),
            TokenFailure::kMalformed);
}

TEST(AccessToken, MalformedShapes) {
  SigningKey key = SigningKey::generate();
  IssuedAccessToken t = issue_access_token(key, "dev", kNow);
  for (std::string bad :
       {std::string(""), std::string("a.b"), std::string("a.b.c.d"), std::string("!!.!!.!!"),
        t.token + "=", t.token + ".x", std::string(4096, 'a')}) {
    auto r = verify_access_token(key, bad, kNow);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error(), TokenFailure::kMalformed) << bad;
  }
}

}  // namespace
}  // namespace portcullis::api
