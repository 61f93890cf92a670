#include "controlplane/reconciler/tunnel_health.h"

#include <gtest/gtest.h>

namespace portcullis::reconciler {
namespace {

constexpr std::int64_t kNow = 1'700'000'000;

TEST(TunnelHealth, ClassifiesByHandshakeAge) {
  HealthThresholds t;  // 180 s, 600 s
  EXPECT_EQ(classify_tunnel(kNow - 5, kNow, t), TunnelState::kFresh);
  EXPECT_EQ(classify_tunnel(kNow - 179, kNow, t), TunnelState::kFresh);
  EXPECT_EQ(classify_tunnel(kNow - 180, kNow, t), TunnelState::kStale);
  EXPECT_EQ(classify_tunnel(kNow - 599, kNow, t), TunnelState::kStale);
  EXPECT_EQ(classify_tunnel(kNow - 600, kNow, t), TunnelState::kDead);
  EXPECT_EQ(classify_tunnel(0, kNow, t), TunnelState::kDead);           // never
  EXPECT_EQ(classify_tunnel(kNow + 30, kNow, t), TunnelState::kFresh);  // clock skew
}

wg::Peer peer_with_handshake(std::int64_t at, std::uint64_t rx = 0, std::uint64_t tx = 0) {
  wg::Peer p;
  p.last_handshake = wg::Clock::time_point(std::chrono::seconds(at));
  p.rx_bytes = rx;
  p.tx_bytes = tx;
  return p;
}

TEST(TunnelHealth, FirstSightingIsNoTransitionLaterChangesAre) {
  HealthTracker tracker({});
  std::string a = "dev-a", b = "dev-b";
  auto pa = peer_with_handshake(kNow - 10, 100, 200);
  auto transitions = tracker.update({{&b, nullptr}, {&a, &pa}}, kNow);
  EXPECT_TRUE(transitions.empty());
  auto snap = tracker.snapshot();
  ASSERT_EQ(snap->tunnels.size(), 2u);
  EXPECT_EQ(snap->tunnels[0].device, "dev-a");  // sorted
  EXPECT_EQ(snap->counts[0], 1u);               // fresh
  EXPECT_EQ(snap->counts[2], 1u);               // dead: dev-b never handshook
  const TunnelHealth* h = snap->find("dev-a");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->state, TunnelState::kFresh);
  EXPECT_EQ(h->rx_bytes, 100u);
  EXPECT_EQ(h->tx_bytes, 200u);
  EXPECT_EQ(h->handshake_age(kNow + 5), 15);
  EXPECT_FALSE(snap->find("dev-b")->handshake_age(kNow));
  EXPECT_EQ(snap->find("dev-c"), nullptr);

  // 200 s later: dev-a is stale; dev-b handshook.
  auto pb = peer_with_handshake(kNow + 190);
  transitions = tracker.update({{&a, &pa}, {&b, &pb}}, kNow + 200);
  ASSERT_EQ(transitions.size(), 2u);
  EXPECT_EQ(transitions[0].device, "dev-a");
  EXPECT_EQ(transitions[0].from, TunnelState::kFresh);
  EXPECT_EQ(transitions[0].to, TunnelState::kStale);
  EXPECT_EQ(transitions[1].device, "dev-b");
  EXPECT_EQ(transitions[1].from, TunnelState::kDead);
  EXPECT_EQ(transitions[1].to, TunnelState::kFresh);
  EXPECT_EQ(tracker.snapshot()->find("dev-a")->since, kNow + 200);

  // Unchanged state keeps its `since`; a dropped device is forgotten without a transition.
  transitions = tracker.update({{&a, &pa}}, kNow + 300);
  EXPECT_TRUE(transitions.empty());
  EXPECT_EQ(tracker.snapshot()->find("dev-a")->since, kNow + 200);
  EXPECT_EQ(tracker.snapshot()->tunnels.size(), 1u);

  // The old snapshot stays valid for whoever holds it.
  EXPECT_EQ(snap->tunnels.size(), 2u);
}

}  // namespace
}  // namespace portcullis::reconciler
