// The eBPF filter alone (no nftables) on a wireguard-go TUN interface (or kernel WireGuard in
// the VM), with real traffic.
//
//      pcl-op-<pid>  10.9.0.2/24, default via 10.9.0.1
//            | vo (veth)
//      pcl-gw-<pid>  vg 10.9.0.1/24, forwarding on; listens on tcp/2222
//            wg pclb<pid> 10.255.0.1/16 (wireguard-go), UDP 30000, BpfFilter on it
//       vg1 10.0.1.1/24               vg2 10.0.2.1/24       (veth underlay)
//            |                             |
//       pcl-a1-<pid> va 10.0.1.2/24   pcl-a2-<pid> va 10.0.2.2/24
//       wg pclb1<pid> 10.255.0.2/32   wg pclb2<pid> 10.255.0.3/32
//       routes 10.255.0.0/16 and 10.9.0.0/24 into the tunnel
//       each agent listens (socat echo) on tcp/5985, tcp/5986, tcp/22, udp/3478, udp/53
//
// Policy: agent 1 allows tcp/5985, tcp/5986, udp/3478; agent 2 allows tcp/5985.
// Topology setup uses ip/wg/wireguard-go/socat (tests may); the filter is BpfFilter only.
// Pins go to a bpffs mounted for the test; tc hooks, pins, namespaces and wireguard-go are
// removed even when an assertion fails.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/base/unique_fd.h"
#include "dataplane/bpf/bpf_filter.h"
#include "tests/support/bpffs.h"
#include "tests/support/netns.h"

namespace portcullis::bpf {
namespace {

using filter::AllowEntry;
using filter::Protocol;
using portcullis::testing::add_veth;
using portcullis::testing::NetnsGuard;
using portcullis::testing::RunResult;
using portcullis::testing::TestNetns;

// Our tc filter as `tc filter show` prints it (kTcHandle in bpf_filter.cpp).
constexpr const char* kTcHandleText = "handle 0x70636c";

// PORTCULLIS_WG_BACKEND=kernel (in the VM): kernel WireGuard instead of wireguard-go's TUN.
std::string create_wg(const std::string& ifname) {
  const char* b = std::getenv("PORTCULLIS_WG_BACKEND");
  if (b && std::string(b) == "kernel") return "ip link add " + ifname + " type wireguard";
  return "wireguard-go " + ifname;
}

// Seconds a connection that must NOT pass is given before we call it blocked: the VM
// emulates its CPU and is much slower.
int patience() {
  const char* b = std::getenv("PORTCULLIS_WG_BACKEND");
  return b && std::string(b) == "kernel" ? 8 : 2;
}

// Seconds an allowed exchange may take. It returns as soon as the echo is back, so a long limit
// costs nothing when things work; it only has to outlast a loaded host (one VM run under a load
// average of 12 measured 5 s round trips, its guest clock running 5x fast).
constexpr int kAllowedLimit = 30;

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

std::string agent_ip(int n) { return "10.255.0." + std::to_string(n + 1); }

// Removes the filter (tc hooks and pins) and unmounts the test's bpffs, whatever happened.
struct BpfCleanup {
  BpfFilter* filter = nullptr;
  const TestNetns* gw = nullptr;
  std::unique_ptr<portcullis::testing::PrivateBpffs> bpffs;  // unmounted after the filter went
  ~BpfCleanup() {
    if (filter && gw) {
      NetnsGuard in(*gw);
      (void)filter->remove();
    }
  }
};

class BpfFilterNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, tc, bpffs)";
    pid_ = std::to_string(::getpid());
    gw_ = std::make_unique<TestNetns>("gw");
    op_ = std::make_unique<TestNetns>("op");
    ASSERT_TRUE(gw_->ok() && op_->ok());
    for (int i = 1; i <= 2; ++i) {
      agents_.push_back(std::make_unique<TestNetns>("a" + std::to_string(i)));
      ASSERT_TRUE(agents_.back()->ok());
    }
    gw_if_ = "pclb" + pid_;

    ASSERT_TRUE(add_veth(*gw_, "vg", *op_, "vo"));
    sh(*gw_, "ip addr add 10.9.0.1/24 dev vg && sysctl -qw net.ipv4.ip_forward=1");
    sh(*op_, "ip addr add 10.9.0.2/24 dev vo && ip route add default via 10.9.0.1");

    std::vector<std::string> keys;
    for (int i = 1; i <= 2; ++i) {
      keys.push_back(run_ok("wg genkey"));
    }
    std::string gw_key = run_ok("wg genkey");
    std::string gw_pub = run_ok("echo " + gw_key + " | wg pubkey");

    sh(*gw_, create_wg(gw_if_) + " && echo " + gw_key + " > /tmp/" + gw_if_ + ".key && wg set " +
                 gw_if_ + " listen-port 30000 private-key /tmp/" + gw_if_ + ".key && rm /tmp/" +
                 gw_if_ + ".key && ip addr add 10.255.0.1/16 dev " + gw_if_ + " && ip link set " +
                 gw_if_ + " up");
    sh(*gw_, "socat TCP-LISTEN:2222,reuseaddr,fork EXEC:cat >/dev/null 2>&1 &");
    for (int i = 1; i <= 2; ++i) {
      std::string n = std::to_string(i);
      TestNetns& a = *agents_[i - 1];
      std::string ifname = "pclb" + n + pid_;
      agent_ifs_.push_back(ifname);
      ASSERT_TRUE(add_veth(*gw_, "vg" + n, a, "va"));
      sh(*gw_, "ip addr add 10.0." + n + ".1/24 dev vg" + n);
      sh(a, "ip addr add 10.0." + n + ".2/24 dev va");
      std::string pub = run_ok("echo " + keys[i - 1] + " | wg pubkey");
      // The gateway knows the agent before the agent's first handshake (else a 5 s retry).
      sh(*gw_, "wg set " + gw_if_ + " peer " + pub + " allowed-ips " + agent_ip(i) + "/32");
      sh(a, create_wg(ifname) + " && echo " + keys[i - 1] + " > /tmp/" + ifname +
                ".key && wg set " + ifname + " private-key /tmp/" + ifname + ".key peer " + gw_pub +
                " endpoint 10.0." + n + ".1:30000 allowed-ips 10.255.0.0/16,10.9.0.0/24" +
                " persistent-keepalive 1 && rm /tmp/" + ifname + ".key && ip addr add " +
                agent_ip(i) + "/32 dev " + ifname + " && ip link set " + ifname +
                " up && ip route add 10.255.0.0/16 dev " + ifname +
                " && ip route add 10.9.0.0/24 dev " + ifname);
      for (int port : {5985, 5986, 22}) {
        sh(a, "socat TCP-LISTEN:" + std::to_string(port) +
                  ",reuseaddr,fork EXEC:cat >/dev/null 2>&1 &");
      }
      for (int port : {3478, 53}) {
        sh(a, "socat UDP-LISTEN:" + std::to_string(port) +
                  ",reuseaddr,fork EXEC:cat >/dev/null 2>&1 &");
      }
    }

    cleanup_.bpffs = std::make_unique<portcullis::testing::PrivateBpffs>();
    ASSERT_TRUE(cleanup_.bpffs->ok()) << cleanup_.bpffs->error();
    BpfFilterOptions options;
    options.pin_root = cleanup_.bpffs->path() + "/portcullis";
    filter_ = std::make_unique<BpfFilter>(options);
    cleanup_.filter = filter_.get();
    cleanup_.gw = gw_.get();

    // Handshakes before the filter goes on (WireGuard's own UDP runs on the veths, unfiltered).
    for (auto& a : agents_) {
      sh(*a,
         "for i in 1 2 3 4 5 6 7 8 9 10; do ping -c 1 -W 1 10.255.0.1 >/dev/null && exit 0; "
         "done; exit 1");
    }
    build({{1, Protocol::kTcp, 5985},
           {1, Protocol::kTcp, 5986},
           {1, Protocol::kUdp, 3478},
           {2, Protocol::kTcp, 5985}});
  }

  void TearDown() override {
    // Filter first (needs the gateway namespace), then the namespaces (kills wireguard-go).
    if (filter_) {
      NetnsGuard in(*gw_);
      auto removed = filter_->remove();
      EXPECT_TRUE(removed) << removed.error().message();
      auto tc = gw_->run("tc filter show dev " + gw_if_ + " egress");
      EXPECT_EQ(tc.out.find(kTcHandleText), std::string::npos) << tc.out;
    }
    cleanup_.filter = nullptr;
    for (auto& ifname : agent_ifs_) ::unlink(("/var/run/wireguard/" + ifname + ".sock").c_str());
    ::unlink(("/var/run/wireguard/" + gw_if_ + ".sock").c_str());
  }

  void sh(const TestNetns& ns, const std::string& command) {
    RunResult r = ns.run(command);
    ASSERT_TRUE(r.ok()) << ns.name() << ": " << command;
  }
  std::string run_ok(const std::string& command) {
    RunResult r = portcullis::testing::run(command);
    EXPECT_TRUE(r.ok()) << command;
    while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
    return r.out;
  }

  struct Allow {
    int agent;
    Protocol protocol;
    std::uint16_t port;
  };
  static AllowEntry entry(const Allow& a) {
    return {ip(agent_ip(a.agent)), a.protocol, a.port, "agent-" + std::to_string(a.agent)};
  }

  void build(const std::vector<Allow>& allowed) {
    filter::FilterSettings s;
    s.tunnel_ifname = gw_if_;
    s.gateway_address = ip("10.255.0.1");
    s.agent_pool = *IpPrefix::parse("10.255.0.0/16");
    s.operator_networks = {*IpPrefix::parse("10.9.0.0/24")};
    filter::FilterContents c;
    for (int i = 1; i <= 2; ++i)
      c.agents.push_back({ip(agent_ip(i)), "agent-" + std::to_string(i)});
    for (const auto& a : allowed) c.allowed.push_back(entry(a));
    std::sort(c.allowed.begin(), c.allowed.end());
    NetnsGuard in(*gw_);
    auto built = filter_->build(s, c);
    ASSERT_TRUE(built) << built.error().message();
  }

  void apply(const filter::FilterDelta& d) {
    NetnsGuard in(*gw_);
    auto applied = filter_->apply(d);
    ASSERT_TRUE(applied) << applied.error().message();
  }

  // An exchange from `from`: connect (TCP) or send (UDP) "hello" to addr:port, read the echo
  // back, all within limit_s seconds. The client never half-closes: on EOF socat waits only its -t
  // (0.5 s) for the other side, on both ends, and a round trip through the VM's emulated CPU
  // (WireGuard both ways, a fork and exec of cat behind the echo server) can take longer. That,
  // not the filter, lost an allowed exchange now and then when the client was `echo | socat`.
  static bool echo_ok(const TestNetns& from, int type, const std::string& addr, int port,
                      int limit_s) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::seconds(limit_s);
    auto left_ms = [&] {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      return static_cast<int>(std::max<std::int64_t>(left.count(), 0));
    };
    UniqueFd sock;
    {
      NetnsGuard in(from);
      if (!in.ok()) return false;
      sock = UniqueFd(::socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    }
    if (!sock) return false;
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET, addr.c_str(), &to.sin_addr);
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&to), sizeof(to)) < 0) {
      if (errno != EINPROGRESS) return false;
      pollfd p{sock.get(), POLLOUT, 0};
      if (::poll(&p, 1, left_ms()) != 1) return false;
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) return false;
    }
    const std::string hello = "hello";
    if (::send(sock.get(), hello.data(), hello.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(hello.size())) {
      return false;
    }
    std::string got;
    while (got.size() < hello.size()) {
      pollfd p{sock.get(), POLLIN, 0};
      if (::poll(&p, 1, left_ms()) != 1) return false;
      char buf[64];
      ssize_t n = ::recv(sock.get(), buf, sizeof(buf), 0);
      if (n <= 0) return false;
      got.append(buf, static_cast<std::size_t>(n));
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    std::printf("echo %s %s:%d from %s: %lld ms\n", type == SOCK_STREAM ? "tcp" : "udp",
                addr.c_str(), port, from.name().c_str(), static_cast<long long>(ms.count()));
    return got.compare(0, hello.size(), hello) == 0;
  }
  static bool tcp_ok(const TestNetns& from, const std::string& addr, int port) {
    return echo_ok(from, SOCK_STREAM, addr, port, kAllowedLimit);
  }
  static bool udp_ok(const TestNetns& from, const std::string& addr, int port) {
    return echo_ok(from, SOCK_DGRAM, addr, port, kAllowedLimit);
  }
  static bool tcp_blocked(const TestNetns& from, const std::string& addr, int port) {
    return !echo_ok(from, SOCK_STREAM, addr, port, patience());
  }
  static bool udp_blocked(const TestNetns& from, const std::string& addr, int port) {
    return !echo_ok(from, SOCK_DGRAM, addr, port, patience());
  }

  std::uint64_t packets(const std::string& agent, std::uint8_t proto, std::uint16_t port,
                        Direction dir, VerdictReason reason) {
    auto rows = filter_->read_counters();
    EXPECT_TRUE(rows) << rows.error().message();
    std::uint64_t n = 0;
    if (!rows) return 0;
    for (const auto& r : *rows) {
      if (r.agent == ip(agent) && r.protocol == proto && r.port == port && r.direction == dir &&
          r.reason == reason) {
        n += r.packets;
      }
    }
    return n;
  }

  // `tc filter show` of the tunnel's egress: our filter with its program id ("... id 42 ...").
  std::string tc_egress_text() { return gw_->run("tc filter show dev " + gw_if_ + " egress").out; }

  // Every counter row, one a line, for failure messages.
  std::string counters_text() {
    NetnsGuard in(*gw_);
    auto rows = filter_->read_counters();
    if (!rows) return "counters: " + rows.error().message();
    std::string out = "counters:\n";
    for (const auto& r : *rows) {
      out += "  " + r.agent.to_string() + " " + std::to_string(r.protocol) + "/" +
             std::to_string(r.port) + " " + direction_name(r.direction) + " " +
             verdict_reason_name(r.reason) + " packets=" + std::to_string(r.packets) + "\n";
    }
    return out + gw_->run("wg show " + gw_if_ + " latest-handshakes").out;
  }

  std::string pid_;
  std::string gw_if_;
  std::vector<std::string> agent_ifs_;
  std::unique_ptr<TestNetns> gw_, op_;
  std::vector<std::unique_ptr<TestNetns>> agents_;
  // Declared after the namespaces: destroyed before them, cleanup_ before filter_.
  std::unique_ptr<BpfFilter> filter_;
  BpfCleanup cleanup_;
};

TEST_F(BpfFilterNetnsTest, EnforcesThePolicyAlone) {
  const TestNetns& a1 = *agents_[0];
  const TestNetns& a2 = *agents_[1];
  const std::string ip1 = agent_ip(1), ip2 = agent_ip(2);

  // Operator and gateway -> allowed ports.
  EXPECT_TRUE(tcp_ok(*op_, ip1, 5985)) << counters_text();
  EXPECT_TRUE(tcp_ok(*gw_, ip1, 5985)) << counters_text();
  EXPECT_TRUE(udp_ok(*op_, ip1, 3478)) << counters_text();
  EXPECT_TRUE(tcp_ok(*op_, ip2, 5985)) << counters_text();
  // Non-allowed ports.
  EXPECT_TRUE(tcp_blocked(*op_, ip1, 22));
  EXPECT_TRUE(udp_blocked(*op_, ip1, 53));
  EXPECT_TRUE(tcp_blocked(*op_, ip2, 5986));
  // Agent -> agent, agent -> gateway, agent -> operator: new connections fail.
  EXPECT_TRUE(tcp_blocked(a1, ip2, 5985));
  EXPECT_TRUE(tcp_blocked(a2, ip1, 5985));
  EXPECT_TRUE(tcp_blocked(a1, "10.255.0.1", 2222));
  EXPECT_TRUE(tcp_blocked(a1, "10.9.0.1", 2222));

  // Counters: exactly the device and port involved.
  constexpr std::uint8_t tcp = IPPROTO_TCP;
  NetnsGuard in(*gw_);
  EXPECT_GT(packets(ip1, tcp, 5985, Direction::kToAgent, VerdictReason::kAllowed), 0u);
  EXPECT_GT(packets(ip1, tcp, 5985, Direction::kFromAgent, VerdictReason::kAllowed), 0u);
  EXPECT_GT(packets(ip1, tcp, 22, Direction::kToAgent, VerdictReason::kPortNotAllowed), 0u);
  EXPECT_EQ(packets(ip2, tcp, 22, Direction::kToAgent, VerdictReason::kPortNotAllowed), 0u);
  EXPECT_GT(packets(ip2, tcp, 5986, Direction::kToAgent, VerdictReason::kPortNotAllowed), 0u);
  EXPECT_GT(packets(ip1, tcp, 5985, Direction::kFromAgent, VerdictReason::kAgentToAgent), 0u);
  EXPECT_GT(packets(ip1, tcp, 2222, Direction::kFromAgent, VerdictReason::kAgentInitiated), 0u);
  auto rows = filter_->read_counters();
  ASSERT_TRUE(rows);
  for (const auto& r : *rows) {
    if (r.agent.is_v4()) {
      EXPECT_EQ(r.device, r.agent == ip(ip1) ? "agent-1" : "agent-2") << r.agent;
    }
  }
}

TEST_F(BpfFilterNetnsTest, AddingOpensRemovingClosesAndCutsWithinOneSecond) {
  const std::string ip1 = agent_ip(1);
  EXPECT_TRUE(tcp_blocked(*op_, ip1, 22));
  filter::FilterDelta add;
  add.add_allowed = {entry({1, Protocol::kTcp, 22})};
  apply(add);
  EXPECT_TRUE(tcp_ok(*op_, ip1, 22));

  // An established connection from the operator to 5986 (echo).
  UniqueFd sock;
  {
    NetnsGuard in(*op_);
    ASSERT_TRUE(in.ok());
    sock = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  }
  ASSERT_TRUE(sock);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(5986);
  inet_pton(AF_INET, ip1.c_str(), &to.sin_addr);
  ASSERT_EQ(::connect(sock.get(), reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0)
      << std::strerror(errno);
  auto echo_within = [&](std::chrono::milliseconds limit) {
    if (::send(sock.get(), "x", 1, MSG_NOSIGNAL) != 1) return false;
    pollfd p{sock.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) != 1) return false;
    char c;
    return ::recv(sock.get(), &c, 1, 0) == 1 && c == 'x';
  };
  ASSERT_TRUE(echo_within(std::chrono::seconds(kAllowedLimit)));

  filter::FilterDelta remove;
  remove.remove_allowed = {entry({1, Protocol::kTcp, 5986}), entry({1, Protocol::kTcp, 22})};
  auto start = std::chrono::steady_clock::now();
  apply(remove);
  EXPECT_FALSE(echo_within(std::chrono::milliseconds(1000)))
      << "established connection to 5986 still passes after its port was removed";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
  EXPECT_TRUE(tcp_blocked(*op_, ip1, 22));
  {
    NetnsGuard in(*gw_);
    EXPECT_GT(packets(ip1, IPPROTO_TCP, 5986, Direction::kToAgent, VerdictReason::kPortNotAllowed),
              0u);
  }
  // Other entries are untouched.
  EXPECT_TRUE(tcp_ok(*op_, ip1, 5985));
}

// A second filter object, as after a daemon restart: it adopts the pins and the attached
// programs without a single changing call, and traffic and counters carry on.
TEST_F(BpfFilterNetnsTest, RestartAdoptsWithoutAChangeOrAGap) {
  const std::string ip1 = agent_ip(1);
  EXPECT_TRUE(tcp_ok(*op_, ip1, 5985)) << counters_text();
  BpfFilterOptions options;
  options.pin_root = cleanup_.bpffs->path() + "/portcullis";
  options.tunnel_ifname = gw_if_;
  BpfFilter restarted(options);
  {
    NetnsGuard in(*gw_);
    const std::string egress_before = tc_egress_text();
    ASSERT_NE(egress_before.find(kTcHandleText), std::string::npos) << egress_before;
    auto want = filter_->read();
    ASSERT_TRUE(want) << want.error().message();
    const std::uint64_t allowed_before =
        packets(ip1, IPPROTO_TCP, 5985, Direction::kToAgent, VerdictReason::kAllowed);

    auto have = restarted.read();
    ASSERT_TRUE(have) << have.error().message();
    EXPECT_EQ(have->allowed, want->allowed);
    EXPECT_EQ(have->agents, want->agents);
    filter::FilterSettings s;
    s.tunnel_ifname = gw_if_;
    s.gateway_address = ip("10.255.0.1");
    s.operator_networks = {*IpPrefix::parse("10.9.0.0/24")};
    auto check = restarted.check(s, *want);
    ASSERT_TRUE(check) << check.error().message();
    EXPECT_FALSE(check->rebuild) << check->why;
    EXPECT_TRUE(check->elements.empty());
    auto built = restarted.build(s, *want);
    ASSERT_TRUE(built) << built.error().message();
    EXPECT_EQ(restarted.changing_calls(), 0u);
    EXPECT_FALSE(restarted.notices().empty());
    for (const auto& n : restarted.notices()) EXPECT_NE(n.find("adopted"), std::string::npos) << n;
    auto counters = restarted.read_counters();
    ASSERT_TRUE(counters) << counters.error().message();
    std::uint64_t allowed_after = 0;
    for (const auto& r : *counters) {
      if (r.agent == ip(ip1) && r.port == 5985 && r.direction == Direction::kToAgent &&
          r.reason == VerdictReason::kAllowed) {
        allowed_after += r.packets;
      }
    }
    EXPECT_EQ(allowed_after, allowed_before) << "counters carry over";
    EXPECT_EQ(tc_egress_text(), egress_before) << "the same program stays attached";
  }
  EXPECT_TRUE(tcp_ok(*op_, ip1, 5985)) << counters_text();
  EXPECT_TRUE(tcp_blocked(*op_, ip1, 22));
}

}  // namespace
}  // namespace portcullis::bpf
