#pragma once
// The operator API of portcullisd: what admins and the web UI use. JSON over the HTTPS server,
// every body and query checked against a field table (controlplane/api/json_input.h). The whole
// contract, with every path, is controlplane/operator/openapi.yaml (a test keeps the two equal).
//
// First run: until an admin exists every /api/ path except POST /api/setup answers 428
// setup_required. The agent API (/api/agent/*) is not gated: agents authenticate themselves
// (signatures, tokens), and their enrollments simply wait for an operator.
//
// Sessions: POST /api/login sets the cookie `portcullis_session` (32 random bytes, base64url;
// stored as SHA-256; HttpOnly, Secure, SameSite=Strict, Path=/, Max-Age) and answers a CSRF
// token bound to the session (stored as SHA-256). Every request that is not GET must carry it as
// the header X-CSRF-Token. Failures: 401 unauthenticated (no, unknown or expired session), 403
// csrf_failed (missing or wrong token), 403 forbidden (role). Logins are rate limited per
// (user name, source address): 429 rate_limited with Retry-After.
//
// Roles: admin (everything, incl. /api/users), operator (enrollments, devices, tunnels and all
// reads), auditor (reads only).
//
// Errors: {"error": code, "message": what to do, "field": name (400 only)}: 400 invalid_request,
// 401 unauthenticated | invalid_credentials, 403 csrf_failed | forbidden, 404 not_found, 405
// method_not_allowed, 409 conflict | already_set_up | device_revoked, 428 setup_required, 429
// rate_limited, 500 internal_error (logged, never detailed), 503 pool_exhausted.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "controlplane/api/agent_api.h"
#include "controlplane/http/https_server.h"
#include "controlplane/operator/flow_explainer.h"
#include "controlplane/operator/login_limiter.h"
#include "controlplane/operator/operator_actions.h"
#include "controlplane/operator/password.h"
#include "controlplane/reconciler/reconciler.h"
#include "controlplane/state/operator_store.h"
#include "controlplane/state/store.h"
#include "dataplane/base/ip.h"

namespace portcullis::operator_api {

inline constexpr std::string_view kSessionCookie = "portcullis_session";
inline constexpr std::string_view kCsrfHeader = "X-CSRF-Token";

// A TCP connect from the gateway to (address, port) within `timeout`: true if it was accepted.
using AgentProbe =
    std::function<bool(const IpAddress& address, std::uint16_t port, std::chrono::milliseconds)>;
// The real probe: non-blocking connect() and poll(), bounded by the timeout.
bool tcp_connect_probe(const IpAddress& address, std::uint16_t port,
                       std::chrono::milliseconds timeout);

struct OperatorApiConfig {
  IpPrefix pool;                               // 10.255.0.0/16
  IpAddress gateway_address;                   // 10.255.0.1
  std::vector<state::PortRule> default_ports;  // given to a device at approval
  std::int64_t session_lifetime_s = 8 * 3600;
  std::chrono::milliseconds apply_timeout{2000};  // PUT vpn_config, tunnel/connect
  std::chrono::milliseconds probe_timeout{500};   // tunnel/status?probe=true
  // The device list is served from a snapshot of the store, refreshed when the generation
  // changes or when it is older than this (heartbeat times change without a generation).
  std::int64_t device_snapshot_max_age_s = 2;
  LoginLimits login_limits;
  // Failed logins are audited one by one up to this many per minute (across all users and
  // addresses, so that unauthenticated requests cannot fill the append-only audit table); the
  // rest of that minute becomes one summary event.
  int max_failed_login_audits_per_minute = 60;
  PasswordCost password_cost = PasswordCost::interactive();
  int max_concurrent_hashes = 2;
};

// What the API reads from the reconciler; the daemon wires these to Reconciler::health() and
// Reconciler::last_report(), tests to fixed values.
struct ReconcilerView {
  std::function<std::shared_ptr<const reconciler::HealthSnapshot>()> health;
  std::function<std::optional<reconciler::ReconcileReport>()> last_report;
};

struct OperatorApiDeps {
  state::Store& store;
  state::OperatorStore& operators;
  api::ApplyWaiter& waiter;
  FlowExplainer& explainer;
  ReconcilerView reconciler;
  AgentProbe probe;      // empty: tcp_connect_probe
  api::UnixClock clock;  // Unix seconds
  api::RequestObserver observer = {};
};

// One registered endpoint, for the routes and the OpenAPI check: "/api/devices/{id}".
struct EndpointSpec {
  std::string method;
  std::string path;
};

class OperatorApi {
 public:
  // The references in `deps` must outlive the OperatorApi and the server given its routes.
  OperatorApi(OperatorApiConfig config, OperatorApiDeps deps);
  ~OperatorApi();

  // Catch-all routes below /api/ (one per method); the agent API's exact routes win over them.
  std::vector<http::Route> routes();
  // Every endpoint this API answers.
  static std::vector<EndpointSpec> endpoints();

  http::Response handle(const http::Request& request);

  struct Caller;
  struct Endpoint;

 private:
  http::Response setup(const Caller& c, const http::Request& r);
  http::Response login(const Caller& c, const http::Request& r);
  http::Response logout(const Caller& c, const http::Request& r);
  http::Response session(const Caller& c, const http::Request& r);
  http::Response list_users(const Caller& c, const http::Request& r);
  http::Response create_user(const Caller& c, const http::Request& r);
  http::Response list_enrollments(const Caller& c, const http::Request& r);
  http::Response approve_enrollment(const Caller& c, const http::Request& r);
  http::Response deny_enrollment(const Caller& c, const http::Request& r);
  http::Response create_enrollment_code(const Caller& c, const http::Request& r);
  http::Response list_devices(const Caller& c, const http::Request& r);
  http::Response device_detail(const Caller& c, const http::Request& r);
  http::Response revoke_device(const Caller& c, const http::Request& r);
  http::Response get_vpn_config(const Caller& c, const http::Request& r);
  http::Response put_vpn_config(const Caller& c, const http::Request& r);
  http::Response tunnel_connect(const Caller& c, const http::Request& r);
  http::Response tunnel_status(const Caller& c, const http::Request& r);
  http::Response tunnel_active(const Caller& c, const http::Request& r);
  http::Response audit_log(const Caller& c, const http::Request& r);
  http::Response ruleset(const Caller& c, const http::Request& r);
  http::Response explain(const Caller& c, const http::Request& r);

  Result<bool> setup_done();
  // The device snapshot (see device_snapshot_max_age_s).
  Result<std::shared_ptr<const std::vector<state::Device>>> devices();
  nlohmann::json tunnel_json(const state::Device& d, const reconciler::HealthSnapshot* health,
                             std::int64_t applied_generation, std::int64_t now);
  ActionContext action_context();
  void audit(const Caller& c, std::string action, std::string target, std::string detail);
  // operator.login_failed, within max_failed_login_audits_per_minute.
  void audit_failed_login(const Caller& c, const std::string& name, std::string detail);

  OperatorApiConfig config_;
  OperatorApiDeps deps_;
  PasswordHasher hasher_;
  LoginLimiter limiter_;

  std::mutex setup_mu_;
  bool setup_done_ = false;  // only ever goes false -> true

  std::mutex failed_login_mu_;
  std::int64_t failed_login_minute_ = 0;  // Unix minute of the counts below
  int failed_login_audits_ = 0;           // audited one by one in that minute
  int failed_login_unaudited_ = 0;        // over the budget in that minute

  std::mutex devices_mu_;
  std::shared_ptr<const std::vector<state::Device>> devices_;
  std::int64_t devices_generation_ = -1;
  std::int64_t devices_taken_at_ = 0;

  // GET /api/tunnel/active renders up to 10,000 tunnels from two immutable snapshots (health,
  // devices): the last page rendered is answered again until either snapshot is replaced.
  std::mutex active_mu_;
  std::shared_ptr<const reconciler::HealthSnapshot> active_health_;
  std::shared_ptr<const std::vector<state::Device>> active_devices_;
  std::int64_t active_offset_ = -1;
  std::int64_t active_limit_ = -1;
  http::Response active_response_;
};

}  // namespace portcullis::operator_api
