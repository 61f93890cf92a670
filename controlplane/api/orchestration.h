#pragma once
// The orchestration document: what an agent needs to bring up its side of the tunnel, signed with
// the gateway's Ed25519 key. vpn/ensure answers
//
//   {"document": "<the document's JSON text>", "signature": "<base64 Ed25519 signature>"}
//
// The document travels as a string so that the agent verifies the exact bytes that were signed
// (crypto_sign_verify_detached over the UTF-8 bytes of "document", with the gateway key pinned at
// enrollment), and only then parses them. The text (keys sorted, no whitespace):
//
//   {"address":"10.255.0.7/32","allowed_ips":["10.255.0.1/32"],
//    "allowed_ports":[{"port":5985,"protocol":"tcp"},…],"device_id":"…",
//    "expires_at":…,"gateway_endpoint":"gw.example:30000","gateway_port":30000,
//    "gateway_wg_public_key":"…=","issued_at":…,"nonce":"…","persistent_keepalive":30,"version":1}
//
// address is the agent's interface address; allowed_ips is what the agent routes into the
// tunnel: the gateway's /32 only. The agent refuses a document past expires_at.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "controlplane/api/crypto.h"
#include "controlplane/state/store.h"
#include "dataplane/base/ip.h"
#include "dataplane/base/key.h"

namespace portcullis::api {

inline constexpr int kOrchestrationVersion = 1;

struct OrchestrationDocument {
  std::string device_id;
  std::string gateway_endpoint;  // "host:port" as agents should dial it
  std::uint16_t gateway_port = 30000;
  Key gateway_wg_public_key;
  IpPrefix address;                   // the agent's /32
  std::vector<IpPrefix> allowed_ips;  // the gateway's /32
  int persistent_keepalive_s = 30;
  std::vector<state::PortRule> allowed_ports;
  std::int64_t issued_at = 0;
  std::int64_t expires_at = 0;
  std::string nonce;
};

std::string serialize_document(const OrchestrationDocument& doc);

struct SignedDocument {
  std::string document;   // JSON text
  std::string signature;  // base64
};

SignedDocument sign_document(const OrchestrationDocument& doc, const SigningKey& key);

// The WireGuard endpoint when none is configured: the host the agent used to reach this API (it
// reached us there, so it can reach UDP on the same host), with the WireGuard port.
// "gw.example:8443" -> "gw.example:30000", "[2001:db8::1]:8443" -> "[2001:db8::1]:30000";
// "" for an empty or malformed Host header.
std::string endpoint_from_host(std::string_view host_header, std::uint16_t port);

}  // namespace portcullis::api
