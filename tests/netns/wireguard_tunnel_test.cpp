// WireGuard tunnels between a gateway and three agents, driven through WireguardDevice.
//
//                           pcl-gw-<pid>
//            wg pclg<pid>: 10.255.0.1/16, UDP 30000
//        vg1 10.0.1.1/24     vg2 10.0.2.1/24     vg3 10.0.3.1/24
//             |                   |                   |     (veth pairs)
//        va 10.0.1.2/24      va 10.0.2.2/24      va 10.0.3.2/24
//        pcl-a1-<pid>        pcl-a2-<pid>        pcl-a3-<pid>
//        wg pcla1<pid>       wg pcla2<pid>       wg pcla3<pid>
//        10.255.0.2/32       10.255.0.3/32       10.255.0.4/32   endpoint 10.0.N.1:30000
//
// Backend: PORTCULLIS_WG_BACKEND=userspace (default: wireguard-go started by ensure_wireguard_go,
// spoken to through UapiWireguardDevice) or kernel (`ip link add ... type wireguard` and
// KernelWireguardDevice; in the VM). wireguard-go's sockets live in /var/run/wireguard for every
// namespace, so interface names carry the PID too.
//
// Scenario: tunnels come up and the gateway pings each agent; then, with no traffic in between,
// adding a 4th peer, changing one peer's allowed IPs and removing one peer leave the other peers'
// handshake time and byte counters exactly as they were; read() gives back what was set; and
// `wg show <if> dump` agrees with read() field by field.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <thread>

#include "dataplane/wireguard/device.h"
#include "dataplane/wireguard/uapi_device.h"
#include "dataplane/wireguard/wireguard_go.h"
#include "tests/support/netns.h"

#if defined(PORTCULLIS_HAVE_KERNEL_WG) && __has_include("dataplane/wireguard/kernel_device.h")
#include "dataplane/wireguard/kernel_device.h"
#define PCL_KERNEL_BACKEND 1
#endif

namespace portcullis::wg {
namespace {

using portcullis::testing::add_veth;
using portcullis::testing::NetnsGuard;
using portcullis::testing::TestNetns;

constexpr std::uint16_t kGatewayPort = 30000;

bool kernel_backend() {
  const char* b = std::getenv("PORTCULLIS_WG_BACKEND");
  return b && std::string(b) == "kernel";
}

// One WireGuard interface in a namespace, and the device that drives it. Stops wireguard-go when
// destroyed (the namespace's destructor kills anything left).
struct WgNode {
  WgNode(const TestNetns& ns, std::string ifname) : ns(ns), ifname(std::move(ifname)) {}
  ~WgNode() {
    device.reset();
    if (!kernel_backend()) (void)stop_wireguard_go(ifname);
  }

  // Creates the interface and opens it; returns an empty string or what failed.
  std::string create() {
    NetnsGuard in(ns);
    if (!in.ok()) return "setns into " + ns.name();
    if (kernel_backend()) {
#ifdef PCL_KERNEL_BACKEND
      if (!ns.run("ip link add " + ifname + " type wireguard").ok()) return "ip link add wireguard";
      auto d = KernelWireguardDevice::open(ifname);
      if (!d) return d.error().message();
      device = std::move(*d);
      return "";
#else
      return "this build has no KernelWireguardDevice";
#endif
    }
    WireguardGoOptions o;
    o.ifname = ifname;
    auto started = ensure_wireguard_go(o);
    if (!started) return started.error().message();
    pid = *started;
    auto d = UapiWireguardDevice::open(ifname);
    if (!d) return d.error().message();
    device = std::move(*d);
    return "";
  }

  const TestNetns& ns;
  std::string ifname;
  pid_t pid = 0;
  std::unique_ptr<WireguardDevice> device;
  SecretKey private_key = SecretKey::generate_private();
};

IpPrefix prefix(const std::string& s) { return *IpPrefix::parse(s); }

DeviceDelta peers_only(std::vector<PeerChange> peers) {
  DeviceDelta d;
  d.peers = std::move(peers);
  return d;
}

std::vector<IpPrefix> sorted(std::vector<IpPrefix> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::int64_t handshake_sec(const Peer& p) {
  return std::chrono::duration_cast<std::chrono::seconds>(p.last_handshake.time_since_epoch())
      .count();
}

// Compares `wg show <if> dump` (run in the namespace) with our read(), field by field.
void expect_dump_matches(const WgNode& node, const DeviceState& state) {
  auto dump = node.ns.run("wg show " + node.ifname + " dump");
  ASSERT_TRUE(dump.ok()) << "wg show " << node.ifname << " dump";
  std::istringstream lines(dump.out);
  std::string line;
  ASSERT_TRUE(std::getline(lines, line));
  {
    std::istringstream f(line);
    std::string priv, pub, port, fwmark;
    f >> priv >> pub >> port >> fwmark;
    EXPECT_EQ(pub, state.public_key ? state.public_key->to_base64() : "(none)");
    EXPECT_EQ(priv, state.private_key ? state.private_key->reveal_base64() : "(none)");
    EXPECT_EQ(port, std::to_string(state.listen_port));
    EXPECT_EQ(fwmark, state.fwmark ? std::to_string(state.fwmark) : "off");
  }
  std::size_t peers = 0;
  while (std::getline(lines, line)) {
    ++peers;
    std::istringstream f(line);
    std::string pub, psk, endpoint, ips, handshake, rx, tx, keepalive;
    f >> pub >> psk >> endpoint >> ips >> handshake >> rx >> tx >> keepalive;
    auto key = Key::from_base64(pub);
    ASSERT_TRUE(key) << line;
    const Peer* p = state.find_peer(*key);
    ASSERT_NE(p, nullptr) << "wg shows peer " << pub << " that read() does not";
    SCOPED_TRACE("peer " + key->short_name());
    EXPECT_EQ(psk, p->preshared_key ? p->preshared_key->reveal_base64() : "(none)");
    EXPECT_EQ(endpoint, p->endpoint ? p->endpoint->to_string() : "(none)");
    std::vector<IpPrefix> wg_ips;
    if (ips != "(none)") {
      std::istringstream s(ips);
      for (std::string ip; std::getline(s, ip, ',');) wg_ips.push_back(prefix(ip));
    }
    EXPECT_EQ(sorted(wg_ips), sorted(p->allowed_ips));
    EXPECT_EQ(handshake, std::to_string(handshake_sec(*p)));
    EXPECT_EQ(rx, std::to_string(p->rx_bytes));
    EXPECT_EQ(tx, std::to_string(p->tx_bytes));
    EXPECT_EQ(keepalive, p->persistent_keepalive ? std::to_string(p->persistent_keepalive) : "off");
  }
  EXPECT_EQ(peers, state.peers.size());
}

class WireguardTunnelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    if (kernel_backend() && test == "WireguardGoIsSupervised") {
      GTEST_SKIP() << "userspace backend only";
    }
    std::string pid = std::to_string(::getpid());
    gw_ns_ = std::make_unique<TestNetns>("gw");
    ASSERT_TRUE(gw_ns_->ok()) << "ip netns add " << gw_ns_->name();
    gw_ = std::make_unique<WgNode>(*gw_ns_, "pclg" + pid);
    for (int i = 1; i <= 3; ++i) {
      agent_ns_.push_back(std::make_unique<TestNetns>("a" + std::to_string(i)));
      ASSERT_TRUE(agent_ns_.back()->ok());
      agents_.push_back(
          std::make_unique<WgNode>(*agent_ns_.back(), "pcla" + std::to_string(i) + pid));
      std::string n = std::to_string(i);
      ASSERT_TRUE(add_veth(*gw_ns_, "vg" + n, *agent_ns_.back(), "va"));
      ASSERT_TRUE(gw_ns_->run("ip addr add 10.0." + n + ".1/24 dev vg" + n).ok());
      ASSERT_TRUE(agent_ns_.back()->run("ip addr add 10.0." + n + ".2/24 dev va").ok());
    }
    std::string err = gw_->create();
    ASSERT_EQ(err, "") << "gateway " << gw_->ifname;
    for (auto& a : agents_) {
      err = a->create();
      ASSERT_EQ(err, "") << "agent " << a->ifname;
    }
  }

  void TearDown() override {
    agents_.clear();
    gw_.reset();
    agent_ns_.clear();
    gw_ns_.reset();
  }

  static Key agent_key(const WgNode& a) { return a.private_key.public_key(); }

  PeerChange gateway_peer_for(int i) {
    PeerChange c;
    c.public_key = agent_key(*agents_[i]);
    c.allowed_ips = std::vector<IpPrefix>{prefix("10.255.0." + std::to_string(i + 2) + "/32")};
    return c;
  }

  bool ping_from_gateway(const std::string& ip) {
    for (int attempt = 0; attempt < 5; ++attempt) {  // the first packet waits for a handshake
      if (gw_ns_->run("ping -c 1 -W 2 " + ip + " >/dev/null").ok()) return true;
    }
    return false;
  }

  std::unique_ptr<TestNetns> gw_ns_;
  std::vector<std::unique_ptr<TestNetns>> agent_ns_;
  std::unique_ptr<WgNode> gw_;
  std::vector<std::unique_ptr<WgNode>> agents_;
};

TEST_F(WireguardTunnelTest, PeersChangeWithoutDisturbingOthers) {
  // Gateway: key, port, one peer per agent.
  DeviceDelta gw_delta;
  gw_delta.private_key = gw_->private_key;
  gw_delta.listen_port = kGatewayPort;
  for (int i = 0; i < 3; ++i) gw_delta.peers.push_back(gateway_peer_for(i));
  auto st = gw_->device->apply(gw_delta);
  ASSERT_TRUE(st) << st.error().message();
  ASSERT_TRUE(gw_ns_->run("ip addr add 10.255.0.1/16 dev " + gw_->ifname).ok());
  ASSERT_TRUE(gw_ns_->run("ip link set " + gw_->ifname + " up").ok());

  // Agents: their key, the gateway as the one peer.
  SecretKey psk = SecretKey::generate_preshared();
  for (int i = 0; i < 3; ++i) {
    WgNode& a = *agents_[i];
    std::string n = std::to_string(i + 1), ip = "10.255.0." + std::to_string(i + 2);
    DeviceDelta d;
    d.private_key = a.private_key;
    PeerChange gw;
    gw.public_key = gw_->private_key.public_key();
    gw.endpoint = Endpoint(*IpAddress::parse("10.0." + n + ".1"), kGatewayPort);
    gw.allowed_ips = std::vector<IpPrefix>{prefix("10.255.0.1/32")};
    if (i == 0) gw.preshared_key = psk;
    d.peers = {gw};
    st = a.device->apply(d);
    ASSERT_TRUE(st) << st.error().message();
    ASSERT_TRUE(a.ns.run("ip addr add " + ip + "/32 peer 10.255.0.1 dev " + a.ifname).ok());
    ASSERT_TRUE(a.ns.run("ip link set " + a.ifname + " up").ok());
  }
  // The gateway needs the same preshared key for agent 1.
  PeerChange psk1;
  psk1.public_key = agent_key(*agents_[0]);
  psk1.update_only = true;
  psk1.preshared_key = psk;
  st = gw_->device->apply(peers_only({psk1}));
  ASSERT_TRUE(st) << st.error().message();

  // Agents dial in (the gateway learns their endpoints from the handshake); then the gateway
  // reaches each agent's /32.
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(agents_[i]->ns.run("ping -c 1 -W 3 10.255.0.1 >/dev/null").ok())
        << "agent " << i + 1;
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(ping_from_gateway("10.255.0." + std::to_string(i + 2))) << "agent " << i + 1;
  }

  // Agent side reads back what was set.
  for (int i = 0; i < 3; ++i) {
    auto s = agents_[i]->device->read();
    ASSERT_TRUE(s) << s.error().message();
    ASSERT_EQ(s->peers.size(), 1u);
    const Peer& p = s->peers[0];
    EXPECT_EQ(p.public_key, gw_->private_key.public_key());
    EXPECT_EQ(p.endpoint,
              Endpoint(*IpAddress::parse("10.0." + std::to_string(i + 1) + ".1"), kGatewayPort));
    EXPECT_EQ(p.allowed_ips, std::vector<IpPrefix>{prefix("10.255.0.1/32")});
    EXPECT_EQ(p.preshared_key.has_value(), i == 0);
    if (i == 0) {
      EXPECT_TRUE(p.preshared_key->equals(psk));
    }
    EXPECT_GT(p.rx_bytes, 0u);
    EXPECT_NE(p.last_handshake, Clock::time_point{});
    ASSERT_TRUE(s->public_key);
    EXPECT_EQ(*s->public_key, agents_[i]->private_key.public_key());
    expect_dump_matches(*agents_[i], *s);
  }

  // WireGuard sends a keepalive 10 s after the last data packet it received when it has sent
  // nothing since (the gateway, after the echo replies). Let that pass, so no packet moves
  // between the reads below and counters must match exactly.
  std::this_thread::sleep_for(std::chrono::seconds(11));

  auto before = gw_->device->read();
  ASSERT_TRUE(before) << before.error().message();
  ASSERT_EQ(before->peers.size(), 3u);
  EXPECT_EQ(before->listen_port, kGatewayPort);
  ASSERT_TRUE(before->private_key);
  EXPECT_TRUE(before->private_key->equals(gw_->private_key));
  for (int i = 0; i < 3; ++i) {
    const Peer* p = before->find_peer(agent_key(*agents_[i]));
    ASSERT_NE(p, nullptr);
    EXPECT_NE(p->last_handshake, Clock::time_point{}) << "agent " << i + 1;
    EXPECT_GT(p->rx_bytes, 0u);
    EXPECT_GT(p->tx_bytes, 0u);
    ASSERT_TRUE(p->endpoint);
    EXPECT_EQ(p->endpoint->address(), *IpAddress::parse("10.0." + std::to_string(i + 1) + ".2"));
    EXPECT_EQ(p->allowed_ips, gateway_peer_for(i).allowed_ips.value());
  }
  expect_dump_matches(*gw_, *before);

  auto unchanged = [&](const DeviceState& after, int i) {
    const Peer* b = before->find_peer(agent_key(*agents_[i]));
    const Peer* a = after.find_peer(agent_key(*agents_[i]));
    ASSERT_NE(a, nullptr) << "agent " << i + 1 << " lost its peer";
    EXPECT_EQ(a->last_handshake, b->last_handshake) << "agent " << i + 1;
    EXPECT_EQ(a->rx_bytes, b->rx_bytes) << "agent " << i + 1;
    EXPECT_EQ(a->tx_bytes, b->tx_bytes) << "agent " << i + 1;
    EXPECT_EQ(a->endpoint, b->endpoint) << "agent " << i + 1;
  };

  // 1. Add a 4th peer (no agent behind it).
  Key fourth = SecretKey::generate_private().public_key();
  PeerChange add;
  add.public_key = fourth;
  add.persistent_keepalive = 0;
  add.allowed_ips = std::vector<IpPrefix>{prefix("10.255.0.5/32")};
  st = gw_->device->apply(peers_only({add}));
  ASSERT_TRUE(st) << st.error().message();
  auto after_add = gw_->device->read();
  ASSERT_TRUE(after_add) << after_add.error().message();
  ASSERT_EQ(after_add->peers.size(), 4u);
  for (int i = 0; i < 3; ++i) unchanged(*after_add, i);
  const Peer* p4 = after_add->find_peer(fourth);
  ASSERT_NE(p4, nullptr);
  EXPECT_EQ(p4->allowed_ips, add.allowed_ips.value());
  EXPECT_FALSE(p4->endpoint);
  EXPECT_EQ(p4->last_handshake, Clock::time_point{});

  // 2. Update agent 2's allowed IPs in place.
  PeerChange update;
  update.public_key = agent_key(*agents_[1]);
  update.update_only = true;
  update.allowed_ips = std::vector<IpPrefix>{prefix("10.255.0.3/32"), prefix("10.255.1.0/24")};
  st = gw_->device->apply(peers_only({update}));
  ASSERT_TRUE(st) << st.error().message();
  auto after_update = gw_->device->read();
  ASSERT_TRUE(after_update) << after_update.error().message();
  for (int i = 0; i < 3; ++i) unchanged(*after_update, i);  // agent 2 keeps its session too
  EXPECT_EQ(sorted(after_update->find_peer(update.public_key)->allowed_ips),
            sorted(update.allowed_ips.value()));

  // update_only on a peer that does not exist creates nothing.
  PeerChange ghost;
  ghost.public_key = SecretKey::generate_private().public_key();
  ghost.update_only = true;
  ghost.persistent_keepalive = 5;
  st = gw_->device->apply(peers_only({ghost}));
  ASSERT_TRUE(st) << st.error().message();

  // 3. Remove agent 3.
  PeerChange remove;
  remove.public_key = agent_key(*agents_[2]);
  remove.remove = true;
  st = gw_->device->apply(peers_only({remove}));
  ASSERT_TRUE(st) << st.error().message();
  auto after_remove = gw_->device->read();
  ASSERT_TRUE(after_remove) << after_remove.error().message();
  EXPECT_EQ(after_remove->peers.size(), 3u);  // agents 1, 2 and the 4th
  EXPECT_EQ(after_remove->find_peer(remove.public_key), nullptr);
  EXPECT_EQ(after_remove->find_peer(ghost.public_key), nullptr);
  unchanged(*after_remove, 0);
  unchanged(*after_remove, 1);
  expect_dump_matches(*gw_, *after_remove);

  // The survivors still carry traffic; the removed agent does not.
  EXPECT_TRUE(ping_from_gateway("10.255.0.2"));
  EXPECT_TRUE(ping_from_gateway("10.255.0.3"));
  EXPECT_FALSE(gw_ns_->run("ping -c 1 -W 1 10.255.0.4 >/dev/null 2>&1").ok());
}

TEST_F(WireguardTunnelTest, WireguardGoIsSupervised) {
  // Already running: ensure_wireguard_go leaves it alone and reports the same pid.
  {
    NetnsGuard in(*gw_ns_);
    WireguardGoOptions o;
    o.ifname = gw_->ifname;
    auto again = ensure_wireguard_go(o);
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(*again, gw_->pid);
  }
  // It runs in a session of its own (survives our exit and our process group's signals).
  EXPECT_NE(::getsid(gw_->pid), ::getsid(0));
  EXPECT_NE(::getpgid(gw_->pid), ::getpgid(0));
  EXPECT_EQ(wireguard_go_pid(gw_->ifname), gw_->pid);

  // Stopping it removes the socket and the TUN link, and the device says it is not running.
  auto st = stop_wireguard_go(gw_->ifname);
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_NE(::access(("/var/run/wireguard/" + gw_->ifname + ".sock").c_str(), F_OK), 0);
  EXPECT_FALSE(gw_ns_->run("ip link show " + gw_->ifname + " 2>/dev/null").ok());
  auto r = gw_->device->read();
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), ::testing::HasSubstr("is not running"));

  // A socket left by a killed wireguard-go (bound, nobody listening) does not stop a restart.
  {
    std::string path = "/var/run/wireguard/" + gw_->ifname + ".sock";
    UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  {
    NetnsGuard in(*gw_ns_);
    WireguardGoOptions o;
    o.ifname = gw_->ifname;
    auto restarted = ensure_wireguard_go(o);
    ASSERT_TRUE(restarted) << restarted.error().message();
    EXPECT_NE(*restarted, gw_->pid);
  }
  EXPECT_TRUE(gw_ns_->run("ip link show " + gw_->ifname + " >/dev/null").ok());
  auto fresh = gw_->device->read();
  ASSERT_TRUE(fresh) << fresh.error().message();
  EXPECT_TRUE(fresh->peers.empty());  // a new process starts empty: the reconciler re-applies

  // Deleting the TUN link also makes wireguard-go exit.
  WgNode& a = *agents_[0];
  ASSERT_TRUE(a.ns.run("ip link del " + a.ifname).ok());
  for (int i = 0; i < 200 && ::kill(a.pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto gone = wireguard_go_pid(a.ifname);
  EXPECT_FALSE(gone);
}

}  // namespace
}  // namespace portcullis::wg

namespace portcullis::wg {
namespace {

// 10,000 peers go in as several bounded transactions / messages, read back complete, and half of
// them can be removed in one delta. Prints the time each step took.
TEST(WireguardScaleTest, TenThousandPeers) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
  constexpr std::uint32_t kPeers = 10000;
  TestNetns ns("scale");
  ASSERT_TRUE(ns.ok());
  WgNode gw(ns, "pcls" + std::to_string(::getpid()));
  std::string err = gw.create();
  ASSERT_EQ(err, "");

  DeviceDelta add;
  add.private_key = gw.private_key;
  add.listen_port = kGatewayPort;
  std::vector<Key> keys;
  for (std::uint32_t i = 0; i < kPeers; ++i) {
    keys.push_back(SecretKey::generate_private().public_key());
    PeerChange c;
    c.public_key = keys.back();
    c.allowed_ips =
        std::vector<IpPrefix>{IpPrefix::host(IpAddress::v4_host_order(0x0aff0002u + i))};
    add.peers.push_back(c);
  }
  auto t0 = std::chrono::steady_clock::now();
  auto st = gw.device->apply(add);
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(st) << st.error().message();
  auto state = gw.device->read();
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(state) << state.error().message();
  ASSERT_EQ(state->peers.size(), kPeers);
  const Peer* last = state->find_peer(keys.back());
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(last->allowed_ips, add.peers.back().allowed_ips.value());

  DeviceDelta remove;
  for (std::uint32_t i = 0; i < kPeers; i += 2) {
    PeerChange c;
    c.public_key = keys[i];
    c.remove = true;
    remove.peers.push_back(c);
  }
  auto t3 = std::chrono::steady_clock::now();
  st = gw.device->apply(remove);
  auto t4 = std::chrono::steady_clock::now();
  ASSERT_TRUE(st) << st.error().message();
  auto after = gw.device->read();
  ASSERT_TRUE(after) << after.error().message();
  EXPECT_EQ(after->peers.size(), kPeers / 2);
  EXPECT_EQ(after->find_peer(keys[0]), nullptr);
  EXPECT_NE(after->find_peer(keys[1]), nullptr);

  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::printf("backend=%s peers=%u apply_add_ms=%lld read_ms=%lld apply_remove_half_ms=%lld\n",
              kernel_backend() ? "kernel" : "userspace", kPeers,
              static_cast<long long>(ms(t1 - t0)), static_cast<long long>(ms(t2 - t1)),
              static_cast<long long>(ms(t4 - t3)));
}

}  // namespace
}  // namespace portcullis::wg
