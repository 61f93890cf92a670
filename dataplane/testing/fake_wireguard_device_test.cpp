#include "dataplane/testing/fake_wireguard_device.h"

#include <gtest/gtest.h>

#include "dataplane/wireguard/peer_diff.h"

namespace portcullis::testing {
namespace {

using wg::DeviceDelta;
using wg::PeerChange;

Key key(std::uint8_t n) {
  KeyBytes b{};
  b[0] = n;
  b[31] = 0x40;
  return Key(b);
}

IpPrefix prefix(const char* s) { return *IpPrefix::parse(s); }

PeerChange add(std::uint8_t n, std::vector<const char*> ips) {
  PeerChange c;
  c.public_key = key(n);
  c.allowed_ips.emplace();
  for (const char* ip : ips) c.allowed_ips->push_back(prefix(ip));
  return c;
}

DeviceDelta delta(std::vector<PeerChange> peers) {
  DeviceDelta d;
  d.peers = std::move(peers);
  return d;
}

PeerChange change(std::uint8_t n) {
  PeerChange c;
  c.public_key = key(n);
  return c;
}

SecretKey secret(std::uint8_t n) {
  KeyBytes b{};
  b.fill(n);
  return SecretKey(b);
}

TEST(FakeWireguardDevice, AppliesPeersAndPrintsStableText) {
  FakeWireguardDevice dev("pcl0");
  DeviceDelta d;
  d.listen_port = 30000;
  d.fwmark = 0x51;
  auto p2 = add(2, {"10.255.0.3/32"});
  p2.endpoint = *Endpoint::parse("192.0.2.1:51820");
  p2.persistent_keepalive = 25;
  p2.preshared_key = secret(9);
  d.peers = {add(1, {"10.255.0.2/32", "fd00::2/128"}), p2};
  ASSERT_TRUE(dev.apply(d));

  auto st = dev.read();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->ifname, "pcl0");
  EXPECT_EQ(st->listen_port, 30000);
  ASSERT_EQ(st->peers.size(), 2u);
  EXPECT_EQ(st->peers[0].public_key, key(1));  // insertion order, as the kernel dumps them
  EXPECT_EQ(dev.apply_calls(), 1u);
  EXPECT_EQ(dev.peers_touched(), 2u);
  EXPECT_EQ(dev.to_text(),
            "interface pcl0\n"
            "  public-key (none)\n"
            "  private-key (none)\n"
            "  listen-port 30000\n"
            "  fwmark 0x51\n"
            "peer " +
                key(1).to_base64() +
                "\n"
                "  preshared-key (none)\n"
                "  endpoint (none)\n"
                "  allowed-ips 10.255.0.2/32, fd00::2/128\n"
                "  persistent-keepalive off\n"
                "peer " +
                key(2).to_base64() +
                "\n"
                "  preshared-key (set)\n"
                "  endpoint 192.0.2.1:51820\n"
                "  allowed-ips 10.255.0.3/32\n"
                "  persistent-keepalive 25\n");
  EXPECT_EQ(dev.to_text().find(secret(9).reveal_base64()), std::string::npos);
}

TEST(FakeWireguardDevice, UpdateOnlyAndRemoveOfMissingPeersDoNothing) {
  FakeWireguardDevice dev("pcl0");
  DeviceDelta d;
  auto upd = add(1, {"10.255.0.2/32"});
  upd.update_only = true;
  PeerChange rm;
  rm.public_key = key(2);
  rm.remove = true;
  d.peers = {upd, rm};
  ASSERT_TRUE(dev.apply(d));
  EXPECT_TRUE(dev.state().peers.empty());
  EXPECT_EQ(dev.peers_touched(), 2u);

  ASSERT_TRUE(dev.apply(delta({add(1, {"10.255.0.2/32"})})));
  upd.allowed_ips = std::vector<IpPrefix>{prefix("10.255.0.9/32")};
  ASSERT_TRUE(dev.apply(delta({upd})));
  EXPECT_EQ(dev.state().peers[0].allowed_ips, std::vector<IpPrefix>{prefix("10.255.0.9/32")});
  auto rm1 = change(1);
  rm1.remove = true;
  ASSERT_TRUE(dev.apply(delta({rm1})));
  EXPECT_TRUE(dev.state().peers.empty());
}

TEST(FakeWireguardDevice, AllowedIpsAreReplacedPerPeerMaskedAndMoveBetweenPeers) {
  FakeWireguardDevice dev("pcl0");
  ASSERT_TRUE(
      dev.apply(delta({add(1, {"10.255.0.2/32", "10.1.0.0/16"}), add(2, {"10.255.0.3/32"})})));
  // Peer 2 takes 10.255.0.2/32 from peer 1; peer 1 keeps its other prefix.
  ASSERT_TRUE(dev.apply(delta({add(2, {"10.255.0.3/32", "10.255.0.2/32"})})));
  EXPECT_EQ(dev.state().peers[0].allowed_ips, std::vector<IpPrefix>{prefix("10.1.0.0/16")});
  EXPECT_EQ(dev.state().peers[1].allowed_ips,
            (std::vector<IpPrefix>{prefix("10.255.0.3/32"), prefix("10.255.0.2/32")}));
  // Host bits are cleared, duplicates kept once; an empty list clears.
  ASSERT_TRUE(dev.apply(delta({add(1, {"10.1.2.3/16", "10.1.0.0/16"})})));
  EXPECT_EQ(dev.state().peers[0].allowed_ips, std::vector<IpPrefix>{prefix("10.1.0.0/16")});
  ASSERT_TRUE(dev.apply(delta({add(2, {})})));
  EXPECT_TRUE(dev.state().peers[1].allowed_ips.empty());
  // A change without allowed_ips leaves them alone.
  PeerChange ka = change(1);
  ka.persistent_keepalive = 15;
  ASSERT_TRUE(dev.apply(delta({ka})));
  EXPECT_EQ(dev.state().peers[0].allowed_ips, std::vector<IpPrefix>{prefix("10.1.0.0/16")});
  EXPECT_EQ(dev.state().peers[0].persistent_keepalive, 15);
}

TEST(FakeWireguardDevice, ZeroPresharedKeyClearsAndEndpointStaysUnlessGiven) {
  FakeWireguardDevice dev("pcl0");
  auto p = add(1, {"10.255.0.2/32"});
  p.preshared_key = secret(3);
  p.endpoint = *Endpoint::parse("192.0.2.1:1000");
  ASSERT_TRUE(dev.apply(delta({p})));
  ASSERT_TRUE(dev.state().peers[0].preshared_key);
  PeerChange clear = change(1);
  clear.preshared_key = SecretKey();
  ASSERT_TRUE(dev.apply(delta({clear})));
  EXPECT_FALSE(dev.state().peers[0].preshared_key);
  EXPECT_EQ(dev.state().peers[0].endpoint, *Endpoint::parse("192.0.2.1:1000"));
}

TEST(FakeWireguardDevice, PrivateKeyRulesOfTheKernel) {
  FakeWireguardDevice dev("pcl0");
  SecretKey priv = SecretKey::generate_private();
  Key own = priv.public_key();
  PeerChange self;
  self.public_key = own;
  self.allowed_ips.emplace();
  ASSERT_TRUE(dev.apply(delta({self, add(1, {"10.255.0.2/32"})})));
  ASSERT_EQ(dev.state().peers.size(), 2u);
  // The new private key's public key is a peer's: that peer goes.
  DeviceDelta rekey;
  rekey.private_key = priv;
  ASSERT_TRUE(dev.apply(rekey));
  EXPECT_EQ(dev.state().public_key, own);
  ASSERT_EQ(dev.state().peers.size(), 1u);
  EXPECT_EQ(dev.state().peers[0].public_key, key(1));
  // A peer with the device's own key is ignored.
  ASSERT_TRUE(dev.apply(delta({self})));
  EXPECT_EQ(dev.state().peers.size(), 1u);
  // An all-zero private key clears it.
  rekey.private_key = SecretKey();
  ASSERT_TRUE(dev.apply(rekey));
  EXPECT_FALSE(dev.state().private_key);
  EXPECT_FALSE(dev.state().public_key);
}

TEST(FakeWireguardDevice, FailsTheNthApplyWholeOrPartWay) {
  FakeWireguardDevice dev("pcl0");
  dev.fail_apply(2, Error::from_errno(EINVAL, ""));
  ASSERT_TRUE(dev.apply(delta({add(1, {"10.255.0.2/32"})})));
  auto d = delta({add(2, {"10.255.0.3/32"})});
  d.listen_port = 5;
  auto r = dev.apply(d);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EINVAL);
  EXPECT_EQ(dev.state().peers.size(), 1u);  // nothing of the failed call
  EXPECT_EQ(dev.state().listen_port, 0);
  EXPECT_EQ(dev.apply_calls(), 2u);

  dev.fail_apply(1, Error::from_errno(ENOMEM, ""), 2);
  d = delta({add(3, {"10.255.0.4/32"}), add(4, {"10.255.0.5/32"}), add(5, {"10.255.0.6/32"}),
             add(6, {"10.255.0.7/32"})});
  d.listen_port = 7;
  r = dev.apply(d);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            "device 'pcl0': applied peers 1-2 of 4, not applied 3-4 starting at peer '" +
                key(5).short_name() + "…': Cannot allocate memory");
  EXPECT_EQ(dev.state().peers.size(), 3u);
  EXPECT_EQ(dev.state().listen_port, 7);

  ASSERT_TRUE(dev.apply(DeviceDelta{}));  // the failure was used up
}

TEST(FakeWireguardDevice, ReadFailureAndObservedFields) {
  FakeWireguardDevice dev("pcl0", 12);
  ASSERT_TRUE(dev.apply(delta({add(1, {"10.255.0.2/32"})})));
  dev.state().peers[0].rx_bytes = 4096;
  dev.fail_read(1, Error::from_errno(ENODEV, "read device 'pcl0'"));
  EXPECT_FALSE(dev.read());
  auto st = dev.read();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->ifindex, 12u);
  EXPECT_EQ(st->peers[0].rx_bytes, 4096u);
  EXPECT_EQ(dev.read_calls(), 2u);
}

TEST(FakeWireguardDevice, DiffThenApplyConvergesAndTouchesOnlyChangedPeers) {
  FakeWireguardDevice dev("pcl0");
  wg::DeviceConfig want;
  want.listen_port = 30000;
  for (std::uint8_t i = 1; i <= 20; ++i) {
    wg::Peer p;
    p.public_key = key(i);
    p.allowed_ips = {IpPrefix::host(IpAddress::v4_host_order(0x0aff0000u + i))};
    want.peers.push_back(p);
  }
  ASSERT_TRUE(dev.apply(wg::diff_device(want, *dev.read())));
  EXPECT_EQ(dev.peers_touched(), 20u);
  EXPECT_TRUE(wg::diff_device(want, *dev.read()).empty());

  want.peers[4].allowed_ips = {prefix("10.255.9.9/32")};
  want.peers.pop_back();
  ASSERT_TRUE(dev.apply(wg::diff_device(want, *dev.read())));
  EXPECT_EQ(dev.peers_touched(), 22u);
  EXPECT_TRUE(wg::diff_device(want, *dev.read()).empty());
  EXPECT_EQ(dev.state().peers.size(), 19u);
}

}  // namespace
}  // namespace portcullis::testing
