#include "dataplane/wireguard/peer_diff.h"

#include <gtest/gtest.h>

namespace portcullis::wg {
namespace {

Key key(std::uint8_t n) {
  KeyBytes b{};
  b[0] = n;
  b[31] = 0x40;
  return Key(b);
}

Peer peer(std::uint8_t n, const char* ip) {
  Peer p;
  p.public_key = key(n);
  p.allowed_ips = {*IpPrefix::parse(ip)};
  p.persistent_keepalive = 30;
  return p;
}

TEST(DiffDevice, UnchangedDeviceGivesEmptyDelta) {
  DeviceState have;
  have.listen_port = 30000;
  have.private_key = SecretKey::generate_private();
  have.peers = {peer(1, "10.255.0.2/32"), peer(2, "10.255.0.3/32")};
  have.peers[0].rx_bytes = 1234;  // observed-only fields never cause changes
  have.peers[0].endpoint = *Endpoint::parse("192.0.2.1:5000");
  DeviceConfig want;
  want.listen_port = 30000;
  want.private_key = have.private_key;
  want.peers = {peer(2, "10.255.0.3/32"), peer(1, "10.255.0.2/32")};
  EXPECT_TRUE(diff_device(want, have).empty());
}

TEST(DiffDevice, AddsRemovesAndUpdatesOnlyWhatChanged) {
  DeviceState have;
  have.peers = {peer(1, "10.255.0.2/32"), peer(2, "10.255.0.3/32"), peer(3, "10.255.0.4/32")};
  DeviceConfig want;
  want.peers = {peer(1, "10.255.0.2/32"), peer(3, "10.255.0.4/32"), peer(4, "10.255.0.5/32")};
  want.peers[1].persistent_keepalive = 25;

  auto d = diff_device(want, have);
  EXPECT_FALSE(d.private_key);
  EXPECT_FALSE(d.listen_port);
  ASSERT_EQ(d.peers.size(), 3u);
  EXPECT_EQ(d.peers[0].public_key, key(2));  // removals first
  EXPECT_TRUE(d.peers[0].remove);
  EXPECT_EQ(d.peers[1].public_key, key(3));
  EXPECT_TRUE(d.peers[1].update_only);
  EXPECT_EQ(d.peers[1].persistent_keepalive, 25);
  EXPECT_FALSE(d.peers[1].allowed_ips);  // unchanged fields are not sent
  EXPECT_FALSE(d.peers[1].endpoint);
  EXPECT_FALSE(d.peers[1].preshared_key);
  EXPECT_EQ(d.peers[2].public_key, key(4));
  EXPECT_FALSE(d.peers[2].update_only);
  EXPECT_FALSE(d.peers[2].remove);
  ASSERT_TRUE(d.peers[2].allowed_ips);
  EXPECT_EQ(d.peers[2].allowed_ips->at(0).to_string(), "10.255.0.5/32");
}

TEST(DiffDevice, AllowedIpsCompareAsMaskedSets) {
  DeviceState have;
  have.peers = {peer(1, "10.0.0.0/24")};
  have.peers[0].allowed_ips.push_back(*IpPrefix::parse("fd00::/64"));
  DeviceConfig want;
  want.peers = {peer(1, "fd00::1/64")};
  want.peers[0].allowed_ips.push_back(*IpPrefix::parse("10.0.0.7/24"));
  EXPECT_TRUE(diff_device(want, have).empty());

  want.peers[0].allowed_ips.push_back(*IpPrefix::parse("10.0.1.0/24"));
  auto d = diff_device(want, have);
  ASSERT_EQ(d.peers.size(), 1u);
  ASSERT_TRUE(d.peers[0].allowed_ips);
  EXPECT_EQ(d.peers[0].allowed_ips->size(), 3u);
}

TEST(DiffDevice, EndpointOnlyWhenWantedAndDifferent) {
  DeviceState have;
  have.peers = {peer(1, "10.255.0.2/32")};
  have.peers[0].endpoint = *Endpoint::parse("192.0.2.1:5000");  // the agent roamed here
  DeviceConfig want;
  want.peers = {peer(1, "10.255.0.2/32")};
  EXPECT_TRUE(diff_device(want, have).empty());
  want.peers[0].endpoint = *Endpoint::parse("192.0.2.9:5000");
  auto d = diff_device(want, have);
  ASSERT_EQ(d.peers.size(), 1u);
  EXPECT_EQ(d.peers[0].endpoint->to_string(), "192.0.2.9:5000");
}

TEST(DiffDevice, PresharedKeyIsSetAndCleared) {
  DeviceState have;
  have.peers = {peer(1, "10.255.0.2/32")};
  have.peers[0].preshared_key = SecretKey::generate_preshared();
  DeviceConfig want;
  want.peers = {peer(1, "10.255.0.2/32")};
  auto d = diff_device(want, have);
  ASSERT_EQ(d.peers.size(), 1u);
  ASSERT_TRUE(d.peers[0].preshared_key);
  EXPECT_TRUE(d.peers[0].preshared_key->is_zero());

  want.peers[0].preshared_key = have.peers[0].preshared_key;
  EXPECT_TRUE(diff_device(want, have).empty());
}

TEST(DiffDevice, DeviceFieldsChangeOnlyWhenGivenAndDifferent) {
  DeviceState have;
  have.listen_port = 30000;
  have.fwmark = 0;
  DeviceConfig want;
  EXPECT_TRUE(diff_device(want, have).empty());
  want.listen_port = 30001;
  want.fwmark = 0;
  want.private_key = SecretKey::generate_private();
  auto d = diff_device(want, have);
  EXPECT_EQ(d.listen_port, 30001);
  EXPECT_FALSE(d.fwmark);
  EXPECT_TRUE(d.private_key);
}

TEST(DiffDevice, TenThousandPeersOneChangeGivesOneChange) {
  DeviceState have;
  DeviceConfig want;
  for (int i = 0; i < 10000; ++i) {
    KeyBytes b{};
    b[0] = static_cast<std::uint8_t>(i);
    b[1] = static_cast<std::uint8_t>(i >> 8);
    Peer p;
    p.public_key = Key(b);
    p.allowed_ips = {IpPrefix::host(IpAddress::v4_host_order(0x0aff0002 + i))};
    have.peers.push_back(p);
    want.peers.push_back(p);
  }
  want.peers[5000].persistent_keepalive = 30;
  auto d = diff_device(want, have);
  ASSERT_EQ(d.peers.size(), 1u);
  EXPECT_EQ(d.peers[0].public_key, want.peers[5000].public_key);
}

}  // namespace
}  // namespace portcullis::wg
