#pragma once
// The agent API of portcullisd. JSON in and out; every body is checked against a field table
// (json_input.h): unknown fields, wrong types, missing or oversize values are refused with 400.
//
//   POST /api/agent/enroll/request  signed (agent_proof.h)
//        {hostname, agent_public_key, wg_public_key, enrollment_code?, inventory?,
//         timestamp, nonce, signature}                        -> {enrollment_id, status}
//        Idempotent per agent key (a repeat returns the same enrollment). A valid, unused,
//        unexpired code approves at once; otherwise the request waits for an operator.
//   POST /api/agent/enroll/poll     signed by the same agent key
//        {enrollment_id, timestamp, nonce, signature}         -> {status: pending|denied}
//        or {status: approved, device_id, access_token, access_expires_at, refresh_token,
//            refresh_expires_at, token_type: "Bearer", gateway_signing_key}
//        Every approved poll issues a fresh token pair and revokes all earlier refresh tokens of
//        the device, so an agent that lost a reply recovers by polling again; its Ed25519 key,
//        not a token, is the root of its identity.
//   POST /api/agent/token/refresh   {refresh_token}           -> a new pair, as above
//        Refresh tokens rotate on every use. The device's refresh tokens form one family: a used
//        token presented again revokes the family (the agent must poll the enrollment again).
//   POST /api/agent/heartbeat       Bearer {handshake_age_s?, rx_bytes?, tx_bytes?} -> {ok}
//   POST /api/agent/details         Bearer {inventory}        -> {ok}
//   POST /api/agent/vpn/ensure      Bearer {}                 -> {document, signature}
//        (orchestration.h). Idempotent: allocates the /32 once; later calls change nothing.
//   POST /api/agent/vpn/ready       Bearer {}                 -> {ready: true} once the device's
//        last change is applied to the kernel (waits up to ready_timeout)
//
// Errors: {"error": code, "message": what to do, "field": name (400 only)}
//   400 invalid_request        bad JSON, unknown field, wrong type, missing field, oversize value
//   401 bad_signature          proof of possession failed (signature over the canonical bytes)
//   401 stale_request          timestamp outside ±300 s of the gateway clock
//   401 replayed_request       nonce already used by this agent key within the window
//   401 missing_token          no "Authorization: Bearer …"
//   401 invalid_token          malformed, foreign, altered, revoked or unknown token
//   401 token_expired          access or refresh token past its expiry: refresh, or poll again
//   401 refresh_token_reused   a used refresh token: the family is revoked; poll the enrollment
//   403 device_revoked         every Bearer endpoint and refresh, for a revoked device
//   403 enrollment_refused     the agent key was denied or its device revoked: use a new key
//   404 not_found              unknown enrollment id, or an unknown path below /api/agent/
//   409 conflict               the WireGuard key belongs to another enrollment
//   409 not_ensured            vpn/ready before vpn/ensure
//   413 (from the HTTP layer)  body over the server's limit
//   429 busy                   replay cache full of live nonces
//   503 not_applied            vpn/ready: not applied within the timeout; retry
//   503 pool_exhausted         no free tunnel address
//   500 internal_error         store failure (logged; never detailed to the client)

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "controlplane/api/access_token.h"
#include "controlplane/api/agent_proof.h"
#include "controlplane/api/crypto.h"
#include "controlplane/http/https_server.h"
#include "controlplane/state/store.h"
#include "dataplane/base/ip.h"
#include "dataplane/base/key.h"

namespace portcullis::api {

// What the API needs from the reconciler.
class ApplyWaiter {
 public:
  virtual ~ApplyWaiter() = default;
  // Asks for a reconcile pass soon (merged with others; never blocks).
  virtual void wake() = 0;
  // True once the store's applied generation is >= generation; false after timeout.
  virtual bool wait_applied(std::int64_t generation, std::chrono::milliseconds timeout) = 0;
};

using UnixClock = std::function<std::int64_t()>;  // Unix seconds

// Called once per request after its answer is built: the route (the registered path, never the
// raw request path), the status, and the time spent in the handler.
using RequestObserver =
    std::function<void(std::string_view route, int status, std::chrono::nanoseconds elapsed)>;

inline constexpr std::int64_t kRefreshTokenLifetimeS = 30 * 24 * 3600;
inline constexpr std::size_t kMaxInventoryBytes = 16 * 1024;  // serialized JSON

struct AgentApiConfig {
  std::string gateway_endpoint;  // "host:port" agents dial, e.g. "gw.example.net:30000"
  std::uint16_t gateway_port = 30000;
  Key gateway_wg_public_key;
  IpPrefix pool;                               // 10.255.0.0/16
  IpAddress gateway_address;                   // 10.255.0.1
  std::vector<state::PortRule> default_ports;  // given to a device at approval by code
  int persistent_keepalive_s = 30;
  std::int64_t document_lifetime_s = 24 * 3600;
  std::chrono::milliseconds ready_timeout{5000};
  std::size_t replay_cache_capacity = 65536;
};

class AgentApi {
 public:
  // The references must outlive the AgentApi and the server its routes are given to.
  AgentApi(AgentApiConfig config, state::Store& store, ApplyWaiter& waiter,
           const SigningKey& signing_key, UnixClock clock, RequestObserver observer = {});

  // The routes to pass to http::HttpsServer::start. Paths are matched exactly.
  std::vector<http::Route> routes();

  http::Response enroll_request(const http::Request& request);
  http::Response enroll_poll(const http::Request& request);
  http::Response token_refresh(const http::Request& request);
  http::Response heartbeat(const http::Request& request);
  http::Response details(const http::Request& request);
  http::Response vpn_ensure(const http::Request& request);
  http::Response vpn_ready(const http::Request& request);

 private:
  // The active device named by the request's access token, or the error answer.
  tl::expected<state::Device, http::Response> authenticate(const http::Request& request);
  http::Response refused_revoked(const state::Device& device, const http::Request& request,
                                 std::string_view what);
  // A fresh refresh token and signed access token for a device, made before taking the store
  // (the Ed25519 signature need not hold it up); handed out only once stored.
  struct NewTokens {
    std::string refresh;  // base64url of 32 random bytes
    Sha256 refresh_hash;
    std::int64_t refresh_expires_at = 0;
    IssuedAccessToken access;
  };
  NewTokens new_tokens(const std::string& device_id, std::int64_t now);
  // Stores the refresh token in `family_id`; the JSON answer, or the error answer.
  tl::expected<nlohmann::json, http::Response> store_tokens(const NewTokens& tokens,
                                                            const std::string& device_id,
                                                            const std::string& family_id);
  void audit(std::string actor, std::string action, std::string target, std::string detail,
             const http::Request& request);

  AgentApiConfig config_;
  state::Store& store_;
  ApplyWaiter& waiter_;
  const SigningKey& signing_key_;
  UnixClock clock_;
  RequestObserver observer_;
  ReplayCache replay_;
  // Serializes refresh: find, check used, mark used and issue are separate store calls, and two
  // concurrent presentations of one token must not both succeed.
  std::mutex refresh_mutex_;
};

}  // namespace portcullis::api
