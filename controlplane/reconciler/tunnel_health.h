#pragma once
// Tunnel health per device, from the handshake times of a WireGuard read:
//   fresh  handshake age <  fresh_after  (WireGuard re-keys every 2 minutes while traffic or
//                                        keepalives flow, so a live tunnel stays under 180 s)
//   stale  handshake age <  dead_after
//   dead   older, or no handshake ever
// A device seen for the first time starts in its state without a transition; later changes are
// transitions. Snapshots are immutable and shared, so readers (/metrics, the API) never block a
// pass and a copy costs one atomic increment.

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/wireguard/device.h"

namespace portcullis::reconciler {

enum class TunnelState : std::uint8_t { kFresh = 0, kStale = 1, kDead = 2 };
inline constexpr std::size_t kTunnelStates = 3;
const char* tunnel_state_name(TunnelState s);  // "fresh", "stale", "dead"

struct HealthThresholds {
  std::int64_t fresh_after = 180;  // seconds
  std::int64_t dead_after = 600;   // seconds
};

// `last_handshake` in Unix seconds, 0 for never.
TunnelState classify_tunnel(std::int64_t last_handshake, std::int64_t now,
                            const HealthThresholds& t);

struct TunnelHealth {
  std::string device;
  TunnelState state = TunnelState::kDead;
  std::int64_t since = 0;           // Unix seconds: when this process saw it enter `state`
  std::int64_t last_handshake = 0;  // Unix seconds, 0: never
  std::uint64_t rx_bytes = 0;
  std::uint64_t tx_bytes = 0;

  // Seconds since the last handshake at `now`; nothing if there never was one.
  std::optional<std::int64_t> handshake_age(std::int64_t now) const;
};

struct HealthSnapshot {
  std::int64_t taken_at = 0;                        // Unix seconds
  std::vector<TunnelHealth> tunnels;                // sorted by device id
  std::array<std::size_t, kTunnelStates> counts{};  // by TunnelState

  const TunnelHealth* find(std::string_view device) const;  // binary search
};

struct TunnelTransition {
  std::string device;
  TunnelState from = TunnelState::kDead;
  TunnelState to = TunnelState::kDead;
  std::int64_t last_handshake = 0;
};

// One observed tunnel: the device and its peer in the read (null: the peer is not in the
// kernel, e.g. not added yet).
struct TunnelObservation {
  const std::string* device;
  const wg::Peer* peer;
};

class HealthTracker {
 public:
  explicit HealthTracker(HealthThresholds t) : thresholds_(t) {}

  // Replaces the snapshot with these tunnels (devices not listed are forgotten) and returns the
  // transitions since the previous update.
  std::vector<TunnelTransition> update(const std::vector<TunnelObservation>& tunnels,
                                       std::int64_t now);

  std::shared_ptr<const HealthSnapshot> snapshot() const;

 private:
  HealthThresholds thresholds_;
  mutable std::mutex mu_;  // guards the pointer only
  std::shared_ptr<const HealthSnapshot> current_ = std::make_shared<HealthSnapshot>();
};

}  // namespace portcullis::reconciler
