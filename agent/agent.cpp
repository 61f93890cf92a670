#include "agent/agent.h"

#include <sodium.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "agent/inventory.h"
#include "dataplane/base/log.h"

namespace portcullis::agent {
namespace {

using nlohmann::json;

constexpr const char* kEnrollRequestPath = "/api/agent/enroll/request";
constexpr const char* kEnrollPollPath = "/api/agent/enroll/poll";
constexpr const char* kTokenRefreshPath = "/api/agent/token/refresh";
constexpr const char* kHeartbeatPath = "/api/agent/heartbeat";
constexpr const char* kDetailsPath = "/api/agent/details";
constexpr const char* kEnsurePath = "/api/agent/vpn/ensure";
constexpr const char* kReadyPath = "/api/agent/vpn/ready";

constexpr std::int64_t kRefreshBeforeS = 60;
constexpr std::int64_t kMaxRetryBackoffMs = 60'000;
constexpr std::int64_t kDetailsIntervalMs = 6 * 3600 * 1000;

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string short_id(const std::string& id) { return id.substr(0, 8); }

}  // namespace

bool AgentStatus::healthy() const { return state == "tunnel_up" && tunnel == "up"; }

json AgentStatus::to_json() const {
  json j = {{"status", healthy() ? "ok" : "degraded"},
            {"state", state},
            {"enrolled", enrolled},
            {"tunnel", tunnel},
            {"rx_bytes", rx_bytes},
            {"tx_bytes", tx_bytes},
            {"last_error", last_error},
            {"ensures", ensures},
            {"heals", heals}};
  j["handshake_age_s"] = handshake_age_s ? json(*handshake_age_s) : json(nullptr);
  j["device_id"] = device_id;
  return j;
}

std::string AgentStatus::to_prometheus() const {
  std::ostringstream s;
  auto gauge = [&](const char* name, const char* help, auto value) {
    s << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n"
      << name << " " << value << "\n";
  };
  auto counter = [&](const char* name, const char* help, std::uint64_t value) {
    s << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n"
      << name << " " << value << "\n";
  };
  gauge("portcullis_agent_enrolled", "1 when the agent holds an approved enrollment.",
        enrolled ? 1 : 0);
  gauge("portcullis_agent_tunnel_up", "1 when the tunnel interface matches the gateway document.",
        tunnel == "up" ? 1 : 0);
  if (handshake_age_s) {
    gauge("portcullis_agent_handshake_age_seconds", "Seconds since the last WireGuard handshake.",
          *handshake_age_s);
  }
  counter("portcullis_agent_rx_bytes_total", "Bytes received from the gateway peer.", rx_bytes);
  counter("portcullis_agent_tx_bytes_total", "Bytes sent to the gateway peer.", tx_bytes);
  counter("portcullis_agent_ensures_total", "Successful vpn/ensure rounds.", ensures);
  counter("portcullis_agent_heals_total",
          "Tunnel repairs after the interface went missing or wrong.", heals);
  counter("portcullis_agent_errors_total", "Failed attempts (gateway, document, interface).",
          errors);
  return s.str();
}

Agent::Agent(AgentConfig config, AgentIdentity identity, const Key& wg_public_key, Tunnel& tunnel,
             StatusBoard& board, UnixClock clock)
    : config_(std::move(config)),
      identity_(std::move(identity)),
      hostname_(config_.hostname.empty() ? local_hostname() : config_.hostname),
      wg_public_key_(wg_public_key.to_base64()),
      board_(board),
      clock_(std::move(clock)),
      client_({.base_url = config_.gateway_url, .pin = config_.gateway_pin}),
      tunnel_(tunnel) {}

std::int64_t Agent::jitter(std::int64_t ms, int percent) {
  const std::int64_t span = ms * percent / 100;
  if (span <= 0) return ms;
  return ms - span +
         static_cast<std::int64_t>(randombytes_uniform(
             static_cast<std::uint32_t>(std::min<std::int64_t>(2 * span, UINT32_MAX))));
}

bool Agent::sleep(std::int64_t ms, const std::atomic<bool>& stop) {
  const std::int64_t until = steady_ms() + ms;
  while (!stop.load()) {
    const std::int64_t left = until - steady_ms();
    if (left <= 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<std::int64_t>(left, 100)));
  }
  return false;
}

void Agent::note_error(const std::string& what) {
  board_.update([&](AgentStatus& s) {
    s.last_error = what;
    ++s.errors;
  });
}

bool Agent::save() {
  const std::string path = config_.state_dir + "/" + kEnrollmentFile;
  auto r = save_enrollment(path, identity_, state_);
  if (!r) {
    const bool first = !unsaved_;
    if (first) save_backoff_ms_ = 1000;
    log_event(first ? LogLevel::kError : LogLevel::kWarning,
              "cannot save the enrollment state, continuing with it in memory",
              {{"path", path},
               {"error", r.error().message()},
               {"retry_in_s", std::to_string(save_backoff_ms_ / 1000)}});
    note_error(r.error().message());
    unsaved_ = true;
    next_save_ms_ = steady_ms() + save_backoff_ms_;
    save_backoff_ms_ = std::min(save_backoff_ms_ * 2, kMaxRetryBackoffMs);
    return false;
  }
  if (unsaved_) log_notice("enrollment state saved", {{"path", path}});
  unsaved_ = false;
  return true;
}

void Agent::retry_save() {
  if (unsaved_ && steady_ms() >= next_save_ms_) save();
}

Agent::Outcome Agent::terminal(const std::string& state, const std::string& why) {
  if (auto r = tunnel_.remove(); !r) {
    log_error("cannot remove the tunnel interface",
              {{"ifname", config_.interface}, {"error", r.error().message()}});
  }
  document_.reset();
  board_.update([&](AgentStatus& s) {
    s.state = state;
    s.tunnel = "absent";
    s.handshake_age_s.reset();
    s.last_error = why;
  });
  log_error("tunnel stopped", {{"reason", state}, {"why", why}, {"ifname", config_.interface}});
  return Outcome::kTerminal;
}

Agent::Outcome Agent::request_enrollment() {
  json body = {{"hostname", hostname_},
               {"agent_public_key", identity_.public_key().to_base64()},
               {"wg_public_key", wg_public_key_},
               {"inventory", collect_inventory(hostname_, config_.interface)}};
  if (!config_.enrollment_code.empty()) body["enrollment_code"] = config_.enrollment_code;
  if (auto s =
          sign_request("POST", kEnrollRequestPath, body, identity_, clock_(), random_base64url(16));
      !s) {
    log_error("cannot sign the enrollment request", {{"error", s.error().message()}});
    return Outcome::kRetry;
  }
  auto r = client_.post(kEnrollRequestPath, body);
  if (!r) {
    log_warning("enrollment request failed, retrying", {{"error", r.error().message()}});
    note_error(r.error().message());
    return Outcome::kRetry;
  }
  if (r->status == 403) {
    return terminal("denied", "enrollment refused by the gateway (" + r->describe() + "): remove " +
                                  config_.state_dir + "/" + kIdentityFile +
                                  " to enroll with a new identity");
  }
  if (!r->ok() || !r->body.is_object() || !r->body.contains("enrollment_id") ||
      !r->body["enrollment_id"].is_string()) {
    log_warning("enrollment request refused, retrying", {{"answer", r->describe()}});
    note_error("enroll/request: " + r->describe());
    return Outcome::kRetry;
  }
  state_.enrollment_id = r->body["enrollment_id"].get<std::string>();
  state_.gateway_url = config_.gateway_url;
  save();
  log_info("enrollment requested", {{"enrollment", state_.enrollment_id},
                                    {"hostname", hostname_},
                                    {"agent_key", identity_.public_key().short_name()},
                                    {"code", config_.enrollment_code.empty() ? "no" : "yes"}});
  return Outcome::kOk;
}

Agent::Outcome Agent::poll_enrollment(bool* approved) {
  *approved = false;
  json body = {{"enrollment_id", state_.enrollment_id}};
  if (!sign_request("POST", kEnrollPollPath, body, identity_, clock_(), random_base64url(16))) {
    return Outcome::kRetry;
  }
  auto r = client_.post(kEnrollPollPath, body);
  if (!r) {
    log_warning("enrollment poll failed, retrying", {{"error", r.error().message()}});
    note_error(r.error().message());
    return Outcome::kRetry;
  }
  if (r->status == 404) {
    log_warning("the gateway does not know this enrollment, requesting again",
                {{"enrollment", state_.enrollment_id}});
    state_.enrollment_id.clear();
    return Outcome::kRetry;
  }
  if (r->status == 403) {
    return terminal(r->error == "device_revoked" ? "revoked" : "denied",
                    "the gateway refused this agent (" + r->describe() + ")");
  }
  if (!r->ok() || !r->body.is_object()) {
    log_warning("enrollment poll refused, retrying", {{"answer", r->describe()}});
    note_error("enroll/poll: " + r->describe());
    return Outcome::kRetry;
  }
  const std::string status = r->body.value("status", "");
  if (status == "pending") return Outcome::kOk;
  if (status == "denied") {
    return terminal("denied",
                    "the operator denied enrollment " + state_.enrollment_id + " of " + hostname_);
  }
  if (status != "approved") {
    log_warning("enrollment poll: unexpected answer, retrying", {{"status", status}});
    return Outcome::kRetry;
  }
  auto key = Key::from_base64(r->body.value("gateway_signing_key", ""));
  if (!key) {
    log_warning("enrollment poll: no valid gateway_signing_key, retrying");
    return Outcome::kRetry;
  }
  if (state_.gateway_signing_key && *state_.gateway_signing_key != *key) {
    return terminal("denied",
                    "the gateway's signing key changed since enrollment (pinned " +
                        state_.gateway_signing_key->short_name() + ", now " + key->short_name() +
                        "): refusing its documents; re-enroll if the gateway was rebuilt");
  }
  state_.gateway_signing_key = *key;
  state_.device_id = r->body.value("device_id", "");
  state_.access_token = r->body.value("access_token", "");
  state_.access_expires_at = r->body.value("access_expires_at", std::int64_t{0});
  state_.refresh_token = r->body.value("refresh_token", "");
  state_.refresh_expires_at = r->body.value("refresh_expires_at", std::int64_t{0});
  state_.gateway_url = config_.gateway_url;
  save();
  board_.update([&](AgentStatus& s) {
    s.enrolled = true;
    s.device_id = state_.device_id;
  });
  log_notice("enrollment approved", {{"enrollment", state_.enrollment_id},
                                     {"device", short_id(state_.device_id)},
                                     {"gateway_signing_key", key->short_name()}});
  *approved = true;
  return Outcome::kOk;
}

Agent::Outcome Agent::enroll(const std::atomic<bool>& stop) {
  board_.update([](AgentStatus& s) { s.state = "enrolling"; });
  std::int64_t backoff = 1000;
  const std::int64_t cap = std::int64_t{config_.poll_max_interval_s} * 1000;
  if (state_.enrollment_id.empty()) {
    auto o = request_enrollment();
    if (o != Outcome::kOk) {
      if (o == Outcome::kRetry) {
        // Gateway down or refusing: 1 s, 2 s, 4 s ... up to poll_max_interval_s, with jitter.
        sleep(jitter(request_backoff_ms_, 20), stop);
        request_backoff_ms_ = std::min(request_backoff_ms_ * 2, cap);
      }
      return o;
    }
    request_backoff_ms_ = 1000;
  }
  bool announced = false;
  std::int64_t next_announce = 0;
  while (!stop.load()) {
    retry_save();
    bool approved = false;
    auto o = poll_enrollment(&approved);
    if (o == Outcome::kTerminal || approved) return o;
    if (state_.enrollment_id.empty()) return Outcome::kRetry;
    if (o == Outcome::kOk) {
      board_.update([](AgentStatus& s) { s.state = "pending"; });
      if (!announced || steady_ms() >= next_announce) {
        log_notice("waiting for approval of " + hostname_ + " at " + config_.gateway_url,
                   {{"enrollment", state_.enrollment_id},
                    {"todo", "portcullisd enrollment approve " + state_.enrollment_id}});
        announced = true;
        next_announce = steady_ms() + 10 * 60 * 1000;
      }
    }
    sleep(jitter(backoff, 20), stop);
    backoff = std::min(backoff * 2, cap);
  }
  return Outcome::kRetry;
}

Agent::Outcome Agent::refresh_tokens() {
  auto r = client_.post(kTokenRefreshPath, {{"refresh_token", state_.refresh_token}});
  if (!r) {
    log_warning("token refresh failed, retrying", {{"error", r.error().message()}});
    note_error(r.error().message());
    return Outcome::kRetry;
  }
  if (r->status == 401 && r->error == "refresh_token_reused") {
    return terminal("token_reused",
                    "the gateway saw a refresh token of this device used twice and revoked every "
                    "token (a copy of this agent's state may exist elsewhere): restart the agent "
                    "to poll its enrollment again");
  }
  if (r->status == 403) {
    return terminal("revoked", "this device was revoked at the gateway (" + r->describe() +
                                   "): to enroll again remove " + config_.state_dir + "/" +
                                   kIdentityFile + " and restart");
  }
  if (r->status == 401) {
    // Refresh token expired, revoked or unknown: the agent key is the root of identity, and an
    // approved enrollment poll issues a fresh pair.
    log_info("refresh token not accepted, polling the enrollment", {{"answer", r->describe()}});
    bool approved = false;
    auto o = poll_enrollment(&approved);
    if (o == Outcome::kTerminal) return o;
    return approved ? Outcome::kOk : Outcome::kRetry;
  }
  if (!r->ok() || !r->body.is_object()) {
    log_warning("token refresh refused, retrying", {{"answer", r->describe()}});
    note_error("token/refresh: " + r->describe());
    return Outcome::kRetry;
  }
  state_.access_token = r->body.value("access_token", "");
  state_.access_expires_at = r->body.value("access_expires_at", std::int64_t{0});
  state_.refresh_token = r->body.value("refresh_token", "");
  state_.refresh_expires_at = r->body.value("refresh_expires_at", std::int64_t{0});
  save();
  log_debug("tokens refreshed", {{"expires_at", std::to_string(state_.access_expires_at)}});
  return Outcome::kOk;
}

Result<ApiReply> Agent::bearer_post(const std::string& path, const json& body, Outcome* outcome) {
  *outcome = Outcome::kOk;
  if (state_.access_expires_at - clock_() < kRefreshBeforeS) {
    *outcome = refresh_tokens();
    if (*outcome != Outcome::kOk) return fail_errno(EAGAIN, "no valid access token");
  }
  auto r = client_.post(path, body, state_.access_token);
  if (r && r->status == 401 && (r->error == "token_expired" || r->error == "invalid_token")) {
    *outcome = refresh_tokens();
    if (*outcome != Outcome::kOk) return fail_errno(EAGAIN, "no valid access token");
    r = client_.post(path, body, state_.access_token);
  }
  if (r && r->status == 403 && r->error == "device_revoked") {
    *outcome = terminal("revoked",
                        "this device was revoked at the gateway: the tunnel is removed; "
                        "to enroll again remove " +
                            config_.state_dir + "/" + kIdentityFile + " and restart");
  }
  return r;
}

Agent::Outcome Agent::ensure(const std::string& reason) {
  Outcome o;
  auto r = bearer_post(kEnsurePath, json::object(), &o);
  if (o == Outcome::kTerminal) return o;
  if (!r) {
    log_warning("vpn/ensure failed, retrying", {{"error", r.error().message()}});
    note_error(r.error().message());
    return Outcome::kRetry;
  }
  if (!r->ok()) {
    log_warning("vpn/ensure refused, retrying", {{"answer", r->describe()}});
    note_error("vpn/ensure: " + r->describe());
    return Outcome::kRetry;
  }
  auto doc = verify_document(r->body, *state_.gateway_signing_key, state_.device_id, clock_());
  if (!doc) {
    log_error("orchestration document refused, nothing applied",
              {{"error", doc.error().message()}});
    note_error(doc.error().message());
    return Outcome::kRetry;
  }
  auto endpoint = resolve_endpoint(doc->gateway_endpoint);
  if (!endpoint) {
    log_warning("gateway endpoint not resolved, nothing applied",
                {{"error", endpoint.error().message()}});
    note_error(endpoint.error().message());
    return Outcome::kRetry;
  }
  const bool healing = reason != "start" && reason != "approved" && reason != "periodic";
  auto changed = tunnel_.apply(*doc, *endpoint);
  if (!changed) {
    log_error("tunnel not configured", {{"error", changed.error().message()}});
    note_error(changed.error().message());
    document_.reset();
    return Outcome::kRetry;
  }
  document_ = *doc;
  last_ensure_ = clock_();
  board_.update([&](AgentStatus& s) {
    ++s.ensures;
    if (healing && *changed) ++s.heals;
    s.last_error.clear();
  });
  log_event(*changed ? LogLevel::kNotice : LogLevel::kInfo,
            *changed ? "tunnel configured" : "tunnel unchanged",
            {{"reason", reason},
             {"ifname", config_.interface},
             {"ip", doc->address.to_string()},
             {"gateway", doc->gateway_address.to_string()},
             {"endpoint", endpoint->to_string()},
             {"gateway_key", doc->gateway_wg_public_key.short_name()}});
  return ready();
}

Agent::Outcome Agent::ready() {
  for (int attempt = 0; attempt < 3; ++attempt) {
    Outcome o;
    auto r = bearer_post(kReadyPath, json::object(), &o);
    if (o == Outcome::kTerminal) return o;
    if (r && r->ok()) return Outcome::kOk;
    const std::string why = r ? r->describe() : r.error().message();
    if (r && r->status != 503) {
      log_warning("vpn/ready refused", {{"answer", why}});
      return Outcome::kOk;  // the tunnel is configured; the next ensure asks again
    }
    log_info("gateway not ready for this tunnel yet, asking again", {{"answer", why}});
  }
  return Outcome::kOk;
}

void Agent::heartbeat(const TunnelObservation& o) {
  json body = {{"rx_bytes", o.rx_bytes}, {"tx_bytes", o.tx_bytes}};
  if (o.handshake_age_s) body["handshake_age_s"] = *o.handshake_age_s;
  Outcome outcome;
  auto r = bearer_post(kHeartbeatPath, body, &outcome);
  if (outcome == Outcome::kTerminal) return;
  if (!r || !r->ok()) {
    const std::string why = r ? r->describe() : r.error().message();
    log_warning("heartbeat failed", {{"error", why}});
    note_error("heartbeat: " + why);
  }
}

void Agent::details() {
  Outcome outcome;
  auto r = bearer_post(kDetailsPath,
                       {{"inventory", collect_inventory(hostname_, config_.interface)}}, &outcome);
  if (outcome == Outcome::kTerminal) return;
  if (!r || !r->ok()) {
    log_warning("details failed", {{"error", r ? r->describe() : r.error().message()}});
  }
}

int Agent::run(const std::atomic<bool>& stop) {
  const std::string path = config_.state_dir + "/" + kEnrollmentFile;
  auto loaded = load_enrollment(path, identity_);
  if (!loaded) {
    log_error("enrollment state unreadable, enrolling again with the same identity",
              {{"error", loaded.error().message()}});
  } else if (*loaded && (*loaded)->gateway_url != config_.gateway_url) {
    log_notice("gateway_url changed since enrollment, enrolling with the new gateway",
               {{"was", (*loaded)->gateway_url}, {"now", config_.gateway_url}});
  } else if (*loaded) {
    state_ = std::move(**loaded);
    board_.update([&](AgentStatus& s) {
      s.enrolled = state_.approved();
      s.device_id = state_.device_id;
    });
  }
  log_info("agent starting", {{"hostname", hostname_},
                              {"gateway", config_.gateway_url},
                              {"ifname", config_.interface},
                              {"agent_key", identity_.public_key().short_name()},
                              {"enrolled", state_.approved() ? "yes" : "no"}});

  bool stopped = false;  // terminal state reached
  bool failing = false;
  std::int64_t backoff = 1000;
  std::int64_t next_ensure = 0, next_heartbeat = 0, next_details = 0;
  std::string reason = "start";
  while (!stop.load()) {
    retry_save();
    if (stopped) {
      sleep(1000, stop);
      continue;
    }
    if (!state_.approved()) {
      auto o = enroll(stop);
      if (o == Outcome::kTerminal) stopped = true;
      if (o != Outcome::kOk) continue;
      if (!state_.approved()) continue;
      reason = "approved";
      next_ensure = 0;
    }
    const std::int64_t now = steady_ms();
    const std::int64_t unix_now = clock_();
    TunnelObservation obs;
    if (document_) {
      obs = tunnel_.observe(*document_, unix_now);
      std::string why;
      if (!obs.present) {
        why = "interface missing";
      } else if (!obs.correct) {
        why = "interface wrong: " + obs.problem;
      } else if (unix_now - last_ensure_ >= config_.handshake_max_age_s &&
                 (!obs.handshake_age_s || *obs.handshake_age_s > config_.handshake_max_age_s)) {
        why = "handshake older than " + std::to_string(config_.handshake_max_age_s) + " s";
      }
      if (!why.empty() && (!failing || now >= next_ensure)) {
        if (reason != why) log_warning("tunnel needs repair", {{"why", why}});
        reason = why;
        next_ensure = now;
      }
      board_.update([&](AgentStatus& s) {
        s.state = obs.present && obs.correct ? "tunnel_up" : "tunnel_down";
        s.tunnel = !obs.present ? "absent" : obs.correct ? "up" : "broken";
        s.handshake_age_s = obs.handshake_age_s;
        s.rx_bytes = obs.rx_bytes;
        s.tx_bytes = obs.tx_bytes;
      });
    }
    if (now >= next_ensure) {
      auto o = ensure(reason);
      if (o == Outcome::kTerminal) {
        stopped = true;
        continue;
      }
      if (o == Outcome::kOk) {
        failing = false;
        backoff = 1000;
        reason = "periodic";
        next_ensure = steady_ms() + jitter(std::int64_t{config_.ensure_interval_s} * 1000, 10);
        board_.update([](AgentStatus& s) {
          s.state = "tunnel_up";
          s.tunnel = "up";
        });
      } else {
        failing = true;
        next_ensure = steady_ms() + jitter(backoff, 20);
        backoff = std::min(backoff * 2, kMaxRetryBackoffMs);
        board_.update([](AgentStatus& s) { s.state = "tunnel_down"; });
      }
    }
    if (document_ && now >= next_heartbeat) {
      heartbeat(obs);
      next_heartbeat = now + std::int64_t{config_.heartbeat_interval_s} * 1000;
    }
    if (document_ && now >= next_details) {
      details();
      next_details = now + kDetailsIntervalMs;
    }
    if (board_.snapshot().state == "revoked" || board_.snapshot().state == "token_reused") {
      stopped = true;
      continue;
    }
    if (state_.approved() && state_.access_expires_at - clock_() < kRefreshBeforeS) {
      if (refresh_tokens() == Outcome::kTerminal) stopped = true;
    }
    sleep(1000, stop);
  }
  board_.update([](AgentStatus& s) { s.state = "stopped"; });
  log_notice("agent stopping; the tunnel stays up", {{"ifname", config_.interface}});
  return 0;
}

}  // namespace portcullis::agent
