#include "controlplane/operator/operator_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <utility>

#include "controlplane/api/crypto.h"
#include "controlplane/api/json_input.h"
#include "controlplane/api/json_response.h"
#include "controlplane/state/ids.h"
#include "controlplane/state/port_rule.h"
#include "dataplane/base/log.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::operator_api {

using api::error_response;
using api::FieldLimits;
using api::FieldRule;
using api::FieldType;
using api::InputError;
using api::json_response;
using api::kOptional;
using api::kRequired;
using http::Request;
using http::Response;
using nlohmann::json;

// Who may call an endpoint.
enum class Access {
  kSetup,    // only before the first admin exists
  kPublic,   // no session (login)
  kRead,     // any role
  kOperate,  // admin or operator
  kAdmin,
};

struct OperatorApi::Caller {
  std::string name;  // operator name; empty without a session
  state::Role role = state::Role::kAuditor;
  std::string source;
  std::vector<std::string> params;  // path parameters, in order
  KeyBytes session_hash{};

  Actor actor() const { return {"operator:" + name, source}; }
};

struct OperatorApi::Endpoint {
  const char* method;
  const char* path;
  Access access;
};

namespace {

using Endpoint = OperatorApi::Endpoint;
using Caller = OperatorApi::Caller;

constexpr Endpoint kEndpoints[] = {
    {"POST", "/api/setup", Access::kSetup},
    {"POST", "/api/login", Access::kPublic},
    {"POST", "/api/logout", Access::kRead},
    {"GET", "/api/session", Access::kRead},
    {"GET", "/api/users", Access::kAdmin},
    {"POST", "/api/users", Access::kAdmin},
    {"GET", "/api/enrollments", Access::kRead},
    {"POST", "/api/enrollments/{id}/approve", Access::kOperate},
    {"POST", "/api/enrollments/{id}/deny", Access::kOperate},
    {"POST", "/api/enrollment-codes", Access::kOperate},
    {"GET", "/api/devices", Access::kRead},
    {"GET", "/api/devices/{id}", Access::kRead},
    {"POST", "/api/devices/{id}/revoke", Access::kOperate},
    {"GET", "/api/device/vpn_config/{id}", Access::kRead},
    {"PUT", "/api/device/vpn_config/{id}", Access::kOperate},
    {"POST", "/api/tunnel/connect", Access::kOperate},
    {"GET", "/api/tunnel/status", Access::kRead},
    {"GET", "/api/tunnel/active", Access::kRead},
    {"GET", "/api/audit", Access::kRead},
    {"GET", "/api/ruleset", Access::kRead},
    {"GET", "/api/explain", Access::kRead},
};

// The handlers are listed in OperatorApi::handle, in the order of kEndpoints.
using HandlerFn = Response (OperatorApi::*)(const Caller&, const Request&);

constexpr std::size_t kMaxIdBytes = 64;
constexpr int kMaxDevicePage = 500;
constexpr int kMaxActivePage = 10'000;
constexpr std::size_t kMaxAllowedPorts = 256;

constexpr FieldLimits kName{.min_bytes = 1, .max_bytes = 64};
constexpr FieldLimits kPassword{.min_bytes = 1, .max_bytes = kMaxPasswordBytes};

constexpr FieldRule kSetupFields[] = {
    {"username", FieldType::kString, kRequired, kName},
    {"password", FieldType::kString, kRequired, kPassword},
};
constexpr FieldRule kLoginFields[] = {
    {"username", FieldType::kString, kRequired, kName},
    {"password", FieldType::kString, kRequired, kPassword},
};
constexpr FieldRule kCreateUserFields[] = {
    {"username", FieldType::kString, kRequired, kName},
    {"password", FieldType::kString, kRequired, kPassword},
    {"role", FieldType::kString, kRequired, {.min_bytes = 1, .max_bytes = 16}},
};
constexpr FieldRule kCodeFields[] = {
    {"ttl_s", FieldType::kInteger, kOptional, {.min = kMinCodeTtlS, .max = kMaxCodeTtlS}},
};
constexpr FieldRule kVpnConfigFields[] = {
    {"allowed_ports", FieldType::kArray, kRequired, {.max_bytes = 16 * 1024}},
};
constexpr FieldRule kConnectFields[] = {
    {"device_id", FieldType::kString, kRequired, {.min_bytes = 1, .max_bytes = kMaxIdBytes}},
};
constexpr std::span<const FieldRule> kNoFields{};

// ---- small helpers ----

Response not_found(std::string_view what) {
  return error_response(404, "not_found", std::string(what) + " does not exist");
}

Response invalid(std::string_view field, std::string message) {
  return error_response(400, "invalid_request", message, field);
}

// A body: empty means {} for endpoints without required fields.
api::Checked<json> parse_body(const Request& r, std::span<const FieldRule> rules) {
  return api::parse_object(r.body.empty() ? std::string_view("{}") : std::string_view(r.body),
                           rules);
}

bool is_user_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

bool is_id(std::string_view s) {
  return !s.empty() && s.size() <= kMaxIdBytes && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

// Matches "/api/devices/{id}/revoke" against a path; fills `params`.
bool match_path(std::string_view pattern, std::string_view path, std::vector<std::string>& params) {
  params.clear();
  while (!pattern.empty() || !path.empty()) {
    if (pattern.empty() || path.empty() || pattern[0] != '/' || path[0] != '/') return false;
    pattern.remove_prefix(1);
    path.remove_prefix(1);
    auto pe = pattern.find('/');
    auto se = path.find('/');
    std::string_view pseg = pattern.substr(0, pe);
    std::string_view sseg = path.substr(0, se);
    if (pseg.size() > 2 && pseg.front() == '{' && pseg.back() == '}') {
      if (sseg.empty()) return false;
      params.emplace_back(sseg);
    } else if (pseg != sseg) {
      return false;
    }
    pattern = pe == std::string_view::npos ? std::string_view() : pattern.substr(pe);
    path = se == std::string_view::npos ? std::string_view() : path.substr(se);
  }
  return true;
}

// ---- query strings ----

struct QueryRule {
  std::string_view name;
  std::size_t max_bytes;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> url_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

using Query = std::map<std::string, std::string, std::less<>>;

api::Checked<Query> parse_query(std::string_view query, std::span<const QueryRule> rules) {
  Query out;
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    auto name = url_decode(part.substr(0, eq));
    auto value =
        url_decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1));
    if (!name || !value) return tl::unexpected(InputError{"", "malformed query string"});
    auto rule = std::find_if(rules.begin(), rules.end(),
                             [&](const QueryRule& r) { return r.name == *name; });
    if (rule == rules.end()) {
      return tl::unexpected(
          InputError{*name, "unknown query parameter '" + *name + "': remove it"});
    }
    if (value->size() > rule->max_bytes) {
      return tl::unexpected(
          InputError{*name, "longer than " + std::to_string(rule->max_bytes) + " bytes"});
    }
    if (out.contains(*name)) return tl::unexpected(InputError{*name, "given more than once"});
    out.emplace(std::move(*name), std::move(*value));
  }
  return out;
}

// An integer query parameter in [min, max], or `fallback` when absent.
api::Checked<std::int64_t> query_int(const Query& q, std::string_view name, std::int64_t fallback,
                                     std::int64_t min, std::int64_t max) {
  auto it = q.find(name);
  if (it == q.end()) return fallback;
  std::int64_t v = 0;
  const auto& s = it->second;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < min || v > max) {
    return tl::unexpected(InputError{
        std::string(name),
        "must be a whole number from " + std::to_string(min) + " to " + std::to_string(max)});
  }
  return v;
}

std::string query_string(const Query& q, std::string_view name) {
  auto it = q.find(name);
  return it == q.end() ? std::string() : it->second;
}

// ---- cookies and tokens ----

std::string session_cookie_value(const Request& r) {
  std::string_view header = r.header("Cookie");
  while (!header.empty()) {
    auto semi = header.find(';');
    std::string_view part = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.starts_with(kSessionCookie) && part.size() > kSessionCookie.size() &&
        part[kSessionCookie.size()] == '=') {
      return std::string(part.substr(kSessionCookie.size() + 1));
    }
  }
  return {};
}

bool hash_equals(const KeyBytes& a, const KeyBytes& b) {
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

// ---- JSON forms ----

// A JSON string literal (invalid UTF-8 replaced, as json_response() does).
std::string json_text(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

json ports_json(const std::vector<state::PortRule>& ports) {
  json out = json::array();
  for (const auto& p : ports) out.push_back(state::format_port_rule(p));
  return out;
}

json enrollment_json(const state::Enrollment& e) {
  return {{"id", e.id},
          {"hostname", e.hostname},
          {"status", state::enrollment_status_name(e.status)},
          {"agent_public_key", e.agent_key.to_base64()},
          {"wg_public_key", e.wg_key.to_base64()},
          {"by_code", e.by_code},
          {"source", e.source_address},
          {"created_at", e.created_at},
          {"decided_at", e.decided_at},
          {"decided_by", e.decided_by},
          {"device_id", e.device_id.empty() ? json() : json(e.device_id)}};
}

json audit_json(const state::AuditEvent& e) {
  return {{"id", e.id},         {"at", e.at},         {"actor", e.actor},  {"action", e.action},
          {"target", e.target}, {"detail", e.detail}, {"source", e.source}};
}

json health_state(const reconciler::TunnelHealth* h) {
  return h ? json(reconciler::tunnel_state_name(h->state)) : json();
}

// Store errors as answers: the errno says which; the context is logged, never sent.
Response store_failure(std::string_view event, const Error& e, std::string_view what) {
  switch (e.errno_value()) {
    case ENOENT:
      return not_found(what);
    case EPERM:
      return error_response(409, "conflict",
                            std::string(what) +
                                " is in a state that refuses this (denied or "
                                "revoked): a new enrollment is needed");
    case EEXIST:
      return error_response(409, "conflict",
                            std::string(what) +
                                " conflicts with its current state (e.g. an "
                                "approved enrollment: revoke its device instead)");
    case ENOSPC:
      return error_response(503, "pool_exhausted",
                            "no free tunnel address: widen the pool or revoke unused devices");
    default:
      return api::internal_error(event, e);
  }
}

}  // namespace

bool tcp_connect_probe(const IpAddress& address, std::uint16_t port,
                       std::chrono::milliseconds timeout) {
  if (address.family() != AF_INET) return false;
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(address.v4_host_order());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd.get(), POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) return false;
  return err == 0;
}

OperatorApi::OperatorApi(OperatorApiConfig config, OperatorApiDeps deps)
    : config_(std::move(config)),
      deps_(std::move(deps)),
      hasher_(config_.password_cost, config_.max_concurrent_hashes),
      limiter_(config_.login_limits) {
  if (!deps_.probe) deps_.probe = tcp_connect_probe;
}

OperatorApi::~OperatorApi() = default;

std::vector<EndpointSpec> OperatorApi::endpoints() {
  std::vector<EndpointSpec> out;
  for (const auto& e : kEndpoints) out.push_back({e.method, e.path});
  return out;
}

std::vector<http::Route> OperatorApi::routes() {
  std::vector<http::Route> out;
  for (const char* method : {"GET", "POST", "PUT", "DELETE", "PATCH"}) {
    out.push_back({method, "/api/", [this](const Request& r) { return handle(r); }});
  }
  return out;
}

Result<bool> OperatorApi::setup_done() {
  std::lock_guard lock(setup_mu_);
  if (setup_done_) return true;
  auto has = deps_.operators.has_admin();
  if (!has) return fail(std::move(has.error()));
  setup_done_ = *has;
  return *has;
}

void OperatorApi::audit(const Caller& c, std::string action, std::string target,
                        std::string detail) {
  state::AuditEvent e;
  e.at = deps_.clock();
  e.actor = c.actor().name;
  e.action = std::move(action);
  e.target = std::move(target);
  e.detail = std::move(detail);
  e.source = c.source;
  if (auto r = deps_.store.audit(e); !r) {
    log_warning("audit event not recorded, ignoring",
                {{"action", e.action}, {"error", r.error().message()}});
  }
}

void OperatorApi::audit_failed_login(const Caller& c, const std::string& name, std::string detail) {
  const std::int64_t minute = deps_.clock() / 60;
  int unaudited = 0;  // of the minute that just ended
  bool one_by_one = false;
  {
    std::lock_guard lock(failed_login_mu_);
    if (minute != failed_login_minute_) {
      unaudited = failed_login_unaudited_;
      failed_login_minute_ = minute;
      failed_login_audits_ = 0;
      failed_login_unaudited_ = 0;
    }
    one_by_one = failed_login_audits_ < config_.max_failed_login_audits_per_minute;
    (one_by_one ? failed_login_audits_ : failed_login_unaudited_)++;
  }
  // The claimed name is not an operator's identity: it is the target; the actor is anonymous.
  auto record = [&](std::string target, std::string text, std::string source) {
    state::AuditEvent e;
    e.at = deps_.clock();
    e.actor = "anonymous";
    e.action = "operator.login_failed";
    e.target = std::move(target);
    e.detail = std::move(text);
    e.source = std::move(source);
    if (auto r = deps_.store.audit(e); !r) {
      log_warning("audit event not recorded, ignoring",
                  {{"action", e.action}, {"error", r.error().message()}});
    }
  };
  if (unaudited > 0) {
    record("",
           std::to_string(unaudited) +
               " more failed logins in the previous minute, not audited one by one (their "
               "names and addresses are in the gateway log)",
           "various");
  }
  if (one_by_one) record(name, std::move(detail), c.source);
}

ActionContext OperatorApi::action_context() {
  return {deps_.store, config_.default_ports, deps_.clock, [this] { deps_.waiter.wake(); }};
}

Response OperatorApi::handle(const Request& request) {
  const auto start = std::chrono::steady_clock::now();
  static const HandlerFn kHandlers[] = {
      &OperatorApi::setup,
      &OperatorApi::login,
      &OperatorApi::logout,
      &OperatorApi::session,
      &OperatorApi::list_users,
      &OperatorApi::create_user,
      &OperatorApi::list_enrollments,
      &OperatorApi::approve_enrollment,
      &OperatorApi::deny_enrollment,
      &OperatorApi::create_enrollment_code,
      &OperatorApi::list_devices,
      &OperatorApi::device_detail,
      &OperatorApi::revoke_device,
      &OperatorApi::get_vpn_config,
      &OperatorApi::put_vpn_config,
      &OperatorApi::tunnel_connect,
      &OperatorApi::tunnel_status,
      &OperatorApi::tunnel_active,
      &OperatorApi::audit_log,
      &OperatorApi::ruleset,
      &OperatorApi::explain,
  };
  static_assert(std::size(kHandlers) == std::size(kEndpoints));

  Caller caller;
  caller.source = request.remote_address;
  const Endpoint* endpoint = nullptr;
  HandlerFn handler = nullptr;
  bool path_known = false;
  for (std::size_t i = 0; i < std::size(kEndpoints); ++i) {
    if (!match_path(kEndpoints[i].path, request.path, caller.params)) continue;
    path_known = true;
    if (request.method == kEndpoints[i].method) {
      endpoint = &kEndpoints[i];
      handler = kHandlers[i];
      break;
    }
  }
  const std::string_view route = endpoint ? std::string_view(endpoint->path) : "/api/*";

  auto answer = [&]() -> Response {
    // The agent API has its own exact routes; anything else below it is unknown.
    if (request.path.starts_with("/api/agent/")) {
      return error_response(404, "not_found", "no such agent endpoint");
    }
    auto done = setup_done();
    if (!done) return api::internal_error("operator api: read operators", done.error());
    if (!*done && !(endpoint && endpoint->access == Access::kSetup)) {
      return error_response(428, "setup_required",
                            "no admin exists yet: create one with POST /api/setup "
                            "{\"username\", \"password\"} (at least 12 characters)");
    }
    if (!path_known) return error_response(404, "not_found", "no such operator API endpoint");
    if (!endpoint) {
      return error_response(405, "method_not_allowed",
                            "this path does not answer " + request.method);
    }
    for (const auto& p : caller.params) {
      if (!is_id(p)) return not_found("'" + p.substr(0, kMaxIdBytes) + "'");
    }
    if (endpoint->access == Access::kSetup) {
      if (*done) {
        return error_response(409, "already_set_up",
                              "an admin exists: log in with POST /api/login");
      }
      return (this->*handler)(caller, request);
    }
    if (endpoint->access == Access::kPublic) return (this->*handler)(caller, request);

    // A session.
    const std::string token = session_cookie_value(request);
    if (token.empty() || token.size() > 64) {
      return error_response(401, "unauthenticated", "log in first: POST /api/login");
    }
    caller.session_hash = state::sha256(std::string_view(token));
    auto session = deps_.operators.find_session(caller.session_hash, deps_.clock());
    if (!session) return api::internal_error("operator api: read session", session.error());
    if (!session->has_value()) {
      return error_response(401, "unauthenticated",
                            "the session is unknown or expired: log in again");
    }
    caller.name = (*session)->operator_name;
    caller.role = (*session)->role;
    if (request.method != "GET") {
      std::string_view csrf = request.header(kCsrfHeader);
      if (csrf.empty() || csrf.size() > 64 ||
          !hash_equals(state::sha256(csrf), (*session)->csrf_hash)) {
        return error_response(403, "csrf_failed",
                              "send the csrf_token from the login answer as the X-CSRF-Token "
                              "header on every request that changes something");
      }
    }
    const bool allowed =
        endpoint->access == Access::kRead ||
        (endpoint->access == Access::kOperate && caller.role != state::Role::kAuditor) ||
        (endpoint->access == Access::kAdmin && caller.role == state::Role::kAdmin);
    if (!allowed) {
      return error_response(403, "forbidden",
                            std::string("the role '") + state::role_name(caller.role) +
                                "' may not do this: ask an admin");
    }
    return (this->*handler)(caller, request);
  };
  Response response = answer();
  response.headers.emplace_back("Cache-Control", "no-store");
  if (deps_.observer) {
    deps_.observer(route, response.status, std::chrono::steady_clock::now() - start);
  }
  return response;
}

// ---- setup, login, users ----

namespace {

std::optional<Response> check_new_account(const json& body) {
  const auto& name = body["username"].get_ref<const std::string&>();
  if (!is_user_name(name)) {
    return invalid("username", "use letters, digits, '.', '_' and '-' only");
  }
  const auto& password = body["password"].get_ref<const std::string&>();
  if (password.size() < kMinPasswordBytes) {
    return invalid("password", "shorter than " + std::to_string(kMinPasswordBytes) + " characters");
  }
  return std::nullopt;
}

}  // namespace

Response OperatorApi::setup(const Caller& c, const Request& r) {
  auto body = api::parse_object(r.body, kSetupFields);
  if (!body) return api::invalid_request(body.error());
  if (auto bad = check_new_account(*body)) return *bad;
  state::OperatorAccount account;
  account.name = (*body)["username"].get<std::string>();
  auto hash = hasher_.hash((*body)["password"].get_ref<const std::string&>());
  if (!hash) return api::internal_error("operator api: hash password", hash.error());
  account.password_hash = std::move(*hash);
  account.role = state::Role::kAdmin;
  account.created_at = deps_.clock();
  if (auto s = deps_.operators.create_first_admin(account); !s) {
    if (s.error().errno_value() == EEXIST) {
      return error_response(409, "already_set_up", "an admin exists: log in with POST /api/login");
    }
    return api::internal_error("operator api: create first admin", s.error());
  }
  {
    std::lock_guard lock(setup_mu_);
    setup_done_ = true;
  }
  Caller who = c;
  who.name = account.name;
  audit(who, "operator.setup", account.name, "role=admin");
  log_notice("first admin created", {{"operator", account.name}, {"source", c.source}});
  return json_response(201, {{"username", account.name}, {"role", "admin"}});
}

Response OperatorApi::login(const Caller& c, const Request& r) {
  auto body = api::parse_object(r.body, kLoginFields);
  if (!body) return api::invalid_request(body.error());
  const auto& name = (*body)["username"].get_ref<const std::string&>();
  const auto& password = (*body)["password"].get_ref<const std::string&>();
  const std::int64_t now = deps_.clock();
  if (auto wait = limiter_.retry_after(name, c.source, now); wait > 0) {
    return error_response(429, "rate_limited",
                          "too many failed logins for this user from this address: wait " +
                              std::to_string(wait) + " s",
                          {}, static_cast<int>(wait));
  }
  auto account = deps_.operators.find_operator(name);
  if (!account) return api::internal_error("operator api: find operator", account.error());
  bool ok = false;
  if (account->has_value()) {
    ok = hasher_.verify((*account)->password_hash, password);
  } else {
    hasher_.verify_dummy(password);
  }
  if (!ok) {
    limiter_.record_failure(name, c.source, now);
    log_notice("operator login failed", {{"operator", name}, {"source", c.source}});
    std::string detail = account->has_value() ? "wrong password" : "unknown user";
    if (auto wait = limiter_.retry_after(name, c.source, now); wait > 0) {
      detail += "; this user is locked out from this address for " + std::to_string(wait) + " s";
    }
    audit_failed_login(c, name, std::move(detail));
    return error_response(401, "invalid_credentials", "wrong user name or password");
  }
  limiter_.record_success(name, c.source);

  const std::string token = api::random_base64url(32);
  const std::string csrf = api::random_base64url(32);
  state::OperatorSession s;
  s.operator_name = name;
  s.role = (*account)->role;
  s.csrf_hash = state::sha256(std::string_view(csrf));
  s.source = c.source;
  s.created_at = now;
  s.expires_at = now + config_.session_lifetime_s;
  if (auto st = deps_.operators.add_session(state::sha256(std::string_view(token)), s, now); !st) {
    return api::internal_error("operator api: add session", st.error());
  }
  Caller who = c;
  who.name = name;
  audit(who, "operator.login", name, "");
  Response resp = json_response(200, {{"username", name},
                                      {"role", state::role_name(s.role)},
                                      {"csrf_token", csrf},
                                      {"expires_at", s.expires_at}});
  resp.headers.emplace_back("Set-Cookie",
                            std::string(kSessionCookie) + "=" + token +
                                "; Path=/; Max-Age=" + std::to_string(config_.session_lifetime_s) +
                                "; HttpOnly; Secure; SameSite=Strict");
  return resp;
}

Response OperatorApi::logout(const Caller& c, const Request& r) {
  auto body = parse_body(r, kNoFields);
  if (!body) return api::invalid_request(body.error());
  if (auto s = deps_.operators.delete_session(c.session_hash); !s) {
    return api::internal_error("operator api: delete session", s.error());
  }
  audit(c, "operator.logout", c.name, "");
  Response resp = json_response(200, {{"ok", true}});
  resp.headers.emplace_back("Set-Cookie", std::string(kSessionCookie) +
                                              "=; Path=/; Max-Age=0; HttpOnly; Secure; "
                                              "SameSite=Strict");
  return resp;
}

Response OperatorApi::session(const Caller& c, const Request& r) {
  auto q = parse_query(r.query, {});
  if (!q) return api::invalid_request(q.error());
  return json_response(200, {{"username", c.name}, {"role", state::role_name(c.role)}});
}

Response OperatorApi::list_users(const Caller&, const Request& r) {
  auto q = parse_query(r.query, {});
  if (!q) return api::invalid_request(q.error());
  auto list = deps_.operators.list_operators();
  if (!list) return api::internal_error("operator api: list operators", list.error());
  json users = json::array();
  for (const auto& a : *list) {
    users.push_back(
        {{"username", a.name}, {"role", state::role_name(a.role)}, {"created_at", a.created_at}});
  }
  return json_response(200, {{"users", std::move(users)}});
}

Response OperatorApi::create_user(const Caller& c, const Request& r) {
  auto body = api::parse_object(r.body, kCreateUserFields);
  if (!body) return api::invalid_request(body.error());
  if (auto bad = check_new_account(*body)) return *bad;
  auto role = state::role_from_name((*body)["role"].get_ref<const std::string&>());
  if (!role) return invalid("role", "must be admin, operator or auditor");
  state::OperatorAccount account;
  account.name = (*body)["username"].get<std::string>();
  account.role = *role;
  account.created_at = deps_.clock();
  auto hash = hasher_.hash((*body)["password"].get_ref<const std::string&>());
  if (!hash) return api::internal_error("operator api: hash password", hash.error());
  account.password_hash = std::move(*hash);
  if (auto s = deps_.operators.add_operator(account); !s) {
    if (s.error().errno_value() == EEXIST) {
      return error_response(409, "conflict", "the user name is taken: choose another");
    }
    return api::internal_error("operator api: add operator", s.error());
  }
  audit(c, "operator.create", account.name, std::string("role=") + state::role_name(*role));
  return json_response(201, {{"username", account.name},
                             {"role", state::role_name(*role)},
                             {"created_at", account.created_at}});
}

// ---- enrollments ----

Response OperatorApi::list_enrollments(const Caller&, const Request& r) {
  constexpr QueryRule kRules[] = {{"status", 16}};
  auto q = parse_query(r.query, kRules);
  if (!q) return api::invalid_request(q.error());
  std::optional<state::EnrollmentStatus> only;
  if (auto s = query_string(*q, "status"); !s.empty()) {
    if (s == "pending") {
      only = state::EnrollmentStatus::kPending;
    } else if (s == "approved") {
      only = state::EnrollmentStatus::kApproved;
    } else if (s == "denied") {
      only = state::EnrollmentStatus::kDenied;
    } else {
      return invalid("status", "must be pending, approved or denied");
    }
  }
  auto list = deps_.store.list_enrollments(only);
  if (!list) return api::internal_error("operator api: list enrollments", list.error());
  json out = json::array();
  for (const auto& e : *list) out.push_back(enrollment_json(e));
  return json_response(200, {{"enrollments", std::move(out)}});
}

Response OperatorApi::approve_enrollment(const Caller& c, const Request& r) {
  auto body = parse_body(r, kNoFields);
  if (!body) return api::invalid_request(body.error());
  auto ctx = action_context();
  auto dev = operator_api::approve_enrollment(ctx, c.actor(), c.params[0]);
  if (!dev) return store_failure("operator api: approve enrollment", dev.error(), "the enrollment");
  return json_response(200, {{"enrollment_id", c.params[0]},
                             {"status", "approved"},
                             {"device_id", dev->id},
                             {"allowed_ports", ports_json(dev->ports)}});
}

Response OperatorApi::deny_enrollment(const Caller& c, const Request& r) {
  auto body = parse_body(r, kNoFields);
  if (!body) return api::invalid_request(body.error());
  auto ctx = action_context();
  if (auto s = operator_api::deny_enrollment(ctx, c.actor(), c.params[0]); !s) {
    return store_failure("operator api: deny enrollment", s.error(), "the enrollment");
  }
  return json_response(200, {{"enrollment_id", c.params[0]}, {"status", "denied"}});
}

Response OperatorApi::create_enrollment_code(const Caller& c, const Request& r) {
  auto body = parse_body(r, kCodeFields);
  if (!body) return api::invalid_request(body.error());
  std::int64_t ttl = body->contains("ttl_s") ? api::get_int(*body, "ttl_s") : kDefaultCodeTtlS;
  auto ctx = action_context();
  auto code = operator_api::create_enrollment_code(ctx, c.actor(), ttl);
  if (!code) return api::internal_error("operator api: create enrollment code", code.error());
  return json_response(201, {{"code", code->code}, {"expires_at", code->expires_at}});
}

// ---- devices ----

Result<std::shared_ptr<const std::vector<state::Device>>> OperatorApi::devices() {
  auto generation = deps_.store.generation();
  if (!generation) return fail(std::move(generation.error()));
  const std::int64_t now = deps_.clock();
  std::lock_guard lock(devices_mu_);
  if (!devices_ || devices_generation_ != *generation ||
      now - devices_taken_at_ >= config_.device_snapshot_max_age_s) {
    auto list = deps_.store.list_devices();
    if (!list) return fail(std::move(list.error()));
    devices_ = std::make_shared<const std::vector<state::Device>>(std::move(*list));
    devices_generation_ = *generation;
    devices_taken_at_ = now;
  }
  return devices_;
}

// up: handshake fresh. pending: the address is allocated but the change is not applied yet, or
// no handshake yet, or stale. down: revoked, no address (the agent never called vpn/ensure), or
// the last handshake is dead.
json OperatorApi::tunnel_json(const state::Device& d, const reconciler::HealthSnapshot* health,
                              std::int64_t applied_generation, std::int64_t now) {
  const reconciler::TunnelHealth* h = health ? health->find(d.id) : nullptr;
  const bool applied = applied_generation >= d.generation;
  std::string state, reason;
  if (d.status == state::DeviceStatus::kRevoked) {
    state = "down", reason = "revoked";
  } else if (!d.address) {
    state = "down", reason = "no tunnel address: the agent has not called vpn/ensure";
  } else if (!applied) {
    state = "pending", reason = "the gateway is applying the device's last change";
  } else if (h && h->state == reconciler::TunnelState::kFresh) {
    state = "up", reason = "recent handshake";
  } else if (!h || h->last_handshake == 0) {
    state = "pending", reason = "waiting for the agent's first handshake";
  } else if (h->state == reconciler::TunnelState::kStale) {
    state = "pending", reason = "handshake is stale";
  } else {
    state = "down", reason = "no handshake for too long";
  }
  json out = {{"state", state},
              {"reason", reason},
              {"applied", applied},
              {"health", health_state(h)},
              {"last_handshake", h ? h->last_handshake : 0},
              {"rx_bytes", h ? h->rx_bytes : 0},
              {"tx_bytes", h ? h->tx_bytes : 0}};
  auto age = h ? h->handshake_age(now) : std::nullopt;
  out["handshake_age_s"] = age ? json(*age) : json();
  return out;
}

namespace {

json device_summary(const state::Device& d) {
  return {{"id", d.id},
          {"hostname", d.hostname},
          {"address", d.address ? json(d.address->to_string()) : json()},
          {"status", state::device_status_name(d.status)},
          {"allowed_ports", ports_json(d.ports)},
          {"created_at", d.created_at},
          {"revoked_at", d.revoked_at},
          {"last_heartbeat", d.last_heartbeat}};
}

bool contains_text(std::string_view hay, std::string_view needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         }) != hay.end();
}

}  // namespace

Response OperatorApi::list_devices(const Caller&, const Request& r) {
  constexpr QueryRule kRules[] = {{"limit", 8}, {"offset", 12}, {"search", 253},
                                  {"sort", 32}, {"order", 8},   {"status", 16}};
  auto q = parse_query(r.query, kRules);
  if (!q) return api::invalid_request(q.error());
  auto limit = query_int(*q, "limit", 100, 1, kMaxDevicePage);
  if (!limit) return api::invalid_request(limit.error());
  auto offset = query_int(*q, "offset", 0, 0, 100'000'000);
  if (!offset) return api::invalid_request(offset.error());
  const std::string sort = query_string(*q, "sort").empty() ? "hostname" : q->at("sort");
  if (sort != "hostname" && sort != "last_handshake" && sort != "address" && sort != "created_at") {
    return invalid("sort", "must be hostname, last_handshake, address or created_at");
  }
  const std::string order = query_string(*q, "order").empty() ? "asc" : q->at("order");
  if (order != "asc" && order != "desc") return invalid("order", "must be asc or desc");
  const std::string status = query_string(*q, "status");
  if (!status.empty() && status != "active" && status != "revoked") {
    return invalid("status", "must be active or revoked");
  }
  const std::string search = query_string(*q, "search");

  auto all = devices();
  if (!all) return api::internal_error("operator api: list devices", all.error());
  auto health = deps_.reconciler.health ? deps_.reconciler.health() : nullptr;
  auto applied = deps_.store.applied_generation();
  if (!applied) return api::internal_error("operator api: applied generation", applied.error());

  struct Row {
    const state::Device* device;
    std::int64_t handshake;
    std::uint32_t address;
  };
  std::vector<Row> rows;
  rows.reserve((*all)->size());
  for (const auto& d : **all) {
    if (!status.empty() && status != state::device_status_name(d.status)) continue;
    if (!search.empty() && !contains_text(d.hostname, search) && !contains_text(d.id, search) &&
        !(d.address && contains_text(d.address->to_string(), search))) {
      continue;
    }
    const reconciler::TunnelHealth* h = health ? health->find(d.id) : nullptr;
    rows.push_back({&d, h ? h->last_handshake : 0, d.address ? d.address->v4_host_order() : 0u});
  }
  const bool desc = order == "desc";
  // The numeric sort key, computed once per row; ties broken by id so pages are stable.
  const int by = sort == "hostname" ? 0 : sort == "last_handshake" ? 1 : sort == "address" ? 2 : 3;
  auto less = [by](const Row& a, const Row& b) {
    if (by == 0) {
      if (int c = a.device->hostname.compare(b.device->hostname); c != 0) return c < 0;
      return a.device->id < b.device->id;
    }
    auto key = [by](const Row& x) -> std::int64_t {
      return by == 1 ? x.handshake : by == 2 ? x.address : x.device->created_at;
    };
    if (key(a) != key(b)) return key(a) < key(b);
    return a.device->id < b.device->id;
  };
  const std::size_t begin = std::min<std::size_t>(static_cast<std::size_t>(*offset), rows.size());
  const std::size_t end =
      std::min<std::size_t>(begin + static_cast<std::size_t>(*limit), rows.size());
  // Only the requested page needs to be in order.
  auto cmp = [&](const Row& a, const Row& b) { return desc ? less(b, a) : less(a, b); };
  std::partial_sort(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(end), rows.end(), cmp);
  const std::int64_t now = deps_.clock();
  json page = json::array();
  for (std::size_t i = begin; i < end; ++i) {
    json d = device_summary(*rows[i].device);
    d["tunnel"] = tunnel_json(*rows[i].device, health.get(), *applied, now);
    page.push_back(std::move(d));
  }
  json out = {
      {"devices", std::move(page)}, {"total", rows.size()}, {"offset", *offset}, {"limit", *limit}};
  out["next_offset"] = end < rows.size() ? json(end) : json();
  return json_response(200, out);
}

Response OperatorApi::device_detail(const Caller& c, const Request& r) {
  auto q = parse_query(r.query, {});
  if (!q) return api::invalid_request(q.error());
  auto dev = deps_.store.find_device(c.params[0]);
  if (!dev) return api::internal_error("operator api: find device", dev.error());
  if (!dev->has_value()) return not_found("the device");
  auto health = deps_.reconciler.health ? deps_.reconciler.health() : nullptr;
  auto applied = deps_.store.applied_generation();
  if (!applied) return api::internal_error("operator api: applied generation", applied.error());
  json out = device_summary(**dev);
  out["wg_public_key"] = (*dev)->wg_key.to_base64();
  out["agent_public_key"] = (*dev)->agent_key.to_base64();
  out["generation"] = (*dev)->generation;
  json inventory = json::parse((*dev)->inventory_json, nullptr, false);
  out["inventory"] = inventory.is_discarded() ? json::object() : inventory;
  out["tunnel"] = tunnel_json(**dev, health.get(), *applied, deps_.clock());
  return json_response(200, out);
}

Response OperatorApi::revoke_device(const Caller& c, const Request& r) {
  auto body = parse_body(r, kNoFields);
  if (!body) return api::invalid_request(body.error());
  auto ctx = action_context();
  if (auto s = operator_api::revoke_device(ctx, c.actor(), c.params[0]); !s) {
    return store_failure("operator api: revoke device", s.error(), "the device");
  }
  return json_response(200, {{"device_id", c.params[0]}, {"status", "revoked"}});
}

Response OperatorApi::get_vpn_config(const Caller& c, const Request& r) {
  auto q = parse_query(r.query, {});
  if (!q) return api::invalid_request(q.error());
  auto dev = deps_.store.find_device(c.params[0]);
  if (!dev) return api::internal_error("operator api: find device", dev.error());
  if (!dev->has_value()) return not_found("the device");
  return json_response(200,
                       {{"device_id", (*dev)->id},
                        {"status", state::device_status_name((*dev)->status)},
                        {"address", (*dev)->address ? json((*dev)->address->to_string()) : json()},
                        {"allowed_ports", ports_json((*dev)->ports)}});
}

Response OperatorApi::put_vpn_config(const Caller& c, const Request& r) {
  auto body = api::parse_object(r.body, kVpnConfigFields);
  if (!body) return api::invalid_request(body.error());
  const json& list = (*body)["allowed_ports"];
  if (list.size() > kMaxAllowedPorts) {
    return invalid("allowed_ports", "more than " + std::to_string(kMaxAllowedPorts) + " entries");
  }
  std::vector<std::string> entries;
  for (const auto& e : list) {
    if (!e.is_string())
      return invalid("allowed_ports", "every entry must be a string like \"5985/tcp\"");
    entries.push_back(e.get<std::string>());
  }
  auto ports = state::parse_port_rules(entries);
  if (!ports) return invalid("allowed_ports", ports.error().context());
  auto dev = deps_.store.find_device(c.params[0]);
  if (!dev) return api::internal_error("operator api: find device", dev.error());
  if (!dev->has_value()) return not_found("the device");
  if ((*dev)->status == state::DeviceStatus::kRevoked) {
    return error_response(409, "device_revoked", "the device is revoked: it has no allowlist");
  }
  auto ctx = action_context();
  auto generation = operator_api::set_device_ports(ctx, c.actor(), c.params[0], *ports);
  if (!generation) {
    return store_failure("operator api: set device ports", generation.error(), "the device");
  }
  const bool applied = deps_.waiter.wait_applied(*generation, config_.apply_timeout);
  return json_response(200, {{"device_id", c.params[0]},
                             {"allowed_ports", ports_json(*ports)},
                             {"generation", *generation},
                             {"applied", applied}});
}

// ---- tunnels ----

Response OperatorApi::tunnel_connect(const Caller& c, const Request& r) {
  auto body = api::parse_object(r.body, kConnectFields);
  if (!body) return api::invalid_request(body.error());
  const auto& id = (*body)["device_id"].get_ref<const std::string&>();
  if (!is_id(id)) return not_found("the device");
  auto dev = deps_.store.find_device(id);
  if (!dev) return api::internal_error("operator api: find device", dev.error());
  if (!dev->has_value()) return not_found("the device");
  if ((*dev)->status == state::DeviceStatus::kRevoked) {
    return error_response(409, "device_revoked", "the device is revoked: enroll the agent again");
  }
  auto address = deps_.store.ensure_device_address(id, config_.pool, config_.gateway_address);
  if (!address) return store_failure("operator api: ensure address", address.error(), "the device");
  deps_.waiter.wake();
  auto after = deps_.store.find_device(id);
  if (!after || !after->has_value()) {
    return api::internal_error("operator api: find device",
                               after ? Error::invalid("device vanished") : after.error());
  }
  const bool applied = deps_.waiter.wait_applied((*after)->generation, config_.apply_timeout);
  audit(c, "tunnel.connect", id, "address=" + address->to_string());
  auto health = deps_.reconciler.health ? deps_.reconciler.health() : nullptr;
  auto applied_gen = deps_.store.applied_generation();
  if (!applied_gen)
    return api::internal_error("operator api: applied generation", applied_gen.error());
  json out = tunnel_json(**after, health.get(), *applied_gen, deps_.clock());
  out["device_id"] = id;
  out["address"] = address->to_string();
  out["applied"] = applied;
  return json_response(200, out);
}

Response OperatorApi::tunnel_status(const Caller&, const Request& r) {
  constexpr QueryRule kRules[] = {{"device", kMaxIdBytes}, {"probe", 8}};
  auto q = parse_query(r.query, kRules);
  if (!q) return api::invalid_request(q.error());
  const std::string id = query_string(*q, "device");
  if (id.empty()) return invalid("device", "missing required query parameter");
  const std::string probe = query_string(*q, "probe");
  if (!probe.empty() && probe != "true" && probe != "false") {
    return invalid("probe", "must be true or false");
  }
  if (!is_id(id)) return not_found("the device");
  auto dev = deps_.store.find_device(id);
  if (!dev) return api::internal_error("operator api: find device", dev.error());
  if (!dev->has_value()) return not_found("the device");
  auto health = deps_.reconciler.health ? deps_.reconciler.health() : nullptr;
  auto applied = deps_.store.applied_generation();
  if (!applied) return api::internal_error("operator api: applied generation", applied.error());
  json out = tunnel_json(**dev, health.get(), *applied, deps_.clock());
  out["device_id"] = id;
  out["address"] = (*dev)->address ? json((*dev)->address->to_string()) : json();
  json socket = {{"checked", false}, {"reachable", nullptr}, {"port", nullptr}};
  if (probe == "true" && (*dev)->address && (*dev)->status == state::DeviceStatus::kActive) {
    auto tcp = std::find_if((*dev)->ports.begin(), (*dev)->ports.end(),
                            [](const auto& p) { return p.protocol == filter::Protocol::kTcp; });
    if (tcp != (*dev)->ports.end()) {
      socket = {{"checked", true},
                {"port", tcp->port},
                {"reachable", deps_.probe(*(*dev)->address, tcp->port, config_.probe_timeout)}};
    }
  }
  out["agent_socket"] = std::move(socket);
  return json_response(200, out);
}

Response OperatorApi::tunnel_active(const Caller&, const Request& r) {
  constexpr QueryRule kRules[] = {{"limit", 8}, {"offset", 12}};
  auto q = parse_query(r.query, kRules);
  if (!q) return api::invalid_request(q.error());
  auto limit = query_int(*q, "limit", 1000, 1, kMaxActivePage);
  if (!limit) return api::invalid_request(limit.error());
  auto offset = query_int(*q, "offset", 0, 0, 100'000'000);
  if (!offset) return api::invalid_request(offset.error());
  auto all = devices();
  if (!all) return api::internal_error("operator api: list devices", all.error());
  auto health = deps_.reconciler.health ? deps_.reconciler.health() : nullptr;
  std::lock_guard lock(active_mu_);
  if (active_health_ == health && active_devices_ == *all && active_offset_ == *offset &&
      active_limit_ == *limit) {
    return active_response_;
  }
  // Written as text, not built as a json DOM: 10,000 tunnels render in a few milliseconds
  // (a DOM took 40-70 ms, and this answer is re-rendered after every health refresh).
  std::string body = "{\"tunnels\":[";
  std::size_t total = 0, listed = 0;
  if (health) {
    body.reserve(64 + 160 * std::min<std::size_t>(health->tunnels.size(), *limit));
    // Both sorted by device id: merge.
    auto d = (*all)->begin();
    for (const auto& h : health->tunnels) {
      if (h.state != reconciler::TunnelState::kFresh) continue;
      while (d != (*all)->end() && d->id < h.device) ++d;
      if (d == (*all)->end() || d->id != h.device || !d->address ||
          d->status != state::DeviceStatus::kActive) {
        continue;
      }
      if (total >= static_cast<std::size_t>(*offset) && listed < static_cast<std::size_t>(*limit)) {
        const std::string id = json_text(d->id);
        body += listed++ ? ",{" : "{";
        body += "\"tunnel_id\":" + id + ",\"agent_id\":" + id;
        body += ",\"hostname\":" + json_text(d->hostname);
        body += ",\"virtual_ip\":\"" + d->address->to_string();
        body += "\",\"last_activity\":" + std::to_string(h.last_handshake);
        body += ",\"rx\":" + std::to_string(h.rx_bytes);
        body += ",\"tx\":" + std::to_string(h.tx_bytes) + "}";
      }
      ++total;
    }
  }
  body += "],\"total\":" + std::to_string(total) + ",\"offset\":" + std::to_string(*offset) +
          ",\"limit\":" + std::to_string(*limit) +
          ",\"taken_at\":" + std::to_string(health ? health->taken_at : 0) + "}";
  active_response_ = {200, "application/json", std::move(body), {}};
  active_health_ = std::move(health);
  active_devices_ = *all;
  active_offset_ = *offset;
  active_limit_ = *limit;
  return active_response_;
}

// ---- audit, ruleset, explain ----

Response OperatorApi::audit_log(const Caller&, const Request& r) {
  constexpr QueryRule kRules[] = {{"limit", 8}, {"before", 20}};
  auto q = parse_query(r.query, kRules);
  if (!q) return api::invalid_request(q.error());
  auto limit = query_int(*q, "limit", 100, 1, 1000);
  if (!limit) return api::invalid_request(limit.error());
  auto before = query_int(*q, "before", 0, 0, INT64_MAX);
  if (!before) return api::invalid_request(before.error());
  auto events = deps_.operators.list_audit_newest(*before, static_cast<int>(*limit));
  if (!events) return api::internal_error("operator api: list audit", events.error());
  json out = json::array();
  for (const auto& e : *events) out.push_back(audit_json(e));
  json body = {{"events", std::move(out)}};
  body["next_before"] = static_cast<std::int64_t>(events->size()) == *limit && !events->empty()
                            ? json(events->back().id)
                            : json();
  return json_response(200, body);
}

namespace {

// One device as every layer holds it, against its intent (its allowlist while it is active and
// has an address; nothing once revoked).
json device_ruleset(const state::Device& d, const std::vector<LayerDevice>& layers) {
  const bool live = d.status == state::DeviceStatus::kActive && d.address.has_value();
  std::vector<filter::AllowEntry> intent;
  if (live) {
    for (const auto& p : d.ports) intent.push_back({*d.address, p.protocol, p.port, d.id});
    std::sort(intent.begin(), intent.end());
  }
  auto texts = [](const std::vector<filter::AllowEntry>& v) {
    json out = json::array();
    for (const auto& e : v) out.push_back(state::format_port_rule({e.protocol, e.port}));
    return out;
  };
  json per_layer = json::array();
  for (const auto& l : layers) {
    json j = {{"name", l.name}};
    if (!l.error.empty()) {
      j["error"] = l.error;
      per_layer.push_back(std::move(j));
      continue;
    }
    std::vector<filter::AllowEntry> missing, unexpected;
    std::set_difference(intent.begin(), intent.end(), l.allowed.begin(), l.allowed.end(),
                        std::back_inserter(missing));
    std::set_difference(l.allowed.begin(), l.allowed.end(), intent.begin(), intent.end(),
                        std::back_inserter(unexpected));
    const bool agent_known = l.agent_known.value_or(false);
    j["agent_known"] = agent_known;
    j["allowed"] = texts(l.allowed);
    j["missing"] = texts(missing);
    j["unexpected"] = texts(unexpected);
    j["in_sync"] = missing.empty() && unexpected.empty() && agent_known == live;
    per_layer.push_back(std::move(j));
  }
  return {{"id", d.id},
          {"hostname", d.hostname},
          {"status", state::device_status_name(d.status)},
          {"address", d.address ? json(d.address->to_string()) : json()},
          {"intent", texts(intent)},
          {"layers", std::move(per_layer)}};
}

}  // namespace

Response OperatorApi::ruleset(const Caller&, const Request& r) {
  constexpr QueryRule kRules[] = {{"device", kMaxIdBytes}};
  auto q = parse_query(r.query, kRules);
  if (!q) return api::invalid_request(q.error());
  json device = nullptr;
  if (q->contains("device")) {
    const std::string id = query_string(*q, "device");
    if (!is_id(id)) return not_found("the device");
    auto dev = deps_.store.find_device(id);
    if (!dev) return api::internal_error("operator api: find device", dev.error());
    if (!dev->has_value()) return not_found("the device");
    std::vector<LayerDevice> held;
    if ((*dev)->address) held = deps_.explainer.device_entries(*(*dev)->address);
    device = device_ruleset(**dev, held);
  }
  json layers = json::array();
  for (const auto& l : deps_.explainer.summarize()) {
    json j = {
        {"name", l.name}, {"installed", l.installed}, {"agents", l.agents}, {"allowed", l.allowed}};
    if (!l.error.empty()) j["error"] = l.error;
    layers.push_back(std::move(j));
  }
  json drift = nullptr;
  if (deps_.reconciler.last_report) {
    if (auto report = deps_.reconciler.last_report()) {
      json per_layer = json::array();
      for (const auto& l : report->layers) {
        json j = {{"name", l.name},       {"ok", l.ok()},      {"differed", l.differed()},
                  {"rebuilt", l.rebuilt}, {"added", l.added},  {"removed", l.removed},
                  {"changed", l.changed}, {"detail", l.detail}};
        if (l.error) j["error"] = "the last pass failed on this layer; see the gateway log";
        per_layer.push_back(std::move(j));
      }
      drift = {{"generation", report->generation}, {"applied", report->applied},
               {"drift_repaired", report->drift},  {"adoption", report->adoption},
               {"failed", report->failed()},       {"layers", std::move(per_layer)}};
    }
  }
  auto generation = deps_.store.generation();
  auto applied = deps_.store.applied_generation();
  if (!generation || !applied) {
    return api::internal_error("operator api: generations",
                               generation ? applied.error() : generation.error());
  }
  json answer = {{"layers", std::move(layers)},
                 {"last_pass", std::move(drift)},
                 {"generation", *generation},
                 {"applied_generation", *applied},
                 {"in_sync", *applied >= *generation}};
  if (!device.is_null()) answer["device"] = std::move(device);
  return json_response(200, std::move(answer));
}

Response OperatorApi::explain(const Caller&, const Request& r) {
  constexpr QueryRule kRules[] = {{"device", kMaxIdBytes}, {"port", 8}, {"proto", 8}};
  auto q = parse_query(r.query, kRules);
  if (!q) return api::invalid_request(q.error());
  const std::string id = query_string(*q, "device");
  if (id.empty()) return invalid("device", "missing required query parameter");
  if (!q->contains("port")) return invalid("port", "missing required query parameter");
  auto port = query_int(*q, "port", 0, 1, 65535);
  if (!port) return api::invalid_request(port.error());
  const std::string proto_text = query_string(*q, "proto").empty() ? "tcp" : q->at("proto");
  filter::Protocol proto;
  if (proto_text == "tcp") {
    proto = filter::Protocol::kTcp;
  } else if (proto_text == "udp") {
    proto = filter::Protocol::kUdp;
  } else {
    return invalid("proto", "must be tcp or udp");
  }
  if (!is_id(id)) return not_found("the device");
  auto dev = deps_.store.find_device(id);
  if (!dev) return api::internal_error("operator api: find device", dev.error());
  if (!dev->has_value()) return not_found("the device");
  const state::Device& d = **dev;
  const state::PortRule rule{proto, static_cast<std::uint16_t>(*port)};
  const bool active = d.status == state::DeviceStatus::kActive;
  const bool in_list = std::binary_search(d.ports.begin(), d.ports.end(), rule);

  json layers = json::array();
  std::string first_block;
  json intent = {{"layer", "intent"}, {"allowed", active && in_list && d.address.has_value()}};
  if (!active) {
    intent["why"] = "the device is revoked";
  } else if (!in_list) {
    intent["why"] =
        std::string("the device's allowlist does not contain ") + state::format_port_rule(rule);
  } else if (!d.address) {
    intent["why"] = "the device has no tunnel address yet (the agent has not called vpn/ensure)";
  } else {
    intent["why"] = std::string("the allowlist contains ") + state::format_port_rule(rule);
  }
  if (!intent["allowed"].get<bool>()) first_block = "intent";
  layers.push_back(std::move(intent));

  bool kernel_allows = d.address.has_value();
  if (d.address) {
    filter::AllowEntry flow{*d.address, proto, static_cast<std::uint16_t>(*port), d.id};
    for (const auto& l : deps_.explainer.lookup(flow)) {
      json j = {{"layer", l.name}};
      if (!l.allowed) {
        j["allowed"] = nullptr;
        j["why"] = l.error;
        kernel_allows = false;
        if (first_block.empty()) first_block = l.name;
      } else {
        j["allowed"] = *l.allowed;
        j["agent_known"] = l.agent_known.value_or(false);
        j["why"] = *l.allowed ? "the kernel holds " + d.address->to_string() + " . " + proto_text +
                                    " . " + std::to_string(*port)
                              : "the kernel does not hold " + d.address->to_string() + " . " +
                                    proto_text + " . " + std::to_string(*port);
        if (!*l.allowed) {
          kernel_allows = false;
          if (first_block.empty()) first_block = l.name;
        }
      }
      layers.push_back(std::move(j));
    }
  }
  auto health = deps_.reconciler.health ? deps_.reconciler.health() : nullptr;
  auto applied = deps_.store.applied_generation();
  if (!applied) return api::internal_error("operator api: applied generation", applied.error());
  json tunnel = tunnel_json(d, health.get(), *applied, deps_.clock());
  const bool tunnel_up = tunnel["state"] == "up";
  json tunnel_layer = {{"layer", "tunnel"},
                       {"allowed", tunnel_up},
                       {"why", tunnel["reason"]},
                       {"state", tunnel["state"]}};
  layers.push_back(std::move(tunnel_layer));
  const bool allowed = first_block.empty() && kernel_allows;
  json out = {{"device_id", d.id},
              {"port", *port},
              {"proto", proto_text},
              {"allowed", allowed},
              {"reachable", allowed && tunnel_up},
              {"layers", std::move(layers)}};
  out["blocked_by"] = first_block.empty() ? json() : json(first_block);
  return json_response(200, out);
}

}  // namespace portcullis::operator_api
