#pragma once
// The agent's side of the gateway's wire formats (controlplane/api/agent_proof.h and
// orchestration.h are the gateway's side; agent/ does not link controlplane/).
//
// Request proof: enroll/request and enroll/poll carry "timestamp", "nonce" and "signature"; the
// signature is Ed25519 over exactly
//   "portcullis-agent-v1\n" <method> " " <path> "\n" <timestamp> "\n" <nonce> "\n"
//   <hex SHA-256 of the body without "signature", members sorted, no whitespace>
//
// Orchestration document: vpn/ensure answers {"document": "<JSON text>", "signature": "<b64>"};
// the signature covers the exact bytes of "document" and is checked with the gateway signing key
// pinned at enrollment before those bytes are parsed.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/identity.h"
#include "dataplane/base/ip.h"
#include "dataplane/base/key.h"
#include "dataplane/base/result.h"

namespace portcullis::agent {

inline constexpr std::string_view kProofDomain = "portcullis-agent-v1";

// The bytes to sign for `body` (its "signature" member, if any, is left out). EINVAL when body is
// not an object, timestamp is not an integer, nonce is not a string, or the body has a float.
Result<std::string> proof_signing_bytes(std::string_view method, std::string_view path,
                                        const nlohmann::json& body);

// Adds timestamp, nonce and signature to `body`.
Status sign_request(std::string_view method, std::string_view path, nlohmann::json& body,
                    const AgentIdentity& identity, std::int64_t timestamp,
                    const std::string& nonce);

struct PortRule {
  std::uint16_t port = 0;
  std::string protocol;  // "tcp" | "udp"
};

// A verified orchestration document.
struct TunnelDocument {
  std::string device_id;
  std::string gateway_endpoint;  // "host:port" (host may be a name: resolved by the caller)
  Key gateway_wg_public_key;
  IpPrefix address;          // the agent's /32
  IpPrefix gateway_address;  // the gateway's /32: the only allowed IP and the only route
  std::uint16_t persistent_keepalive = 30;
  std::vector<PortRule> allowed_ports;
  std::int64_t issued_at = 0;
  std::int64_t expires_at = 0;
};

// Checks, in this order, and applies nothing: the reply's shape; the signature over the exact
// document bytes with `gateway_signing_key` (EBADMSG); the document's fields (EPROTO, naming the
// field; allowed_ips must be exactly one IPv4 /32 and address an IPv4 /32); the device id is
// ours (EACCES); not expired (EKEYEXPIRED).
Result<TunnelDocument> verify_document(const nlohmann::json& ensure_reply,
                                       const Key& gateway_signing_key, const std::string& device_id,
                                       std::int64_t now);

// "host:port" / "[v6]:port" -> an endpoint; names resolved with getaddrinfo (IPv4 preferred).
Result<Endpoint> resolve_endpoint(const std::string& host_port);

}  // namespace portcullis::agent
