// NftablesFilter against the kernel: real WireGuard tunnels, real traffic, foreign tables present.
//
//   pcl-nftop-<pid>                 pcl-nftgw-<pid>
//   op0 192.168.50.2/24 ---veth--- gwop 192.168.50.1/24        (operator network, forwarded)
//   default via 192.168.50.1       wg pclnt<pid>: 10.255.0.1/16, UDP 30000   <- table inet
//   portcullis
//                                  vg1 10.0.1.1/24   vg2 10.0.2.1/24   vg3 10.0.3.1/24
//                                       |                 |                 |      (veth)
//                                  va 10.0.1.2/24    va 10.0.2.2/24    va 10.0.3.2/24
//                                  pcl-nfta1-<pid>   pcl-nfta2-<pid>   pcl-nfta3-<pid>
//                                  wg pclna1<pid>    wg pclna2<pid>    wg pclna3<pid>
//                                  10.255.0.2/32     10.255.0.3/32     10.255.0.4/32
//   Agents route 10.255.0.0/16 and 192.168.50.0/24 into their tunnel. Each agent listens on TCP
//   5985, 5900, 22, 8080 and UDP 3478, 5353; the gateway listens on TCP 10.255.0.1:7000.
//
// WireGuard: the kernel module when `ip link add type wireguard` works (the VM), else wireguard-go
// (the host). Sockets are opened in-process in each namespace (NetnsGuard), so no helper process
// has to be started or killed for traffic.
//
// Policy asserted: operator/gateway -> allowed agent port connects, other ports do not; agent ->
// agent and agent -> gateway do not; adding a port opens it; removing it closes it and cuts an
// established TCP connection and a UDP flow within 1 s (the ruleset stops them at commit; their
// conntrack entries are deleted after apply() returns, settle() waits for that); foreign tables
// (`table inet admin`, a Docker-like `table ip nat`) are intact after build/apply/remove; a
// rejected batch leaves the previous state; drift (deleted element, flushed or deleted table) is
// seen and repaired.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/base/unique_fd.h"
#include "dataplane/nftables/nftables_filter.h"
#include "tests/support/netns.h"
#include "tests/support/sockets.h"

namespace portcullis::nftables {
namespace {

using filter::AgentEntry;
using filter::AllowEntry;
using filter::FilterContents;
using filter::FilterDelta;
using filter::FilterSettings;
using filter::Protocol;
using portcullis::testing::add_veth;
using portcullis::testing::delivers;
using portcullis::testing::NetnsGuard;
using portcullis::testing::readable;
using portcullis::testing::run;
using portcullis::testing::sockaddr_of;
using portcullis::testing::tcp_connect;
using portcullis::testing::tcp_connects;
using portcullis::testing::tcp_listen;
using portcullis::testing::TestNetns;
using portcullis::testing::udp_bind;

constexpr int kNoConnectMs = 600;  // a dropped SYN: no answer in this time means "blocked"
constexpr int kCutWithinMs = 1000;

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

std::string pid() { return std::to_string(::getpid()); }

// One datagram from a fresh socket in `ns` to the server, and the server's answer back.
bool udp_round_trip(const TestNetns& ns, int server, const std::string& addr, std::uint16_t port,
                    int timeout_ms = kNoConnectMs) {
  UniqueFd client;
  {
    NetnsGuard in(ns);
    client = UniqueFd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  }
  auto sa = sockaddr_of(addr, port);
  if (::connect(client.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return false;
  if (::send(client.get(), "ping", 4, 0) != 4) return false;
  if (!readable(server, timeout_ms)) return false;
  char buf[64];
  sockaddr_in from{};
  socklen_t from_len = sizeof(from);
  const ssize_t n =
      ::recvfrom(server, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &from_len);
  if (n <= 0) return false;
  ::sendto(server, "pong", 4, 0, reinterpret_cast<sockaddr*>(&from), from_len);
  return readable(client.get(), timeout_ms) && ::recv(client.get(), buf, sizeof(buf), 0) == 4;
}

// Drains pending connections of a listener (non-blocking accept).
void drain(int listener) {
  while (readable(listener, 0)) {
    UniqueFd c(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) break;
  }
}

std::string nft(const TestNetns& ns, const std::string& args) {
  return ns.run("nft " + args + " 2>&1").out;
}

struct Agent {
  std::unique_ptr<TestNetns> ns;
  std::string ifname;
  std::string addr;  // tunnel address
  std::string device;
  UniqueFd tcp[4];  // 5985, 5900, 22, 8080
  UniqueFd udp[2];  // 3478, 5353
};

constexpr std::uint16_t kTcpPorts[] = {5985, 5900, 22, 8080};
constexpr std::uint16_t kUdpPorts[] = {3478, 5353};

class NftFilterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) {
      skip_ = "needs root";
      return;
    }
    world_ = std::make_unique<World>();
    if (auto err = world_->create(); !err.empty()) {
      setup_error_ = err;
    }
  }
  static void TearDownTestSuite() { world_.reset(); }

  void SetUp() override {
    if (!skip_.empty()) {
      GTEST_SKIP() << skip_;
    }
    ASSERT_TRUE(setup_error_.empty()) << "topology: " << setup_error_;
    NetnsGuard in(*world_->gw);
    ASSERT_TRUE(in.ok());
    auto f = NftablesFilter::open();
    ASSERT_TRUE(f) << f.error().message();
    filter_ = std::move(*f);
  }

  void TearDown() override {
    if (filter_) {
      EXPECT_TRUE(filter_->remove());
    }
    if (world_) {
      for (auto& a : world_->agents) {
        for (auto& l : a.tcp) drain(l.get());
      }
    }
  }

  struct World {
    std::unique_ptr<TestNetns> gw, op;
    std::vector<Agent> agents;
    std::string tun;
    UniqueFd gw_listener;

    ~World() {
      agents.clear();  // namespaces go first (TestNetns kills wireguard-go), then sockets
      for (const auto& name : wg_sockets) std::remove(name.c_str());
    }
    std::vector<std::string> wg_sockets;

    // Creates a WireGuard interface: the kernel module if present, else wireguard-go.
    bool create_wg(const TestNetns& ns, const std::string& ifname) {
      if (ns.run("ip link add " + ifname + " type wireguard 2>/dev/null").ok()) {
        std::printf("%s: kernel WireGuard\n", ifname.c_str());
        return true;
      }
      std::printf("%s: wireguard-go\n", ifname.c_str());
      wg_sockets.push_back("/var/run/wireguard/" + ifname + ".sock");
      return ns.run("wireguard-go " + ifname + " >/dev/null 2>&1").ok();
    }

    std::string create() {
      tun = "pclnt" + pid();
      gw = std::make_unique<TestNetns>("nftgw");
      op = std::make_unique<TestNetns>("nftop");
      if (!gw->ok() || !op->ok()) return "create namespaces";
      if (!add_veth(*op, "op0", *gw, "gwop")) return "veth operator";
      const std::string gw_key = run("wg genkey").out;
      const std::string gw_pub = run("echo '" + gw_key + "' | wg pubkey").out;
      std::string gw_peers;
      for (int n = 1; n <= 3; ++n) {
        Agent a;
        a.ns = std::make_unique<TestNetns>("nfta" + std::to_string(n));
        a.ifname = "pclna" + std::to_string(n) + pid();
        a.addr = "10.255.0." + std::to_string(n + 1);
        a.device = "dev-a" + std::to_string(n);
        if (!a.ns->ok()) return "create agent namespace";
        const std::string vg = "vg" + std::to_string(n);
        if (!add_veth(*gw, vg, *a.ns, "va")) return "veth agent";
        const std::string net = "10.0." + std::to_string(n) + ".";
        if (!gw->run("ip addr add " + net + "1/24 dev " + vg).ok()) return "gw veth addr";
        const std::string key = run("wg genkey").out;
        const std::string pub = run("echo '" + key + "' | wg pubkey").out;
        gw_peers += " peer " + pub.substr(0, pub.size() - 1) + " allowed-ips " + a.addr + "/32";
        if (!create_wg(*a.ns, a.ifname)) return "create wireguard " + a.ifname;
        const std::string setup =
            "set -e; ip link set lo up; ip addr add " + net + "2/24 dev va; " + "echo '" + key +
            "' | wg set " + a.ifname + " private-key /dev/stdin peer " +
            gw_pub.substr(0, gw_pub.size() - 1) + " endpoint " + net +
            "1:30000 allowed-ips 10.255.0.0/16,192.168.50.0/24 persistent-keepalive 1; " +
            "ip addr add " + a.addr + "/32 dev " + a.ifname + "; ip link set " + a.ifname +
            " up; ip route add 10.255.0.0/16 dev " + a.ifname +
            "; ip route add 192.168.50.0/24 dev " + a.ifname;
        if (!a.ns->run(setup).ok()) return "configure agent " + a.ifname;
        for (int i = 0; i < 4; ++i) a.tcp[i] = tcp_listen(*a.ns, "0.0.0.0", kTcpPorts[i]);
        for (int i = 0; i < 2; ++i) a.udp[i] = udp_bind(*a.ns, "0.0.0.0", kUdpPorts[i]);
        agents.push_back(std::move(a));
      }
      if (!create_wg(*gw, tun)) return "create wireguard " + tun;
      const std::string gw_setup =
          "set -e; ip link set lo up; ip addr add 192.168.50.1/24 dev gwop; sysctl -qw "
          "net.ipv4.ip_forward=1; echo '" +
          gw_key + "' | wg set " + tun + " listen-port 30000 private-key /dev/stdin" + gw_peers +
          "; ip addr add 10.255.0.1/16 dev " + tun + "; ip link set " + tun + " up";
      if (!gw->run(gw_setup).ok()) return "configure gateway";
      if (!op->run("set -e; ip link set lo up; ip addr add 192.168.50.2/24 dev op0; ip route add "
                   "default via 192.168.50.1")
               .ok()) {
        return "configure operator";
      }
      gw_listener = tcp_listen(*gw, "10.255.0.1", 7000);
      // Wait for every handshake (persistent keepalive 1 s).
      for (int i = 0; i < 100; ++i) {
        const std::string dump = gw->run("wg show " + tun + " latest-handshakes").out;
        int up = 0;
        for (std::size_t p = 0; (p = dump.find('\t', p)) != std::string::npos; ++p) {
          if (dump[p + 1] != '0') ++up;
        }
        if (up == 3) return "";
        ::usleep(100000);
      }
      return "handshakes did not complete: " + gw->run("wg show " + tun).out;
    }
  };

  FilterSettings settings() const {
    FilterSettings s;
    s.tunnel_ifname = world_->tun;
    s.gateway_address = ip("10.255.0.1");
    s.agent_pool = *IpPrefix::parse("10.255.0.0/16");
    s.operator_networks = {*IpPrefix::parse("192.168.50.0/24")};
    return s;
  }

  // a1: 5985/tcp, 5900/tcp, 3478/udp; a2: 5985/tcp; a3: known agent, nothing allowed.
  FilterContents contents() const {
    FilterContents c;
    for (const auto& a : world_->agents) c.agents.push_back({ip(a.addr), a.device});
    const auto& a1 = world_->agents[0];
    const auto& a2 = world_->agents[1];
    c.allowed = {{ip(a1.addr), Protocol::kTcp, 5985, a1.device},
                 {ip(a1.addr), Protocol::kTcp, 5900, a1.device},
                 {ip(a1.addr), Protocol::kUdp, 3478, a1.device},
                 {ip(a2.addr), Protocol::kTcp, 5985, a2.device}};
    std::sort(c.agents.begin(), c.agents.end());
    std::sort(c.allowed.begin(), c.allowed.end());
    return c;
  }

  Agent& agent(int n) { return world_->agents[n - 1]; }
  TestNetns& gw() { return *world_->gw; }
  TestNetns& op() { return *world_->op; }

  void install_foreign_tables() {
    const auto r = gw().run(
        "nft -f - 2>&1 <<'EOF'\n"
        "table inet admin {\n"
        "  chain input { type filter hook input priority 0; policy accept;\n"
        "    tcp dport 9999 counter accept comment \"admin rule\"; }\n"
        "}\n"
        "table ip nat {\n"
        "  chain POSTROUTING { type nat hook postrouting priority srcnat; policy accept;\n"
        "    oifname \"docker0\" ip saddr 172.17.0.0/16 masquerade; }\n"
        "}\n"
        "EOF\n");
    ASSERT_TRUE(r.ok()) << r.out;
  }
  std::string foreign_tables() {
    return nft(gw(), "list table inet admin") + nft(gw(), "list table ip nat");
  }

  static inline std::unique_ptr<World> world_;
  static inline std::string skip_;
  static inline std::string setup_error_;
  std::unique_ptr<NftablesFilter> filter_;
};

TEST_F(NftFilterTest, WithoutTheFilterEverythingPasses) {
  // The baseline that makes the policy assertions below meaningful.
  EXPECT_TRUE(tcp_connects(op(), agent(1).addr, 22, kNoConnectMs));
  {
    UniqueFd c = tcp_connect(*agent(1).ns, agent(2).addr, 5985, 3000);
    EXPECT_TRUE(c) << "agent to agent without the filter";
  }
  EXPECT_TRUE(tcp_connects(*agent(1).ns, "10.255.0.1", 7000, kNoConnectMs));
  drain(world_->gw_listener.get());
}

TEST_F(NftFilterTest, EnforcesThePolicyAndReadsLikeIt) {
  install_foreign_tables();
  const std::string foreign_before = foreign_tables();
  ASSERT_NE(foreign_before.find("admin rule"), std::string::npos) << foreign_before;

  ASSERT_TRUE(filter_->build(settings(), contents()));
  auto read = filter_->read();
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(read->allowed, contents().allowed);
  EXPECT_EQ(read->agents, contents().agents);
  EXPECT_EQ(read->allowed[0].device, "dev-a1");

  const std::string listing = nft(gw(), "list table inet portcullis");
  std::printf("%s", listing.c_str());
  for (const std::string& want : {
           std::string("table inet portcullis {"),
           std::string("comment \"Portcullis: operators reach allowed agent ports"),
           std::string("set agent-ports {"),
           std::string("type ipv4_addr . inet_proto . inet_service"),
           std::string("10.255.0.2 . tcp . 5985 comment \"dev-a1\""),
           std::string("10.255.0.2 . udp . 3478 comment \"dev-a1\""),
           std::string("set agents {"),
           std::string("10.255.0.4 comment \"dev-a3\""),
           std::string("set operator-networks {"),
           std::string("flags interval"),
           std::string("192.168.50.0/24"),
           std::string("type filter hook forward priority filter - 10; policy accept;"),
           std::string("oifname \"" + world_->tun +
                       "\" ct state new ip saddr @operator-networks ip daddr . meta l4proto . th "
                       "dport @agent-ports accept"),
           // Established flows pass only while their agent port is allowed.
           std::string("iifname \"" + world_->tun +
                       "\" ct state established,related ip saddr . meta l4proto . th sport "
                       "@agent-ports accept"),
           std::string("oifname \"" + world_->tun +
                       "\" ct state established,related ip daddr . meta l4proto . th dport "
                       "@agent-ports accept"),
           std::string("oifname \"" + world_->tun + "\" ct state related meta l4proto icmp accept"),
           std::string("iifname \"" + world_->tun + "\" oifname \"" + world_->tun +
                       "\" counter packets 0 bytes 0 drop comment \"agent to agent\""),
       }) {
    EXPECT_NE(listing.find(want), std::string::npos) << "missing: " << want;
  }

  // operator -> agent: allowed ports only
  EXPECT_TRUE(tcp_connects(op(), agent(1).addr, 5985, kNoConnectMs));
  EXPECT_TRUE(tcp_connects(op(), agent(1).addr, 5900, kNoConnectMs));
  EXPECT_FALSE(tcp_connects(op(), agent(1).addr, 22, kNoConnectMs));
  EXPECT_FALSE(tcp_connects(op(), agent(1).addr, 8080, kNoConnectMs));
  EXPECT_TRUE(tcp_connects(op(), agent(2).addr, 5985, kNoConnectMs));
  EXPECT_FALSE(tcp_connects(op(), agent(2).addr, 5900, kNoConnectMs));  // a1's port, not a2's
  EXPECT_FALSE(tcp_connects(op(), agent(3).addr, 5985, kNoConnectMs));
  EXPECT_TRUE(udp_round_trip(op(), agent(1).udp[0].get(), agent(1).addr, 3478));
  EXPECT_FALSE(udp_round_trip(op(), agent(1).udp[1].get(), agent(1).addr, 5353));
  EXPECT_FALSE(udp_round_trip(op(), agent(2).udp[0].get(), agent(2).addr, 3478));
  // gateway -> agent
  EXPECT_TRUE(tcp_connects(gw(), agent(1).addr, 5985, kNoConnectMs));
  EXPECT_FALSE(tcp_connects(gw(), agent(1).addr, 22, kNoConnectMs));
  // agent -> agent, even to a port operators may open; agent -> gateway
  EXPECT_FALSE(tcp_connects(*agent(1).ns, agent(2).addr, 5985, kNoConnectMs));
  EXPECT_FALSE(udp_round_trip(*agent(2).ns, agent(1).udp[0].get(), agent(1).addr, 3478));
  EXPECT_FALSE(tcp_connects(*agent(1).ns, "10.255.0.1", 7000, kNoConnectMs));
  EXPECT_FALSE(tcp_connects(*agent(3).ns, "192.168.50.2", 22, kNoConnectMs));

  // Counters: the agent-to-agent drop rule saw the SYNs.
  const std::string after = nft(gw(), "list chain inet portcullis filter-forward");
  EXPECT_EQ(after.find("counter packets 0 bytes 0 drop comment \"agent to agent\""),
            std::string::npos)
      << after;

  // apply, then remove: foreign tables intact throughout
  FilterDelta add;
  add.add_allowed = {{ip(agent(1).addr), Protocol::kTcp, 8080, agent(1).device}};
  ASSERT_TRUE(filter_->apply(add));
  EXPECT_TRUE(tcp_connects(op(), agent(1).addr, 8080, kNoConnectMs));
  EXPECT_EQ(foreign_tables(), foreign_before);
  ASSERT_TRUE(filter_->remove());
  EXPECT_NE(nft(gw(), "list table inet portcullis").find("No such file"), std::string::npos);
  EXPECT_EQ(foreign_tables(), foreign_before);
  EXPECT_TRUE(filter_->remove()) << "remove is idempotent";
  auto gone = filter_->read();
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().errno_value(), ENOENT);
  gw().run("nft delete table inet admin; nft delete table ip nat");
}

TEST_F(NftFilterTest, RemovingAPortClosesItAndCutsLiveFlows) {
  ASSERT_TRUE(filter_->build(settings(), contents()));
  Agent& a1 = agent(1);

  // An established TCP connection and a live UDP flow, both carrying data.
  UniqueFd client = tcp_connect(op(), a1.addr, 5985, kNoConnectMs);
  ASSERT_TRUE(client);
  ASSERT_TRUE(readable(a1.tcp[0].get(), 1000));
  UniqueFd server(::accept4(a1.tcp[0].get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  ASSERT_TRUE(delivers(client.get(), server.get(), 1000));
  ASSERT_TRUE(delivers(server.get(), client.get(), 1000));

  UniqueFd udp_client;
  {
    NetnsGuard in(op());
    udp_client = UniqueFd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  }
  auto sa = sockaddr_of(a1.addr, 3478);
  ASSERT_EQ(::connect(udp_client.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_TRUE(delivers(udp_client.get(), a1.udp[0].get(), 1000));

  FilterDelta remove;
  remove.remove_allowed = {{ip(a1.addr), Protocol::kTcp, 5985, a1.device},
                           {ip(a1.addr), Protocol::kUdp, 3478, a1.device}};
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(filter_->apply(remove));
  const auto apply_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  std::printf("apply(remove 2 entries + cut flows): %lld us\n",
              static_cast<long long>(apply_us.count()));

  // Both directions of both flows stop at once.
  EXPECT_FALSE(delivers(client.get(), server.get(), kCutWithinMs));
  EXPECT_FALSE(delivers(server.get(), client.get(), kCutWithinMs));
  EXPECT_FALSE(delivers(udp_client.get(), a1.udp[0].get(), kCutWithinMs));
  EXPECT_FALSE(tcp_connects(op(), a1.addr, 5985, kNoConnectMs));
  // The conntrack entries of the removed entries are deleted after apply() returns.
  EXPECT_TRUE(filter_->settle());
  // The other entries are untouched.
  EXPECT_TRUE(tcp_connects(op(), a1.addr, 5900, kNoConnectMs));
  EXPECT_TRUE(tcp_connects(op(), agent(2).addr, 5985, kNoConnectMs));

  // Revoking an agent cuts everything to it.
  UniqueFd c2 = tcp_connect(op(), agent(2).addr, 5985, kNoConnectMs);
  ASSERT_TRUE(c2);
  ASSERT_TRUE(readable(agent(2).tcp[0].get(), 1000));
  drain(agent(2).tcp[0].get());
  FilterDelta revoke;
  revoke.remove_agents = {{ip(agent(2).addr), agent(2).device}};
  revoke.remove_allowed = {{ip(agent(2).addr), Protocol::kTcp, 5985, agent(2).device}};
  ASSERT_TRUE(filter_->apply(revoke));
  EXPECT_TRUE(filter_->settle());
  EXPECT_FALSE(tcp_connects(op(), agent(2).addr, 5985, kNoConnectMs));
  auto now = filter_->read();
  ASSERT_TRUE(now);
  EXPECT_EQ(now->agents.size(), 2u);
  EXPECT_EQ(now->allowed.size(), 1u);  // 10.255.0.2 . tcp . 5900
}

TEST_F(NftFilterTest, RejectedBatchLeavesThePreviousStateInPlace) {
  ASSERT_TRUE(filter_->build(settings(), contents()));
  // -s: without counter values, which traffic of other checks changes.
  const std::string before = nft(gw(), "-s list table inet portcullis");

  // Adds one entry and deletes one that does not exist: the kernel must reject both.
  FilterDelta bad;
  bad.add_allowed = {{ip(agent(1).addr), Protocol::kTcp, 22, agent(1).device}};
  bad.remove_allowed = {{ip(agent(3).addr), Protocol::kUdp, 9, agent(3).device}};
  auto r = filter_->apply(bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ENOENT);
  std::printf("rejected batch: %s\n", r.error().message().c_str());
  EXPECT_NE(r.error().context().find("10.255.0.4 . udp . 9"), std::string::npos)
      << "the error names the failing element: " << r.error().message();

  EXPECT_EQ(nft(gw(), "-s list table inet portcullis"), before);
  auto read = filter_->read();
  ASSERT_TRUE(read);
  EXPECT_EQ(read->allowed, contents().allowed);
  EXPECT_FALSE(tcp_connects(op(), agent(1).addr, 22, kNoConnectMs));
  EXPECT_TRUE(tcp_connects(op(), agent(1).addr, 5985, kNoConnectMs));

  // A cold build that fails (invalid settings are refused before anything is sent).
  auto s = settings();
  s.tunnel_ifname = "this-name-is-too-long";
  EXPECT_FALSE(filter_->build(s, contents()));
  EXPECT_EQ(nft(gw(), "-s list table inet portcullis"), before);
}

TEST_F(NftFilterTest, DriftIsSeenAndRepaired) {
  const auto s = settings();
  const auto c = contents();
  ASSERT_TRUE(filter_->build(s, c));
  auto drift = filter_->check(s, c);
  ASSERT_TRUE(drift) << drift.error().message();
  EXPECT_TRUE(drift->empty()) << drift->to_string();

  // An element deleted behind our back.
  ASSERT_EQ(nft(gw(), "delete element inet portcullis agent-ports '{ " + agent(1).addr +
                          " . tcp . 5985 }'"),
            "");
  EXPECT_FALSE(tcp_connects(op(), agent(1).addr, 5985, kNoConnectMs));
  drift = filter_->check(s, c);
  ASSERT_TRUE(drift);
  ASSERT_EQ(drift->elements.add_allowed.size(), 1u) << drift->to_string();
  EXPECT_EQ(drift->elements.add_allowed[0].port, 5985);
  EXPECT_TRUE(drift->structure.empty()) << drift->to_string();
  std::printf("drift: %s\n", drift->to_string().c_str());
  ASSERT_TRUE(filter_->repair(s, c));
  EXPECT_TRUE(filter_->check(s, c)->empty());
  EXPECT_TRUE(tcp_connects(op(), agent(1).addr, 5985, kNoConnectMs));

  // A rule added and the table flushed (rules gone, sets emptied).
  nft(gw(), "insert rule inet portcullis filter-forward accept");
  drift = filter_->check(s, c);
  ASSERT_TRUE(drift);
  EXPECT_FALSE(drift->structure.empty());
  ASSERT_EQ(nft(gw(), "flush table inet portcullis"), "");
  EXPECT_TRUE(tcp_connects(*agent(1).ns, agent(2).addr, 5985, kNoConnectMs))
      << "flushed: nothing enforced";
  drift = filter_->check(s, c);
  ASSERT_TRUE(drift);
  EXPECT_FALSE(drift->structure.empty());
  std::printf("drift after flush:\n%s\n", drift->to_string().c_str());
  ASSERT_TRUE(filter_->repair(s, c));
  drift = filter_->check(s, c);
  ASSERT_TRUE(drift);
  EXPECT_TRUE(drift->empty()) << drift->to_string();
  EXPECT_FALSE(tcp_connects(*agent(1).ns, agent(2).addr, 5985, kNoConnectMs));

  // Operator networks changed in the settings: structure drift, cold build.
  auto s2 = s;
  s2.operator_networks.push_back(*IpPrefix::parse("198.51.100.0/24"));
  drift = filter_->check(s2, c);
  ASSERT_TRUE(drift);
  EXPECT_FALSE(drift->structure.empty());

  // The whole table deleted.
  ASSERT_EQ(nft(gw(), "delete table inet portcullis"), "");
  drift = filter_->check(s, c);
  ASSERT_TRUE(drift);
  EXPECT_TRUE(drift->table_missing);
  ASSERT_TRUE(filter_->repair(s, c));
  EXPECT_TRUE(filter_->check(s, c)->empty());
  EXPECT_TRUE(tcp_connects(op(), agent(1).addr, 5985, kNoConnectMs));
}

}  // namespace
}  // namespace portcullis::nftables
