#include "controlplane/api/agent_proof.h"

#include <gtest/gtest.h>

namespace portcullis::api {
namespace {

using nlohmann::json;

constexpr std::int64_t kNow = 1'700'000'000;
constexpr std::string_view kPath = "/api/agent/enroll/request";
const std::string kNonce = "AAAAAAAAAAAAAAAAAAAAAA";

json signed_body(const SigningKey& agent, std::int64_t ts = kNow,
                 const std::string& nonce = kNonce) {
  json body = {{"hostname", "host-1"}, {"inventory", {{"os", "windows"}, {"cpu", 4}}}};
  EXPECT_TRUE(sign_agent_request("POST", kPath, body, agent, ts, nonce));
  return body;
}

TEST(AgentProof, CanonicalBytesAreExactlyAsDocumented) {
  json body = {{"hostname", "h\n1"},
               {"b", {{"z", 1}, {"a", "é"}}},
               {"timestamp", kNow},
               {"nonce", kNonce},
               {"signature", "ignored"}};
  auto bytes = proof_signing_bytes("POST", kPath, body);
  ASSERT_TRUE(bytes) << bytes.error().message;
  const std::string canonical = "{\"b\":{\"a\":\"é\",\"z\":1},\"hostname\":\"h\\n1\",\"nonce\":\"" +
                                kNonce + "\",\"timestamp\":1700000000}";
  EXPECT_EQ(*bytes, "portcullis-agent-v1\nPOST /api/agent/enroll/request\n1700000000\n" + kNonce +
                        "\n" + hex(sha256(canonical)));
}

TEST(AgentProof, TheSignatureIsLeftOutAndFloatsAreRefused) {
  json body = {{"timestamp", kNow}, {"nonce", kNonce}};
  json with_sig = body;
  with_sig["signature"] = "x";
  EXPECT_EQ(proof_signing_bytes("POST", kPath, body).value(),
            proof_signing_bytes("POST", kPath, with_sig).value());
  body["x"] = 1.5;
  EXPECT_FALSE(proof_signing_bytes("POST", kPath, body));
  EXPECT_FALSE(proof_signing_bytes("POST", kPath, {{"nonce", kNonce}}));
  EXPECT_FALSE(proof_signing_bytes("POST", kPath, {{"timestamp", kNow}, {"nonce", "short"}}));
  EXPECT_FALSE(proof_signing_bytes("POST", kPath, {{"timestamp", kNow}, {"nonce", kNonce + "+"}}));
}

TEST(AgentProof, ValidProofPassesOnce) {
  SigningKey agent = SigningKey::generate();
  ReplayCache cache(100);
  json body = signed_body(agent);
  EXPECT_TRUE(verify_agent_proof("POST", kPath, body, agent.public_key(), kNow, cache));
  auto again = verify_agent_proof("POST", kPath, body, agent.public_key(), kNow + 1, cache);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), ProofFailure::kReplayed);
  // Another agent may use the same nonce.
  SigningKey other = SigningKey::generate();
  EXPECT_TRUE(
      verify_agent_proof("POST", kPath, signed_body(other), other.public_key(), kNow, cache));
}

TEST(AgentProof, EveryFieldIsCovered) {
  SigningKey agent = SigningKey::generate();
  const json body = signed_body(agent);
  auto expect_bad = [&](json changed, const char* what) {
    ReplayCache cache(100);
    auto r = verify_agent_proof("POST", kPath, changed, agent.public_key(), kNow, cache);
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error(), ProofFailure::kSignature) << what;
  };
  json c = body;
  c["hostname"] = "host-2";
  expect_bad(c, "hostname");
  c = body;
  c["inventory"]["cpu"] = 5;
  expect_bad(c, "nested inventory");
  c = body;
  c["timestamp"] = kNow + 1;
  expect_bad(c, "timestamp");
  c = body;
  c["nonce"] = "BBBBBBBBBBBBBBBBBBBBBB";
  expect_bad(c, "nonce");
  c = body;
  c["added"] = true;
  expect_bad(c, "an added field");
  c = body;
  c.erase("inventory");
  expect_bad(c, "a removed field");
  // Path binding: the same body at another endpoint.
  ReplayCache cache(100);
  EXPECT_EQ(
      verify_agent_proof("POST", "/api/agent/enroll/poll", body, agent.public_key(), kNow, cache)
          .error(),
      ProofFailure::kSignature);
  // Another key.
  EXPECT_EQ(
      verify_agent_proof("POST", kPath, body, SigningKey::generate().public_key(), kNow, cache)
          .error(),
      ProofFailure::kSignature);
}

TEST(AgentProof, TimestampWindowIsThreeHundredSeconds) {
  SigningKey agent = SigningKey::generate();
  ReplayCache cache(100);
  EXPECT_TRUE(verify_agent_proof("POST", kPath, signed_body(agent, kNow - 300), agent.public_key(),
                                 kNow, cache));
  EXPECT_TRUE(verify_agent_proof("POST", kPath,
                                 signed_body(agent, kNow + 300, "CCCCCCCCCCCCCCCCCCCCCC"),
                                 agent.public_key(), kNow, cache));
  EXPECT_EQ(
      verify_agent_proof("POST", kPath, signed_body(agent, kNow - 301, "DDDDDDDDDDDDDDDDDDDDDD"),
                         agent.public_key(), kNow, cache)
          .error(),
      ProofFailure::kStale);
  EXPECT_EQ(
      verify_agent_proof("POST", kPath, signed_body(agent, kNow + 301, "EEEEEEEEEEEEEEEEEEEEEE"),
                         agent.public_key(), kNow, cache)
          .error(),
      ProofFailure::kStale);
}

TEST(AgentProof, MalformedSignature) {
  SigningKey agent = SigningKey::generate();
  ReplayCache cache(100);
  json body = signed_body(agent);
  body["signature"] = std::string(88, '-');
  EXPECT_EQ(verify_agent_proof("POST", kPath, body, agent.public_key(), kNow, cache).error(),
            ProofFailure::kMalformed);
  body.erase("signature");
  EXPECT_EQ(verify_agent_proof("POST", kPath, body, agent.public_key(), kNow, cache).error(),
            ProofFailure::kMalformed);
}

TEST(ReplayCache, IsBoundedAndForgetsExpiredNonces) {
  SigningKey agent = SigningKey::generate();
  ReplayCache cache(2);
  bool busy = false;
  EXPECT_TRUE(cache.insert(agent.public_key(), "n1", kNow + 300, kNow, &busy));
  EXPECT_TRUE(cache.insert(agent.public_key(), "n2", kNow + 10, kNow, &busy));
  // Full of live entries: refused rather than forgetting one.
  EXPECT_FALSE(cache.insert(agent.public_key(), "n3", kNow + 300, kNow, &busy));
  EXPECT_TRUE(busy);
  // n2 expired by now+11: room again, and n1 still remembered.
  EXPECT_TRUE(cache.insert(agent.public_key(), "n3", kNow + 311, kNow + 11, &busy));
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_FALSE(cache.insert(agent.public_key(), "n1", kNow + 300, kNow + 11, &busy));
  EXPECT_FALSE(busy);
}

}  // namespace
}  // namespace portcullis::api
