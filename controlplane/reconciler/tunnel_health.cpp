#include "controlplane/reconciler/tunnel_health.h"

#include <algorithm>
#include <chrono>

namespace portcullis::reconciler {

const char* tunnel_state_name(TunnelState s) {
  switch (s) {
    case TunnelState::kFresh:
      return "fresh";
    case TunnelState::kStale:
      return "stale";
    case TunnelState::kDead:
      return "dead";
  }
  return "dead";
}

TunnelState classify_tunnel(std::int64_t last_handshake, std::int64_t now,
                            const HealthThresholds& t) {
  if (last_handshake <= 0) return TunnelState::kDead;
  std::int64_t age = std::max<std::int64_t>(0, now - last_handshake);  // clocks may disagree
  if (age < t.fresh_after) return TunnelState::kFresh;
  if (age < t.dead_after) return TunnelState::kStale;
  return TunnelState::kDead;
}

std::optional<std::int64_t> TunnelHealth::handshake_age(std::int64_t now) const {
  if (last_handshake <= 0) return std::nullopt;
  return std::max<std::int64_t>(0, now - last_handshake);
}

const TunnelHealth* HealthSnapshot::find(std::string_view device) const {
  auto it =
      std::lower_bound(tunnels.begin(), tunnels.end(), device,
                       [](const TunnelHealth& h, std::string_view d) { return h.device < d; });
  if (it == tunnels.end() || it->device != device) return nullptr;
  return &*it;
}

std::vector<TunnelTransition> HealthTracker::update(const std::vector<TunnelObservation>& tunnels,
                                                    std::int64_t now) {
  auto previous = snapshot();
  auto next = std::make_shared<HealthSnapshot>();
  next->taken_at = now;
  next->tunnels.reserve(tunnels.size());
  for (const auto& t : tunnels) {
    TunnelHealth h;
    h.device = *t.device;
    if (t.peer) {
      auto since_epoch = t.peer->last_handshake.time_since_epoch();
      h.last_handshake = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
      h.rx_bytes = t.peer->rx_bytes;
      h.tx_bytes = t.peer->tx_bytes;
    }
    h.state = classify_tunnel(h.last_handshake, now, thresholds_);
    h.since = now;
    next->tunnels.push_back(std::move(h));
  }
  std::sort(next->tunnels.begin(), next->tunnels.end(),
            [](const TunnelHealth& a, const TunnelHealth& b) { return a.device < b.device; });

  // Both sorted by device id: one merge walk.
  std::vector<TunnelTransition> transitions;
  auto old_it = previous->tunnels.begin();
  for (auto& h : next->tunnels) {
    while (old_it != previous->tunnels.end() && old_it->device < h.device) ++old_it;
    if (old_it != previous->tunnels.end() && old_it->device == h.device) {
      if (old_it->state == h.state) {
        h.since = old_it->since;
      } else {
        transitions.push_back({h.device, old_it->state, h.state, h.last_handshake});
      }
    }
    ++next->counts[static_cast<std::size_t>(h.state)];
  }

  std::lock_guard lock(mu_);
  current_ = std::move(next);
  return transitions;
}

std::shared_ptr<const HealthSnapshot> HealthTracker::snapshot() const {
  std::lock_guard lock(mu_);
  return current_;
}

}  // namespace portcullis::reconciler
