#include "controlplane/api/agent_api.h"

#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <utility>

#include "controlplane/api/access_token.h"
#include "controlplane/api/json_input.h"
#include "controlplane/api/json_response.h"
#include "controlplane/api/orchestration.h"
#include "controlplane/state/ids.h"
#include "dataplane/base/log.h"

namespace portcullis::api {
namespace {

using http::Request;
using http::Response;
using nlohmann::json;

constexpr std::string_view kEnrollRequestPath = "/api/agent/enroll/request";
constexpr std::string_view kEnrollPollPath = "/api/agent/enroll/poll";
constexpr std::string_view kTokenRefreshPath = "/api/agent/token/refresh";
constexpr std::string_view kHeartbeatPath = "/api/agent/heartbeat";
constexpr std::string_view kDetailsPath = "/api/agent/details";
constexpr std::string_view kVpnEnsurePath = "/api/agent/vpn/ensure";
constexpr std::string_view kVpnReadyPath = "/api/agent/vpn/ready";

// Field tables: the whole input contract of each endpoint.
constexpr FieldLimits kKeyText{.min_bytes = kKeyBase64Len, .max_bytes = kKeyBase64Len};
constexpr FieldLimits kProofTimestamp{.min = 0};
constexpr FieldLimits kProofNonce{.min_bytes = 16, .max_bytes = 64};
constexpr FieldLimits kProofSignature{.min_bytes = 88, .max_bytes = 88};
constexpr FieldLimits kCounter{.min = 0};

constexpr FieldRule kEnrollRequestFields[] = {
    {"hostname", FieldType::kString, kRequired, {.min_bytes = 1, .max_bytes = 253}},
    {"agent_public_key", FieldType::kString, kRequired, kKeyText},
    {"wg_public_key", FieldType::kString, kRequired, kKeyText},
    {"enrollment_code", FieldType::kString, kOptional, {.min_bytes = 1, .max_bytes = 128}},
    {"inventory", FieldType::kObject, kOptional, {.max_bytes = kMaxInventoryBytes}},
    {"timestamp", FieldType::kInteger, kRequired, kProofTimestamp},
    {"nonce", FieldType::kString, kRequired, kProofNonce},
    {"signature", FieldType::kString, kRequired, kProofSignature},
};
constexpr FieldRule kEnrollPollFields[] = {
    {"enrollment_id", FieldType::kString, kRequired, {.min_bytes = 1, .max_bytes = 64}},
    {"timestamp", FieldType::kInteger, kRequired, kProofTimestamp},
    {"nonce", FieldType::kString, kRequired, kProofNonce},
    {"signature", FieldType::kString, kRequired, kProofSignature},
};
constexpr FieldRule kTokenRefreshFields[] = {
    // 32 bytes in base64url without padding.
    {"refresh_token", FieldType::kString, kRequired, {.min_bytes = 43, .max_bytes = 43}},
};
constexpr FieldRule kHeartbeatFields[] = {
    {"handshake_age_s", FieldType::kInteger, kOptional, kCounter},
    {"rx_bytes", FieldType::kInteger, kOptional, kCounter},
    {"tx_bytes", FieldType::kInteger, kOptional, kCounter},
};
constexpr FieldRule kDetailsFields[] = {
    {"inventory", FieldType::kObject, kRequired, {.max_bytes = kMaxInventoryBytes}},
};
constexpr std::span<const FieldRule> kNoFields{};

Response invalid(const InputError& e) { return invalid_request(e); }
Response internal(std::string_view event, const Error& e) { return internal_error(event, e); }

Response proof_failed(ProofFailure f) {
  switch (f) {
    case ProofFailure::kMalformed:
      return error_response(400, "invalid_request",
                            "nonce must be base64url and signature base64 of 64 bytes",
                            "signature");
    case ProofFailure::kStale:
      return error_response(401, "stale_request",
                            "timestamp is more than 300 s away from the gateway clock: check the "
                            "agent's clock (NTP) and sign again");
    case ProofFailure::kSignature:
      return error_response(401, "bad_signature",
                            "the signature does not verify with the agent key over the canonical "
                            "request bytes");
    case ProofFailure::kReplayed:
      return error_response(401, "replayed_request",
                            "this nonce was already used: sign again with a fresh nonce");
    case ProofFailure::kBusy:
      return error_response(429, "busy", "too many signed requests in flight: retry shortly");
  }
  return error_response(500, "internal_error", "unexpected proof failure");
}

const std::string* optional_string(const json& body, const char* name) {
  const auto it = body.find(name);
  return it != body.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
}

bool is_hostname(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
  });
}

// A Bearer endpoint's body: empty means {}.
Checked<json> parse_bearer_body(const Request& request, std::span<const FieldRule> rules) {
  if (request.body.empty()) return parse_object("{}", rules);
  return parse_object(request.body, rules);
}

}  // namespace

AgentApi::AgentApi(AgentApiConfig config, state::Store& store, ApplyWaiter& waiter,
                   const SigningKey& signing_key, UnixClock clock, RequestObserver observer)
    : config_(std::move(config)),
      store_(store),
      waiter_(waiter),
      signing_key_(signing_key),
      clock_(std::move(clock)),
      observer_(std::move(observer)),
      replay_(config_.replay_cache_capacity) {}

std::vector<http::Route> AgentApi::routes() {
  using Method = Response (AgentApi::*)(const Request&);
  const std::pair<std::string_view, Method> table[] = {
      {kEnrollRequestPath, &AgentApi::enroll_request},
      {kEnrollPollPath, &AgentApi::enroll_poll},
      {kTokenRefreshPath, &AgentApi::token_refresh},
      {kHeartbeatPath, &AgentApi::heartbeat},
      {kDetailsPath, &AgentApi::details},
      {kVpnEnsurePath, &AgentApi::vpn_ensure},
      {kVpnReadyPath, &AgentApi::vpn_ready},
  };
  std::vector<http::Route> out;
  for (const auto& entry : table) {
    const std::string_view path = entry.first;
    const Method method = entry.second;
    out.push_back({"POST", std::string(path), [this, path, method](const Request& request) {
                     const auto start = std::chrono::steady_clock::now();
                     // The HTTP layer matches prefixes; agent paths are exact.
                     Response response =
                         request.path == path
                             ? (this->*method)(request)
                             : error_response(404, "not_found", "no such agent endpoint");
                     if (observer_) {
                       observer_(path, response.status, std::chrono::steady_clock::now() - start);
                     }
                     return response;
                   }});
  }
  return out;
}

void AgentApi::audit(std::string actor, std::string action, std::string target, std::string detail,
                     const Request& request) {
  state::AuditEvent e;
  e.at = clock_();
  e.actor = std::move(actor);
  e.action = std::move(action);
  e.target = std::move(target);
  e.detail = std::move(detail);
  e.source = request.remote_address;
  if (auto r = store_.audit(e); !r) {
    log_warning("audit event not recorded, ignoring",
                {{"action", e.action}, {"error", r.error().message()}});
  }
}

Response AgentApi::enroll_request(const Request& request) {
  auto body = parse_object(request.body, kEnrollRequestFields);
  if (!body) return invalid(body.error());
  const auto& hostname = body->at("hostname").get_ref<const std::string&>();
  if (!is_hostname(hostname)) {
    return error_response(400, "invalid_request",
                          "hostname may hold letters, digits, '-', '.' and '_' only", "hostname");
  }
  auto agent_key = Key::from_base64(body->at("agent_public_key").get_ref<const std::string&>());
  if (!agent_key) {
    return error_response(400, "invalid_request", agent_key.error().context(), "agent_public_key");
  }
  auto wg_key = Key::from_base64(body->at("wg_public_key").get_ref<const std::string&>());
  if (!wg_key) {
    return error_response(400, "invalid_request", wg_key.error().context(), "wg_public_key");
  }
  const std::int64_t now = clock_();
  if (auto proof = verify_agent_proof("POST", kEnrollRequestPath, *body, *agent_key, now, replay_);
      !proof) {
    log_info("enrollment request refused", {{"agent_key", agent_key->short_name()},
                                            {"reason", proof_failure_name(proof.error())},
                                            {"source", request.remote_address}});
    return proof_failed(proof.error());
  }

  state::Enrollment e;
  e.id = state::random_id();
  e.hostname = hostname;
  e.agent_key = *agent_key;
  e.wg_key = *wg_key;
  if (const auto inv = body->find("inventory"); inv != body->end() && !inv->is_null()) {
    e.inventory_json = inv->dump();  // checked by the field table: valid UTF-8, no floats
  }
  e.source_address = request.remote_address;
  e.created_at = now;
  // One transaction: the enrollment, its code, the approval and their audit rows. Logged after
  // it committed.
  std::optional<Response> refused;
  std::optional<state::Enrollment> stored;
  std::optional<state::Device> approved;
  bool created = false;
  const std::string* code = optional_string(*body, "enrollment_code");
  Status done = store_.atomically([&]() -> Status {
    auto added = store_.add_enrollment(e);
    if (!added) {
      if (added.error().errno_value() == EPERM) {
        log_info("enrollment refused",
                 {{"agent_key", agent_key->short_name()}, {"reason", added.error().context()}});
        refused = error_response(403, "enrollment_refused",
                                 "this agent key was denied or its device revoked: generate a new "
                                 "agent key and enroll again");
        return {};
      }
      if (added.error().errno_value() == EEXIST) {
        refused = error_response(409, "conflict",
                                 "this WireGuard key belongs to another agent: generate a new one",
                                 "wg_public_key");
        return {};
      }
      return fail(std::move(added.error()).wrap("enrollment request"));
    }
    stored = std::move(*added);
    created = stored->id == e.id;
    if (created) {
      audit("agent:" + agent_key->short_name(), "enrollment.request", stored->id,
            "hostname=" + hostname, request);
    }
    if (code == nullptr || stored->status != state::EnrollmentStatus::kPending) return {};
    auto consumed = store_.consume_enrollment_code(*code, now, stored->id);
    if (!consumed) return fail(std::move(consumed.error()).wrap("enrollment code check"));
    if (!*consumed) return {};
    auto device =
        store_.approve_enrollment(stored->id, "enrollment-code", config_.default_ports, now);
    if (!device) return fail(std::move(device.error()).wrap("approval by enrollment code"));
    stored->status = state::EnrollmentStatus::kApproved;
    audit("agent:" + agent_key->short_name(), "enrollment.approve", stored->id,
          "by=enrollment-code device=" + device->id, request);
    approved = std::move(*device);
    return {};
  });
  if (!done) return internal("enrollment request failed", done.error());
  if (refused) return std::move(*refused);
  if (created) {
    log_info("enrollment requested", {{"enrollment", stored->id.substr(0, 8)},
                                      {"hostname", hostname},
                                      {"agent_key", agent_key->short_name()},
                                      {"source", request.remote_address}});
  }
  if (approved) {
    log_info("enrollment approved by code", {{"enrollment", stored->id.substr(0, 8)},
                                             {"device", approved->id.substr(0, 8)},
                                             {"hostname", hostname}});
  } else if (code != nullptr && stored->status == state::EnrollmentStatus::kPending) {
    log_info("enrollment code not accepted, waiting for an operator",
             {{"enrollment", stored->id.substr(0, 8)}});
  }
  return json_response(200, {{"enrollment_id", stored->id},
                             {"status", state::enrollment_status_name(stored->status)}});
}

Response AgentApi::enroll_poll(const Request& request) {
  auto body = parse_object(request.body, kEnrollPollFields);
  if (!body) return invalid(body.error());
  const auto& id = body->at("enrollment_id").get_ref<const std::string&>();
  auto found = store_.find_enrollment(id);
  if (!found) return internal("enrollment lookup failed", found.error());
  if (!*found) return error_response(404, "not_found", "no such enrollment: enroll again");
  const state::Enrollment& e = **found;
  const std::int64_t now = clock_();
  if (auto proof = verify_agent_proof("POST", kEnrollPollPath, *body, e.agent_key, now, replay_);
      !proof) {
    log_debug("enrollment poll refused",
              {{"enrollment", e.id.substr(0, 8)}, {"reason", proof_failure_name(proof.error())}});
    return proof_failed(proof.error());
  }
  if (e.status != state::EnrollmentStatus::kApproved) {
    return json_response(200, {{"status", state::enrollment_status_name(e.status)}});
  }
  // One transaction: the device read, the old token family's revocation and the new refresh
  // token (a failed issue keeps the old family).
  std::optional<Response> answer;  // an answer other than the tokens
  std::optional<json> tokens;
  const NewTokens fresh = new_tokens(e.device_id, now);
  Status done = store_.atomically([&]() -> Status {
    auto device = store_.find_device(e.device_id);
    if (!device) return fail(std::move(device.error()).wrap("device lookup"));
    if (!*device) return fail(Error::protocol("approved without a device"));
    if ((*device)->status == state::DeviceStatus::kRevoked) {
      answer = refused_revoked(**device, request, "enroll/poll");
      return {};
    }
    // The device's refresh tokens are one family (family id = device id): a new poll revokes
    // what an earlier poll or refresh handed out. ENOENT: there was none yet.
    if (auto r = store_.revoke_token_family(e.device_id); !r && r.error().errno_value() != ENOENT) {
      return fail(std::move(r.error()).wrap("token family revocation"));
    }
    auto issued = store_tokens(fresh, e.device_id, e.device_id);
    if (!issued) {
      answer = std::move(issued.error());
      return fail_errno(ECANCELED, "tokens not issued");  // undo the revocation
    }
    tokens = std::move(*issued);
    return {};
  });
  if (answer) return std::move(*answer);
  if (!done) return internal("enrollment poll failed", done.error());
  json reply = std::move(*tokens);
  reply["status"] = "approved";
  reply["device_id"] = e.device_id;
  reply["gateway_signing_key"] = signing_key_.public_key().to_base64();
  log_info("tokens issued on enrollment poll", {{"device", e.device_id.substr(0, 8)}});
  return json_response(200, reply);
}

AgentApi::NewTokens AgentApi::new_tokens(const std::string& device_id, std::int64_t now) {
  std::string raw(32, '\0');
  randombytes_buf(raw.data(), raw.size());
  NewTokens t{
      .refresh = base64url_encode({reinterpret_cast<const std::uint8_t*>(raw.data()), raw.size()}),
      .refresh_hash = sha256(raw),
      .refresh_expires_at = now + kRefreshTokenLifetimeS,
      .access = issue_access_token(signing_key_, device_id, now),
  };
  sodium_memzero(raw.data(), raw.size());
  return t;
}

tl::expected<json, Response> AgentApi::store_tokens(const NewTokens& tokens,
                                                    const std::string& device_id,
                                                    const std::string& family_id) {
  state::RefreshToken row{
      .device_id = device_id, .family_id = family_id, .expires_at = tokens.refresh_expires_at};
  if (auto r = store_.add_refresh_token(KeyBytes(tokens.refresh_hash), row); !r) {
    if (r.error().errno_value() == EPERM)
      return tl::unexpected(error_response(
          403, "device_revoked", "this device was revoked: enroll again with a new agent key"));
    return tl::unexpected(internal("refresh token store failed", r.error()));
  }
  return json{{"access_token", tokens.access.token},
              {"access_expires_at", tokens.access.claims.expires_at},
              {"refresh_token", tokens.refresh},
              {"refresh_expires_at", tokens.refresh_expires_at},
              {"token_type", "Bearer"}};
}

Response AgentApi::refused_revoked(const state::Device& device, const Request& request,
                                   std::string_view what) {
  log_info("request of revoked device refused",
           {{"device", device.id.substr(0, 8)}, {"endpoint", std::string(what)}});
  audit("agent:" + device.id, "device.refused", device.id,
        "revoked device called " + std::string(what), request);
  return error_response(403, "device_revoked",
                        "this device was revoked: enroll again with a new agent key");
}

Response AgentApi::token_refresh(const Request& request) {
  auto body = parse_object(request.body, kTokenRefreshFields);
  if (!body) return invalid(body.error());
  auto raw = base64url_decode(body->at("refresh_token").get_ref<const std::string&>());
  if (!raw || raw->size() != 32) {
    return error_response(400, "invalid_request", "refresh_token must be 32 bytes in base64url",
                          "refresh_token");
  }
  const KeyBytes hash(sha256(*raw));
  sodium_memzero(raw->data(), raw->size());
  const std::int64_t now = clock_();
  auto row = store_.find_refresh_token(hash);
  if (!row) return internal("refresh token lookup failed", row.error());
  if (!*row) {
    return error_response(401, "invalid_token", "unknown refresh token: poll the enrollment again");
  }
  const state::RefreshToken& t = **row;
  auto device = store_.find_device(t.device_id);
  if (!device) return internal("device lookup failed", device.error());
  if (!*device) return internal("token refresh", Error::protocol("token without a device"));
  if ((*device)->status == state::DeviceStatus::kRevoked) {
    return refused_revoked(**device, request, "token/refresh");
  }
  auto reused = [&] {
    if (auto r = store_.revoke_token_family(t.family_id); !r) {
      log_warning("token family not revoked after reuse",
                  {{"device", t.device_id.substr(0, 8)}, {"error", r.error().message()}});
    }
    log_warning("refresh token reused, family revoked",
                {{"device", t.device_id.substr(0, 8)}, {"source", request.remote_address}});
    audit("agent:" + t.device_id, "token.reuse", t.device_id,
          "used refresh token presented again; family revoked", request);
    return error_response(401, "refresh_token_reused",
                          "this refresh token was already used, so every token of this device "
                          "is revoked: poll the enrollment again");
  };
  if (t.used) return reused();
  if (t.revoked) {
    return error_response(401, "invalid_token",
                          "this refresh token was revoked: poll the enrollment again");
  }
  if (t.expires_at <= now) {
    return error_response(401, "token_expired",
                          "the refresh token expired: poll the enrollment again");
  }
  // Atomic in the store: of two concurrent presentations only one marks it.
  if (auto r = store_.mark_refresh_token_used(hash); !r) {
    if (r.error().errno_value() == EALREADY) return reused();
    return internal("refresh token update failed", r.error());
  }
  auto tokens = store_tokens(new_tokens(t.device_id, now), t.device_id, t.family_id);
  if (!tokens) return std::move(tokens.error());
  return json_response(200, *tokens);
}

tl::expected<state::Device, Response> AgentApi::authenticate(const Request& request) {
  using tl::unexpected;
  std::string_view auth = request.header("Authorization");
  constexpr std::string_view kScheme = "Bearer ";
  if (auth.size() <= kScheme.size() || !std::equal(kScheme.begin(), kScheme.end(), auth.begin(),
                                                   [](unsigned char a, unsigned char b) {
                                                     return std::tolower(a) == std::tolower(b);
                                                   })) {
    return unexpected(
        error_response(401, "missing_token", "send 'Authorization: Bearer <access token>'"));
  }
  const std::int64_t now = clock_();
  auto claims = verify_access_token(signing_key_, auth.substr(kScheme.size()), now);
  if (!claims) {
    log_debug("access token refused",
              {{"reason", token_failure_name(claims.error())}, {"source", request.remote_address}});
    if (claims.error() == TokenFailure::kExpired) {
      return unexpected(
          error_response(401, "token_expired", "the access token expired: use the refresh token"));
    }
    return unexpected(
        error_response(401, "invalid_token", "the access token is not valid for this gateway"));
  }
  auto device = store_.find_device(claims->device_id);
  if (!device) return unexpected(internal("device lookup failed", device.error()));
  if (!*device) {
    return unexpected(error_response(401, "invalid_token", "the token names no known device"));
  }
  if ((*device)->status == state::DeviceStatus::kRevoked) {
    return unexpected(refused_revoked(**device, request, request.path));
  }
  return std::move(**device);
}

// The counters are accepted for the agent's own view only: the gateway takes handshake age and
// rx/tx from its kernel, which an agent cannot misreport.
Response AgentApi::heartbeat(const Request& request) {
  auto device = authenticate(request);
  if (!device) return std::move(device.error());
  auto body = parse_bearer_body(request, kHeartbeatFields);
  if (!body) return invalid(body.error());
  if (auto r = store_.record_heartbeat(device->id, clock_(), ""); !r) {
    if (r.error().errno_value() == EPERM) return refused_revoked(*device, request, "heartbeat");
    return internal("heartbeat failed", r.error());
  }
  return json_response(200, {{"ok", true}});
}

Response AgentApi::details(const Request& request) {
  auto device = authenticate(request);
  if (!device) return std::move(device.error());
  auto body = parse_bearer_body(request, kDetailsFields);
  if (!body) return invalid(body.error());
  if (auto r = store_.record_heartbeat(device->id, clock_(), body->at("inventory").dump()); !r) {
    if (r.error().errno_value() == EPERM) return refused_revoked(*device, request, "details");
    return internal("details update failed", r.error());
  }
  return json_response(200, {{"ok", true}});
}

Response AgentApi::vpn_ensure(const Request& request) {
  auto device = authenticate(request);
  if (!device) return std::move(device.error());
  auto body = parse_bearer_body(request, kNoFields);
  if (!body) return invalid(body.error());
  // The address and the applied generation under one lock hold.
  Result<IpAddress> address = fail_errno(EIO, "not read");
  Result<std::int64_t> applied = fail_errno(EIO, "not read");
  Status held = store_.atomically([&]() -> Status {
    address = store_.ensure_device_address(device->id, config_.pool, config_.gateway_address);
    if (address && device->address == *address) applied = store_.applied_generation();
    return {};
  });
  if (!held) address = fail(std::move(held.error()));  // the transaction itself failed
  if (!address) {
    switch (address.error().errno_value()) {
      case EPERM:
        return refused_revoked(*device, request, "vpn/ensure");
      case ENOSPC:
        log_error("tunnel address pool exhausted",
                  {{"pool", config_.pool.to_string()}, {"device", device->id.substr(0, 8)}});
        return error_response(503, "pool_exhausted",
                              "no free tunnel address: the operator must widen the pool");
      default:
        return internal("address allocation failed", address.error());
    }
  }
  if (device->address != *address) {
    log_info("tunnel address allocated",
             {{"device", device->id.substr(0, 8)}, {"ip", address->to_string()}});
    waiter_.wake();
  } else if (!applied || *applied < device->generation) {
    waiter_.wake();  // not yet in the kernel (or unknown): make sure a pass is coming
  }

  const std::int64_t now = clock_();
  OrchestrationDocument doc{
      .device_id = device->id,
      .gateway_endpoint = config_.gateway_endpoint.empty()
                              ? endpoint_from_host(request.header("Host"), config_.gateway_port)
                              : config_.gateway_endpoint,
      .gateway_port = config_.gateway_port,
      .gateway_wg_public_key = config_.gateway_wg_public_key,
      .address = IpPrefix::host(*address),
      .allowed_ips = {IpPrefix::host(config_.gateway_address)},
      .persistent_keepalive_s = config_.persistent_keepalive_s,
      .allowed_ports = device->ports,
      .issued_at = now,
      .expires_at = now + config_.document_lifetime_s,
      .nonce = random_base64url(16),
  };
  SignedDocument signed_doc = sign_document(doc, signing_key_);
  return json_response(200,
                       {{"document", signed_doc.document}, {"signature", signed_doc.signature}});
}

Response AgentApi::vpn_ready(const Request& request) {
  auto device = authenticate(request);
  if (!device) return std::move(device.error());
  auto body = parse_bearer_body(request, kNoFields);
  if (!body) return invalid(body.error());
  if (!device->address) {
    return error_response(409, "not_ensured", "call /api/agent/vpn/ensure first");
  }
  if (!waiter_.wait_applied(device->generation, config_.ready_timeout)) {
    log_info("device not applied in time", {{"device", device->id.substr(0, 8)},
                                            {"generation", std::to_string(device->generation)}});
    return error_response(503, "not_applied",
                          "the gateway has not applied this device's tunnel yet: retry");
  }
  return json_response(200, {{"ready", true}});
}

}  // namespace portcullis::api
