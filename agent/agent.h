#pragma once
// The agent's life: enroll -> wait for approval -> vpn/ensure -> verify the signed document ->
// bring up its interface -> vpn/ready -> heal and report.
//
//   enroll/request (signed)  -> enroll/poll (signed) with exponential backoff and jitter, until
//                               approved (tokens and the gateway signing key, pinned from then on)
//                               or denied
//   ensure: at start, every ensure_interval_s (±10 %), when the interface is gone or wrong, and
//           when the last handshake is older than handshake_max_age_s
//   heartbeat every heartbeat_interval_s; details (inventory) after each start and every 6 h
//   tokens: refreshed 60 s before the access token expires
//   state: enrollment.sealed is rewritten after each change; when that fails (a full disk) the
//          agent goes on with the state in memory and writes it again with backoff
//   device_revoked / refresh_token_reused / enrollment denied: the interface is removed, the
//   reason is logged, and the agent waits (no restart loop) until it is stopped.

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/agent_config.h"
#include "agent/agent_protocol.h"
#include "agent/gateway_client.h"
#include "agent/identity.h"
#include "agent/tunnel.h"

namespace portcullis::agent {

using UnixClock = std::function<std::int64_t()>;

// What /healthz and /metrics show.
struct AgentStatus {
  std::string state = "starting";  // starting | enrolling | pending | denied | tunnel_up |
                                   // tunnel_down | revoked | token_reused | stopped
  bool enrolled = false;
  std::string device_id;
  std::string tunnel = "absent";  // absent | up | broken
  std::optional<std::int64_t> handshake_age_s;
  std::uint64_t rx_bytes = 0;
  std::uint64_t tx_bytes = 0;
  std::string last_error;
  std::uint64_t ensures = 0;
  std::uint64_t heals = 0;
  std::uint64_t errors = 0;

  bool healthy() const;
  nlohmann::json to_json() const;
  std::string to_prometheus() const;
};

class StatusBoard {
 public:
  AgentStatus snapshot() const {
    std::lock_guard l(mutex_);
    return status_;
  }
  template <class F>
  void update(F&& f) {
    std::lock_guard l(mutex_);
    f(status_);
  }

 private:
  mutable std::mutex mutex_;
  AgentStatus status_;
};

class Agent {
 public:
  // `tunnel`: a TunnelController, or in portcullis-agent the TunnelClient that asks the tunnel
  // keeper process (the agent itself holds no capability and not the WireGuard private key).
  Agent(AgentConfig config, AgentIdentity identity, const Key& wg_public_key, Tunnel& tunnel,
        StatusBoard& board, UnixClock clock);

  // Runs until `stop` becomes true. Returns the process exit status.
  int run(const std::atomic<bool>& stop);

 private:
  enum class Outcome { kOk, kRetry, kTerminal };

  Outcome enroll(const std::atomic<bool>& stop);
  Outcome request_enrollment();
  Outcome poll_enrollment(bool* approved);
  Outcome ensure(const std::string& reason);
  Outcome ready();
  Outcome refresh_tokens();
  // A Bearer call with one refresh-and-retry on token_expired; terminal answers handled.
  Result<ApiReply> bearer_post(const std::string& path, const nlohmann::json& body,
                               Outcome* outcome);
  void heartbeat(const TunnelObservation& o);
  void details();
  Outcome terminal(const std::string& state, const std::string& why);
  // Persists state_; on failure (a full disk) keeps it in memory and retry_save() tries again
  // 1 s, 2 s, 4 s ... 60 s later.
  bool save();
  void retry_save();
  void note_error(const std::string& what);
  bool sleep(std::int64_t ms, const std::atomic<bool>& stop);
  std::int64_t jitter(std::int64_t ms, int percent);

  AgentConfig config_;
  AgentIdentity identity_;
  std::string hostname_;
  std::string wg_public_key_;
  StatusBoard& board_;
  UnixClock clock_;
  GatewayClient client_;
  Tunnel& tunnel_;
  EnrollmentState state_;
  std::optional<TunnelDocument> document_;  // last applied
  std::int64_t last_ensure_ = 0;
  std::int64_t request_backoff_ms_ = 1000;  // next wait after a failed enroll/request
  bool unsaved_ = false;                    // state_ is newer than enrollment.sealed
  std::int64_t next_save_ms_ = 0;           // steady clock
  std::int64_t save_backoff_ms_ = 1000;
};

}  // namespace portcullis::agent
