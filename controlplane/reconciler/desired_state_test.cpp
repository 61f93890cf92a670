#include "controlplane/reconciler/desired_state.h"

#include <gtest/gtest.h>

#include "controlplane/reconciler/testing/devices.h"

namespace portcullis::reconciler {
namespace {

using filter::Protocol;
using testing::device;
using testing::ip;
using testing::key_of;

GatewaySettings gateway() { return {SecretKey::generate_private(), 30000}; }

TEST(DesiredState, ActiveDeviceBecomesOnePeerAndItsFilterEntries) {
  auto d = desired_state(
      {device("dev-a", 1, "10.255.0.2", {{Protocol::kTcp, 5985}, {Protocol::kUdp, 3478}})},
      gateway());
  ASSERT_EQ(d.device.peers.size(), 1u);
  const auto& p = d.device.peers[0];
  EXPECT_EQ(p.public_key, key_of(1));
  EXPECT_EQ(p.allowed_ips, std::vector<IpPrefix>{*IpPrefix::parse("10.255.0.2/32")});
  EXPECT_FALSE(p.endpoint);  // agents roam
  EXPECT_EQ(p.persistent_keepalive, 0);
  EXPECT_FALSE(p.preshared_key);
  EXPECT_EQ(d.peer_devices, std::vector<std::string>{"dev-a"});
  EXPECT_EQ(d.device.listen_port, 30000);
  ASSERT_TRUE(d.device.private_key);

  ASSERT_EQ(d.contents.agents.size(), 1u);
  EXPECT_EQ(d.contents.agents[0].address, ip("10.255.0.2"));
  EXPECT_EQ(d.contents.agents[0].device, "dev-a");
  ASSERT_EQ(d.contents.allowed.size(), 2u);
  EXPECT_EQ(d.contents.allowed[0].protocol, Protocol::kTcp);
  EXPECT_EQ(d.contents.allowed[0].port, 5985);
  EXPECT_EQ(d.contents.allowed[0].device, "dev-a");
  EXPECT_EQ(d.contents.allowed[1].protocol, Protocol::kUdp);
  EXPECT_EQ(d.contents.allowed[1].port, 3478);
  EXPECT_TRUE(d.conflicts.empty());
}

TEST(DesiredState, RevokedAndAddresslessDevicesContributeNothing) {
  auto revoked = device("dev-r", 2, "10.255.0.3");
  revoked.status = state::DeviceStatus::kRevoked;
  auto d = desired_state({revoked, device("dev-n", 3, nullptr)}, gateway());
  EXPECT_TRUE(d.device.peers.empty());
  EXPECT_TRUE(d.contents.agents.empty());
  EXPECT_TRUE(d.contents.allowed.empty());
  EXPECT_TRUE(d.conflicts.empty());
}

TEST(DesiredState, DeviceWithoutPortsIsStillAKnownAgent) {
  auto d = desired_state({device("dev-a", 1, "10.255.0.2", {})}, gateway());
  EXPECT_EQ(d.device.peers.size(), 1u);
  EXPECT_EQ(d.contents.agents.size(), 1u);
  EXPECT_TRUE(d.contents.allowed.empty());
}

TEST(DesiredState, OrderDoesNotDependOnInput) {
  std::vector<state::Device> in = {device("dev-c", 9, "10.255.0.9"),
                                   device("dev-a", 5, "10.255.0.20"),
                                   device("dev-b", 1, "10.255.0.4")};
  auto a = desired_state(in, gateway());
  std::reverse(in.begin(), in.end());
  auto b = desired_state(in, gateway());
  ASSERT_EQ(a.device.peers.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a.device.peers[i].public_key, b.device.peers[i].public_key);
  }
  EXPECT_EQ(a.peer_devices, (std::vector<std::string>{"dev-b", "dev-a", "dev-c"}));  // by key
  EXPECT_EQ(a.peer_devices, b.peer_devices);
  EXPECT_EQ(a.contents.agents, b.contents.agents);
  EXPECT_EQ(a.contents.agents[0].address, ip("10.255.0.4"));  // by address
  EXPECT_EQ(a.contents.allowed, b.contents.allowed);
}

TEST(DesiredState, ConflictingDevicesAreLeftOutAndReported) {
  auto d = desired_state({device("dev-b", 1, "10.255.0.3"), device("dev-a", 1, "10.255.0.2"),
                          device("dev-c", 2, "10.255.0.2")},
                         gateway());
  ASSERT_EQ(d.device.peers.size(), 1u);
  EXPECT_EQ(d.peer_devices, std::vector<std::string>{"dev-a"});  // the lowest id wins
  ASSERT_EQ(d.conflicts.size(), 2u);
  EXPECT_NE(d.conflicts[0].find("device 'dev-b': WireGuard key"), std::string::npos);
  EXPECT_NE(d.conflicts[0].find("already used by device 'dev-a'"), std::string::npos);
  EXPECT_EQ(d.conflicts[1], "device 'dev-c': address 10.255.0.2 already used by device 'dev-a'");
  EXPECT_EQ(d.contents.agents.size(), 1u);
}

}  // namespace
}  // namespace portcullis::reconciler
