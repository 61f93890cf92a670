#include "controlplane/api/orchestration.h"

#include <gtest/gtest.h>

namespace portcullis::api {
namespace {

OrchestrationDocument sample(const Key& wg) {
  OrchestrationDocument doc;
  doc.device_id = "dev7";
  doc.gateway_endpoint = "gw.example:30000";
  doc.gateway_wg_public_key = wg;
  doc.address = IpPrefix::parse("10.255.0.7/32").value();
  doc.allowed_ips = {IpPrefix::parse("10.255.0.1/32").value()};
  doc.allowed_ports = {{filter::Protocol::kTcp, 5985}, {filter::Protocol::kUdp, 3478}};
  doc.issued_at = 100;
  doc.expires_at = 200;
  doc.nonce = "n";
  return doc;
}

TEST(Orchestration, TextIsStableAndComplete) {
  const Key wg(KeyBytes{1});
  EXPECT_EQ(serialize_document(sample(wg)),
            R"({"address":"10.255.0.7/32","allowed_ips":["10.255.0.1/32"],)"
            R"("allowed_ports":[{"port":5985,"protocol":"tcp"},{"port":3478,"protocol":"udp"}],)"
            R"("device_id":"dev7","expires_at":200,"gateway_endpoint":"gw.example:30000",)"
            R"("gateway_port":30000,"gateway_wg_public_key":")" +
                wg.to_base64() +
                R"(","issued_at":100,"nonce":"n","persistent_keepalive":30,"version":1})");
}

TEST(Orchestration, SignatureCoversTheExactBytes) {
  SigningKey key = SigningKey::generate();
  SignedDocument s = sign_document(sample(Key(KeyBytes{2})), key);
  auto sig = decode_signature(s.signature);
  ASSERT_TRUE(sig);
  EXPECT_TRUE(ed25519_verify(key.public_key(), s.document, *sig));
  std::string tampered = s.document;
  tampered.replace(tampered.find("10.255.0.7"), 10, "10.255.0.8");
  EXPECT_FALSE(ed25519_verify(key.public_key(), tampered, *sig));
  // Re-serializing (e.g. with spaces) changes the bytes: agents verify the string as received.
  EXPECT_FALSE(ed25519_verify(key.public_key(), s.document + " ", *sig));
}

TEST(EndpointFromHost, KeepsTheHostAndUsesTheWireguardPort) {
  EXPECT_EQ(endpoint_from_host("gw.example:8443", 30000), "gw.example:30000");
  EXPECT_EQ(endpoint_from_host("gw.example", 30000), "gw.example:30000");
  EXPECT_EQ(endpoint_from_host("192.0.2.1:8443", 30000), "192.0.2.1:30000");
  EXPECT_EQ(endpoint_from_host("[2001:db8::1]:8443", 30000), "[2001:db8::1]:30000");
  EXPECT_EQ(endpoint_from_host("[2001:db8::1", 30000), "");
  EXPECT_EQ(endpoint_from_host("", 30000), "");
}

}  // namespace
}  // namespace portcullis::api
