// The agent's wire formats against the gateway's own code: the request proof bytes (and a fixed
// vector), and orchestration documents signed by the gateway's sign_document.

#include "agent/agent_protocol.h"

#include <sodium.h>

#include <gtest/gtest.h>

#include "controlplane/api/agent_proof.h"
#include "controlplane/api/orchestration.h"

namespace portcullis::agent {
namespace {

using nlohmann::json;

SecretKey seed_of(std::uint8_t b) {
  KeyBytes k{};
  k.fill(b);
  return SecretKey(k);
}

class AgentProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }
};

// A fixed vector: the bytes are spelled out, so a change on either side shows here.
TEST_F(AgentProtocolTest, SigningBytesFixedVector) {
  json body = {{"hostname", "ws1"},
               {"agent_public_key", "AAAA"},
               {"inventory", {{"os", "Debian"}, {"b", 1}}},
               {"timestamp", 1700000000},
               {"nonce", "abcdefghijklmnop"},
               {"signature", "ignored"}};
  auto bytes = proof_signing_bytes("POST", "/api/agent/enroll/request", body);
  ASSERT_TRUE(bytes) << bytes.error().message();
  const std::string canonical =
      R"({"agent_public_key":"AAAA","hostname":"ws1","inventory":{"b":1,"os":"Debian"},)"
      R"("nonce":"abcdefghijklmnop","timestamp":1700000000})";
  EXPECT_EQ(*bytes,
            "portcullis-agent-v1\nPOST /api/agent/enroll/request\n1700000000\n"
            "abcdefghijklmnop\n" +
                sha256_hex(canonical));
  // The gateway computes the same bytes.
  auto gateway = api::proof_signing_bytes("POST", "/api/agent/enroll/request", body);
  ASSERT_TRUE(gateway);
  EXPECT_EQ(*bytes, *gateway);
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(AgentProtocolTest, SigningBytesMatchTheGatewayForUnicodeAndEscapes) {
  json body = {{"hostname", "h\xC3\xA9te\n\"q\"\x01"},
               {"enrollment_id", "e"},
               {"z", json::array({1, "two", nullptr, true})},
               {"timestamp", 5},
               {"nonce", "0123456789abcdef"}};
  auto a = proof_signing_bytes("POST", "/api/agent/enroll/poll", body);
  auto g = api::proof_signing_bytes("POST", "/api/agent/enroll/poll", body);
  ASSERT_TRUE(a && g);
  EXPECT_EQ(*a, *g);
}

TEST_F(AgentProtocolTest, SignedRequestPassesTheGatewayCheck) {
  auto id = AgentIdentity::from_seed(seed_of(7));
  json body = {{"enrollment_id", "enr-1"}};
  const std::int64_t now = 1700000000;
  ASSERT_TRUE(sign_request("POST", "/api/agent/enroll/poll", body, id, now, "nonce-nonce-nonce1"));
  api::ReplayCache replay(16);
  EXPECT_TRUE(api::verify_agent_proof("POST", "/api/agent/enroll/poll", body, id.public_key(), now,
                                      replay));
  // Same signature on another path: refused.
  api::ReplayCache replay2(16);
  auto other = api::verify_agent_proof("POST", "/api/agent/enroll/request", body, id.public_key(),
                                       now, replay2);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error(), api::ProofFailure::kSignature);
  // The gateway's own signer produces the same signature (Ed25519 is deterministic).
  json by_gateway = {{"enrollment_id", "enr-1"}};
  ASSERT_TRUE(api::sign_agent_request("POST", "/api/agent/enroll/poll", by_gateway,
                                      api::SigningKey::from_seed(seed_of(7)), now,
                                      "nonce-nonce-nonce1"));
  EXPECT_EQ(body, by_gateway);
}

TEST_F(AgentProtocolTest, SigningBytesRejections) {
  EXPECT_FALSE(proof_signing_bytes("POST", "/p", json::array()));
  EXPECT_FALSE(proof_signing_bytes("POST", "/p", {{"nonce", "0123456789abcdef"}}));
  EXPECT_FALSE(proof_signing_bytes("POST", "/p", {{"timestamp", 1}}));
  EXPECT_FALSE(proof_signing_bytes("POST", "/p",
                                   {{"timestamp", 1}, {"nonce", "0123456789abcdef"}, {"x", 1.5}}));
}

// ---- orchestration documents ----------------------------------------------------------------

class DocumentTest : public AgentProtocolTest {
 protected:
  api::OrchestrationDocument doc() const {
    api::OrchestrationDocument d;
    d.device_id = "dev-1";
    d.gateway_endpoint = "10.0.9.1:30000";
    d.gateway_wg_public_key = SecretKey::generate_private().public_key();
    d.address = *IpPrefix::parse("10.255.0.7/32");
    d.allowed_ips = {*IpPrefix::parse("10.255.0.1/32")};
    d.allowed_ports = {{filter::Protocol::kTcp, 5985}};
    d.issued_at = kNow - 10;
    d.expires_at = kNow + 3600;
    d.nonce = "nonce";
    return d;
  }
  json reply(const api::OrchestrationDocument& d, const api::SigningKey& key) const {
    auto s = api::sign_document(d, key);
    return {{"document", s.document}, {"signature", s.signature}};
  }
  // Signs arbitrary document text (for malformed documents the gateway would never produce).
  json reply_text(const std::string& text) const {
    return {{"document", text}, {"signature", gateway_.sign_base64(text)}};
  }

  static constexpr std::int64_t kNow = 1700000000;
  api::SigningKey gateway_ = api::SigningKey::from_seed(seed_of(1));
};

TEST_F(DocumentTest, AcceptsTheGatewaysDocument) {
  auto d = doc();
  auto r = verify_document(reply(d, gateway_), gateway_.public_key(), "dev-1", kNow);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->device_id, "dev-1");
  EXPECT_EQ(r->address.to_string(), "10.255.0.7/32");
  EXPECT_EQ(r->gateway_address.to_string(), "10.255.0.1/32");
  EXPECT_EQ(r->gateway_wg_public_key, d.gateway_wg_public_key);
  EXPECT_EQ(r->gateway_endpoint, "10.0.9.1:30000");
  EXPECT_EQ(r->persistent_keepalive, 30);
  ASSERT_EQ(r->allowed_ports.size(), 1u);
  EXPECT_EQ(r->allowed_ports[0].port, 5985);
  EXPECT_EQ(r->expires_at, kNow + 3600);
}

TEST_F(DocumentTest, RefusesAnotherSigner) {
  auto other = api::SigningKey::from_seed(seed_of(2));
  auto r = verify_document(reply(doc(), other), gateway_.public_key(), "dev-1", kNow);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EBADMSG);
}

TEST_F(DocumentTest, RefusesAChangedByte) {
  json rep = reply(doc(), gateway_);
  std::string text = rep["document"];
  auto at = text.find("10.255.0.7");
  text[at + 9] = '8';  // 10.255.0.8: someone else's address
  rep["document"] = text;
  auto r = verify_document(rep, gateway_.public_key(), "dev-1", kNow);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EBADMSG);
}

TEST_F(DocumentTest, RefusesABadSignatureEncoding) {
  json rep = reply(doc(), gateway_);
  rep["signature"] = "not base64!";
  auto r = verify_document(rep, gateway_.public_key(), "dev-1", kNow);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EBADMSG);
}

TEST_F(DocumentTest, RefusesAnExpiredDocument) {
  auto d = doc();
  d.expires_at = kNow - 1;
  auto r = verify_document(reply(d, gateway_), gateway_.public_key(), "dev-1", kNow);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EKEYEXPIRED);
  // Exactly at expiry: expired.
  d.expires_at = kNow;
  EXPECT_FALSE(verify_document(reply(d, gateway_), gateway_.public_key(), "dev-1", kNow));
}

TEST_F(DocumentTest, RefusesAnotherDevicesDocument) {
  auto d = doc();
  d.device_id = "dev-2";
  auto r = verify_document(reply(d, gateway_), gateway_.public_key(), "dev-1", kNow);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EACCES);
}

TEST_F(DocumentTest, RefusesMoreThanTheGatewayRoute) {
  auto d = doc();
  d.allowed_ips = {*IpPrefix::parse("10.255.0.1/32"), *IpPrefix::parse("0.0.0.0/0")};
  auto r = verify_document(reply(d, gateway_), gateway_.public_key(), "dev-1", kNow);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EPROTO);
  EXPECT_NE(r.error().message().find("allowed_ips"), std::string::npos);
  d.allowed_ips = {*IpPrefix::parse("10.0.0.0/8")};
  EXPECT_FALSE(verify_document(reply(d, gateway_), gateway_.public_key(), "dev-1", kNow));
  d = doc();
  d.address = *IpPrefix::parse("10.255.0.0/16");
  EXPECT_FALSE(verify_document(reply(d, gateway_), gateway_.public_key(), "dev-1", kNow));
}

TEST_F(DocumentTest, RefusesMalformedSignedDocuments) {
  const std::vector<std::string> bad = {
      "not json",
      "[]",
      R"({"version":2})",
      R"({"version":1,"device_id":"dev-1"})",
  };
  for (const auto& text : bad) {
    auto r = verify_document(reply_text(text), gateway_.public_key(), "dev-1", kNow);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().errno_value(), EPROTO) << text;
  }
  EXPECT_FALSE(verify_document(json::object(), gateway_.public_key(), "dev-1", kNow));
  EXPECT_FALSE(
      verify_document({{"document", 1}, {"signature", "x"}}, gateway_.public_key(), "dev-1", kNow));
}

TEST_F(AgentProtocolTest, ResolvesEndpoints) {
  auto a = resolve_endpoint("10.0.9.1:30000");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->to_string(), "10.0.9.1:30000");
  auto b = resolve_endpoint("[2001:db8::1]:30000");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->port(), 30000);
  auto c = resolve_endpoint("localhost:30000");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->port(), 30000);
  EXPECT_FALSE(resolve_endpoint("10.0.9.1"));
  EXPECT_FALSE(resolve_endpoint("10.0.9.1:0"));
  EXPECT_FALSE(resolve_endpoint("10.0.9.1:70000"));
  auto d = resolve_endpoint("no-such-host.invalid:30000");
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().errno_value(), EHOSTUNREACH);
}

}  // namespace
}  // namespace portcullis::agent
