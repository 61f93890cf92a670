// BPF_PROG_TEST_RUN tables for pcl_tc_egress / pcl_tc_ingress: each case feeds one packet to
// one program and checks the verdict and the one counter it must move. The maps are filled
// through BpfFilter, so the loader's key layout is tested along with the programs.
//
// Policy under test:
//   operators 192.0.2.0/24 and the gateway 10.255.0.1 may reach
//     agent A 10.255.0.2: tcp/5985, udp/3478      agent B 10.255.0.3: tcp/5900
//   agents may only answer flows opened toward them.
// BPF_PROG_TEST_RUN hands tc programs an Ethernet frame, so the programs are loaded with a
// 14-byte L2 header here (0 on the real tunnel device).

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bpf/portcullis_filter.h"
#include "dataplane/bpf/bpf_filter.h"
#include "tests/support/bpffs.h"

namespace portcullis::bpf {
namespace {

using filter::AllowEntry;
using filter::Protocol;

constexpr const char* kAgentA = "10.255.0.2";
constexpr const char* kAgentB = "10.255.0.3";
constexpr const char* kGateway = "10.255.0.1";
constexpr const char* kOperator = "192.0.2.10";
constexpr const char* kStranger = "198.51.100.7";
constexpr std::uint16_t kEphemeral = 40000;

IpAddress ip(const char* text) { return *IpAddress::parse(text); }

// --- Packet builders: Ethernet + IPv4 + TCP/UDP, network byte order. ---

struct Packet {
  std::vector<std::uint8_t> bytes;

  void u8(std::uint8_t v) { bytes.push_back(v); }
  void u16(std::uint16_t v) {
    u8(v >> 8);
    u8(v & 0xff);
  }
  void addr(const char* text) {
    in_addr a;
    inet_pton(AF_INET, text, &a);
    auto* p = reinterpret_cast<const std::uint8_t*>(&a);
    bytes.insert(bytes.end(), p, p + 4);
  }
};

Packet ethernet(std::uint16_t ethertype) {
  Packet p;
  p.bytes.assign(12, 0x02);  // destination and source MAC
  p.u16(ethertype);
  return p;
}

struct Ipv4Options {
  std::uint16_t frag_off = 0x4000;  // DF
  std::uint8_t ihl = 5;
};

Packet ipv4(const char* src, const char* dst, std::uint8_t proto, std::size_t l4_len,
            Ipv4Options o = {}) {
  Packet p = ethernet(0x0800);
  p.u8(0x40 | o.ihl);
  p.u8(0);
  p.u16(static_cast<std::uint16_t>(20 + l4_len));
  p.u16(0x1234);  // id
  p.u16(o.frag_off);
  p.u8(64);  // ttl
  p.u8(proto);
  p.u16(0);  // checksum: not checked by the programs
  p.addr(src);
  p.addr(dst);
  return p;
}

Packet tcp(const char* src, std::uint16_t sport, const char* dst, std::uint16_t dport,
           std::uint8_t flags = 0x02 /* SYN */) {
  Packet p = ipv4(src, dst, IPPROTO_TCP, 20);
  p.u16(sport);
  p.u16(dport);
  p.u16(0), p.u16(1);  // seq
  p.u16(0), p.u16(0);  // ack
  p.u8(0x50);          // data offset 5
  p.u8(flags);
  p.u16(64240);  // window
  p.u16(0), p.u16(0);
  return p;
}

Packet udp(const char* src, std::uint16_t sport, const char* dst, std::uint16_t dport) {
  Packet p = ipv4(src, dst, IPPROTO_UDP, 12);
  p.u16(sport);
  p.u16(dport);
  p.u16(12);
  p.u16(0);
  p.bytes.insert(p.bytes.end(), {'p', 'i', 'n', 'g'});
  return p;
}

Packet fragment(const char* src, const char* dst) {
  Packet p = ipv4(src, dst, IPPROTO_UDP, 8, {.frag_off = 0x2000 /* MF */});
  p.u16(50000), p.u16(3478), p.u16(8), p.u16(0);
  return p;
}

Packet icmp_echo(const char* src, const char* dst) {
  Packet p = ipv4(src, dst, IPPROTO_ICMP, 8);
  p.u8(8), p.u8(0), p.u16(0), p.u16(1), p.u16(1);
  return p;
}

Packet ipv6_tcp() {
  Packet p = ethernet(0x86dd);
  p.u8(0x60), p.u8(0), p.u16(0);
  p.u16(20), p.u8(IPPROTO_TCP), p.u8(64);
  for (int i = 0; i < 32; ++i) p.u8(i == 15 || i == 31 ? 1 : 0);  // ::1 -> ::1
  p.u16(kEphemeral), p.u16(5985);
  p.bytes.resize(p.bytes.size() + 16);
  return p;
}

// Says IPv4 but is not: version nibble 0xd. (BPF_PROG_TEST_RUN itself refuses frames shorter
// than an Ethernet and an IPv4 header, so truncation is tested at the TCP header.)
Packet garbage() {
  Packet p = ethernet(0x0800);
  for (int i = 0; i < 24; ++i) p.u8(static_cast<std::uint8_t>(0xde + i * 37));
  return p;
}

// --- The table ---

enum class Hook { kEgress, kIngress };

struct CounterRef {
  const char* agent;  // nullptr: packets that do not parse
  std::uint8_t proto;
  std::uint16_t port;
  Direction direction;
  VerdictReason reason;
};

struct Case {
  const char* description;
  // Steps before the packet under test: earlier packets, policy changes.
  std::function<void(BpfFilter&, std::function<int(Hook, const Packet&)>)> before;
  Hook hook;
  Packet packet;
  int verdict;
  CounterRef counter;
};

filter::FilterSettings settings() {
  filter::FilterSettings s;
  s.tunnel_ifname = "pcl-test";
  s.gateway_address = ip(kGateway);
  s.agent_pool = *IpPrefix::parse("10.255.0.0/16");
  s.operator_networks = {*IpPrefix::parse("192.0.2.0/24")};
  return s;
}

filter::FilterContents contents() {
  filter::FilterContents c;
  c.agents = {{ip(kAgentA), "agent-a"}, {ip(kAgentB), "agent-b"}};
  c.allowed = {{ip(kAgentA), Protocol::kTcp, 5985, "agent-a"},
               {ip(kAgentA), Protocol::kUdp, 3478, "agent-a"},
               {ip(kAgentB), Protocol::kTcp, 5900, "agent-b"}};
  return c;
}

class BpfProgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "BPF_PROG_TEST_RUN needs root (CAP_BPF, CAP_NET_ADMIN)";
    auto built = filter_.build(settings(), contents());
    ASSERT_TRUE(built) << built.error().message();
  }

  int run(Hook hook, const Packet& p) {
    int fd = hook == Hook::kEgress ? filter_.egress_prog_fd() : filter_.ingress_prog_fd();
    LIBBPF_OPTS(bpf_test_run_opts, opts);
    opts.data_in = p.bytes.data();
    opts.data_size_in = static_cast<std::uint32_t>(p.bytes.size());
    opts.repeat = 1;
    int err = bpf_prog_test_run_opts(fd, &opts);
    EXPECT_EQ(err, 0) << "BPF_PROG_TEST_RUN: " << std::strerror(errno);
    return static_cast<int>(opts.retval);
  }

  std::uint64_t packets(const CounterRef& ref) {
    auto rows = filter_.read_counters();
    EXPECT_TRUE(rows) << rows.error().message();
    if (!rows) return 0;
    IpAddress agent = ref.agent ? ip(ref.agent) : IpAddress();
    std::uint64_t n = 0;
    for (const auto& r : *rows) {
      if (r.agent == agent && r.protocol == ref.proto && r.port == ref.port &&
          r.direction == ref.direction && r.reason == ref.reason) {
        n += r.packets;
      }
    }
    return n;
  }

  std::uint64_t total_packets() {
    auto rows = filter_.read_counters();
    std::uint64_t n = 0;
    if (rows) {
      for (const auto& r : *rows) n += r.packets;
    }
    return n;
  }

  BpfFilter filter_{
      BpfFilterOptions{.pin_root = "", .attach = false, .l2_header_len = 14, .tunnel_ifname = ""}};
};

void remove_allowed(BpfFilter& f, AllowEntry e) {
  filter::FilterDelta d;
  d.remove_allowed = {e};
  auto s = f.apply(d);
  ASSERT_TRUE(s) << s.error().message();
}

void add_allowed(BpfFilter& f, AllowEntry e) {
  filter::FilterDelta d;
  d.add_allowed = {e};
  auto s = f.apply(d);
  ASSERT_TRUE(s) << s.error().message();
}

std::vector<Case> cases() {
  constexpr auto to = Direction::kToAgent;
  constexpr auto from = Direction::kFromAgent;
  constexpr std::uint8_t t = IPPROTO_TCP, u = IPPROTO_UDP;
  auto request = [](BpfFilter&, std::function<int(Hook, const Packet&)> send) {
    EXPECT_EQ(send(Hook::kEgress, tcp(kOperator, kEphemeral, kAgentA, 5985)), TC_ACT_OK);
  };
  using V = VerdictReason;
  return {
      {"operator to allowed tcp port",
       nullptr,
       Hook::kEgress,
       tcp(kOperator, kEphemeral, kAgentA, 5985),
       TC_ACT_OK,
       {kAgentA, t, 5985, to, V::kAllowed}},
      {"gateway to allowed tcp port",
       nullptr,
       Hook::kEgress,
       tcp(kGateway, kEphemeral, kAgentB, 5900),
       TC_ACT_OK,
       {kAgentB, t, 5900, to, V::kAllowed}},
      {"operator to allowed udp port",
       nullptr,
       Hook::kEgress,
       udp(kOperator, kEphemeral, kAgentA, 3478),
       TC_ACT_OK,
       {kAgentA, u, 3478, to, V::kAllowed}},
      {"operator to non-allowed tcp port",
       nullptr,
       Hook::kEgress,
       tcp(kOperator, kEphemeral, kAgentA, 22),
       TC_ACT_SHOT,
       {kAgentA, t, 22, to, V::kPortNotAllowed}},
      {"udp to a tcp-only port",
       nullptr,
       Hook::kEgress,
       udp(kOperator, kEphemeral, kAgentB, 5900),
       TC_ACT_SHOT,
       {kAgentB, u, 5900, to, V::kPortNotAllowed}},
      {"allowed port of the other agent",
       nullptr,
       Hook::kEgress,
       tcp(kOperator, kEphemeral, kAgentB, 5985),
       TC_ACT_SHOT,
       {kAgentB, t, 5985, to, V::kPortNotAllowed}},
      {"source outside operator networks",
       nullptr,
       Hook::kEgress,
       tcp(kStranger, kEphemeral, kAgentA, 5985),
       TC_ACT_SHOT,
       {kAgentA, t, 5985, to, V::kSourceNotAllowed}},
      {"unknown agent address",
       nullptr,
       Hook::kEgress,
       tcp(kOperator, kEphemeral, "10.255.0.99", 5985),
       TC_ACT_SHOT,
       {"10.255.0.99", t, 5985, to, V::kUnknownAgent}},
      {"reply of an allowed tcp flow",
       request,
       Hook::kIngress,
       tcp(kAgentA, 5985, kOperator, kEphemeral, 0x12 /* SYN-ACK */),
       TC_ACT_OK,
       {kAgentA, t, 5985, from, V::kAllowed}},
      {"reply of an allowed udp flow",
       [](BpfFilter&, std::function<int(Hook, const Packet&)> send) {
         EXPECT_EQ(send(Hook::kEgress, udp(kOperator, kEphemeral, kAgentA, 3478)), TC_ACT_OK);
       },
       Hook::kIngress,
       udp(kAgentA, 3478, kOperator, kEphemeral),
       TC_ACT_OK,
       {kAgentA, u, 3478, from, V::kAllowed}},
      {"reply to another peer port than the flow's",
       request,
       Hook::kIngress,
       tcp(kAgentA, 5985, kOperator, kEphemeral + 1, 0x12),
       TC_ACT_SHOT,
       {kAgentA, t, 5985, from, V::kNoFlow}},
      {"reply from an allowed port without a flow",
       nullptr,
       Hook::kIngress,
       tcp(kAgentA, 5985, kOperator, kEphemeral, 0x12),
       TC_ACT_SHOT,
       {kAgentA, t, 5985, from, V::kNoFlow}},
      {"agent-initiated connection to the gateway",
       nullptr,
       Hook::kIngress,
       tcp(kAgentA, 50000, kGateway, 22),
       TC_ACT_SHOT,
       {kAgentA, t, 22, from, V::kAgentInitiated}},
      {"agent-initiated connection to an operator",
       nullptr,
       Hook::kIngress,
       udp(kAgentA, 50000, kOperator, 53),
       TC_ACT_SHOT,
       {kAgentA, u, 53, from, V::kAgentInitiated}},
      {"agent to agent, at ingress",
       nullptr,
       Hook::kIngress,
       tcp(kAgentA, 50000, kAgentB, 5900),
       TC_ACT_SHOT,
       {kAgentA, t, 5900, from, V::kAgentToAgent}},
      {"agent to agent from an allowed port, at ingress",
       nullptr,
       Hook::kIngress,
       tcp(kAgentA, 5985, kAgentB, 5900),
       TC_ACT_SHOT,
       {kAgentA, t, 5900, from, V::kAgentToAgent}},
      {"agent to agent, at egress",
       nullptr,
       Hook::kEgress,
       tcp(kAgentA, 50000, kAgentB, 5900),
       TC_ACT_SHOT,
       {kAgentB, t, 5900, to, V::kAgentToAgent}},
      {"reply after the port was removed",
       [request](BpfFilter& f, std::function<int(Hook, const Packet&)> send) {
         request(f, send);
         remove_allowed(f, {ip(kAgentA), Protocol::kTcp, 5985, "agent-a"});
       },
       Hook::kIngress,
       tcp(kAgentA, 5985, kOperator, kEphemeral, 0x10 /* ACK */),
       TC_ACT_SHOT,
       // The flow was cut with the port: the packet is no reply any more.
       {kAgentA, t, kEphemeral, from, V::kAgentInitiated}},
      {"request after the port was removed",
       [request](BpfFilter& f, std::function<int(Hook, const Packet&)> send) {
         request(f, send);
         remove_allowed(f, {ip(kAgentA), Protocol::kTcp, 5985, "agent-a"});
       },
       Hook::kEgress,
       tcp(kOperator, kEphemeral, kAgentA, 5985, 0x10),
       TC_ACT_SHOT,
       {kAgentA, t, 5985, to, V::kPortNotAllowed}},
      {"request after the port was added",
       [](BpfFilter& f, std::function<int(Hook, const Packet&)>) {
         add_allowed(f, {ip(kAgentA), Protocol::kTcp, 22, "agent-a"});
       },
       Hook::kEgress,
       tcp(kOperator, kEphemeral, kAgentA, 22),
       TC_ACT_OK,
       {kAgentA, t, 22, to, V::kAllowed}},
      {"request after the agent was revoked",
       [](BpfFilter& f, std::function<int(Hook, const Packet&)>) {
         filter::FilterDelta d;
         d.remove_agents = {{ip(kAgentA), "agent-a"}};
         ASSERT_TRUE(f.apply(d));
       },
       Hook::kEgress,
       tcp(kOperator, kEphemeral, kAgentA, 5985),
       TC_ACT_SHOT,
       {kAgentA, t, 5985, to, V::kUnknownAgent}},
      {"ipv6 toward an agent",
       nullptr,
       Hook::kEgress,
       ipv6_tcp(),
       TC_ACT_SHOT,
       {nullptr, 0, 0, to, V::kNotIpv4}},
      {"ipv6 from an agent",
       nullptr,
       Hook::kIngress,
       ipv6_tcp(),
       TC_ACT_SHOT,
       {nullptr, 0, 0, from, V::kNotIpv4}},
      {"garbage after an ipv4 ethertype",
       nullptr,
       Hook::kEgress,
       garbage(),
       TC_ACT_SHOT,
       {nullptr, 0, 0, to, V::kMalformed}},
      {"ipv4 header length below 5",
       nullptr,
       Hook::kIngress,
       ipv4(kAgentA, kOperator, IPPROTO_TCP, 20, {.ihl = 4}),
       TC_ACT_SHOT,
       {nullptr, 0, 0, from, V::kMalformed}},
      {"tcp header cut short",
       nullptr,
       Hook::kEgress,
       ipv4(kOperator, kAgentA, IPPROTO_TCP, 0),
       TC_ACT_SHOT,
       {nullptr, 0, 0, to, V::kMalformed}},
      {"ipv4 fragment",
       nullptr,
       Hook::kEgress,
       fragment(kOperator, kAgentA),
       TC_ACT_SHOT,
       {nullptr, 0, 0, to, V::kFragment}},
      {"icmp echo toward an agent",
       nullptr,
       Hook::kEgress,
       icmp_echo(kOperator, kAgentA),
       TC_ACT_SHOT,
       {nullptr, 0, 0, to, V::kProtocol}},
  };
}

class BpfProgTable : public BpfProgTest, public ::testing::WithParamInterface<Case> {};

TEST_P(BpfProgTable, VerdictAndCounter) {
  const Case& c = GetParam();
  auto send = [this](Hook h, const Packet& p) { return run(h, p); };
  if (c.before) c.before(filter_, send);
  ASSERT_FALSE(HasFailure()) << "setup of: " << c.description;

  std::uint64_t counter_before = packets(c.counter);
  std::uint64_t total_before = total_packets();
  EXPECT_EQ(run(c.hook, c.packet), c.verdict) << c.description;
  EXPECT_EQ(packets(c.counter), counter_before + 1)
      << c.description << ": counter " << verdict_reason_name(c.counter.reason) << " "
      << direction_name(c.counter.direction) << " port " << c.counter.port << " did not move";
  EXPECT_EQ(total_packets(), total_before + 1) << c.description << ": other counters moved";
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name;
  for (const char* p = info.param.description; *p; ++p) {
    name += std::isalnum(static_cast<unsigned char>(*p)) ? *p : '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Policy, BpfProgTable, ::testing::ValuesIn(cases()), case_name);

TEST_F(BpfProgTest, ReadReturnsWhatWasBuilt) {
  auto have = filter_.read();
  ASSERT_TRUE(have) << have.error().message();
  auto want = contents();
  EXPECT_EQ(have->agents, want.agents);
  ASSERT_EQ(have->allowed, want.allowed);
  EXPECT_EQ(have->allowed[0].device, "agent-a");
}

TEST_F(BpfProgTest, ApplyTouchesOnlyTheDeltaAndCutsFlows) {
  EXPECT_EQ(run(Hook::kEgress, tcp(kOperator, kEphemeral, kAgentA, 5985)), TC_ACT_OK);
  EXPECT_EQ(run(Hook::kEgress, udp(kOperator, kEphemeral, kAgentA, 3478)), TC_ACT_OK);
  EXPECT_EQ(run(Hook::kEgress, tcp(kOperator, kEphemeral, kAgentB, 5900)), TC_ACT_OK);
  ASSERT_EQ(*filter_.flow_count(), 3u);

  remove_allowed(filter_, {ip(kAgentA), Protocol::kTcp, 5985, "agent-a"});
  EXPECT_EQ(*filter_.flow_count(), 2u) << "the removed port's flow must be cut, no other";
  auto have = filter_.read();
  ASSERT_TRUE(have);
  EXPECT_EQ(have->allowed.size(), 2u);
  EXPECT_EQ(run(Hook::kIngress, udp(kAgentA, 3478, kOperator, kEphemeral)), TC_ACT_OK);
  EXPECT_EQ(run(Hook::kIngress, tcp(kAgentB, 5900, kOperator, kEphemeral, 0x12)), TC_ACT_OK);
}

TEST_F(BpfProgTest, BuildAgainConvergesToNewContents) {
  auto c = contents();
  c.allowed.pop_back();  // agent-b tcp/5900 goes
  c.allowed.push_back({ip(kAgentB), Protocol::kUdp, 47002, "agent-b"});
  std::sort(c.allowed.begin(), c.allowed.end());
  auto built = filter_.build(settings(), c);
  ASSERT_TRUE(built) << built.error().message();
  auto have = filter_.read();
  ASSERT_TRUE(have);
  EXPECT_EQ(have->allowed, c.allowed);
  EXPECT_EQ(run(Hook::kEgress, tcp(kOperator, kEphemeral, kAgentB, 5900)), TC_ACT_SHOT);
  EXPECT_EQ(run(Hook::kEgress, udp(kOperator, kEphemeral, kAgentB, 47002)), TC_ACT_OK);
}

TEST_F(BpfProgTest, RejectsIpv6Agents) {
  filter::FilterDelta d;
  d.add_allowed = {{ip("fd00::7"), Protocol::kTcp, 5985, "v6"}};
  auto s = filter_.apply(d);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errno_value(), EINVAL);
  EXPECT_NE(s.error().context().find("fd00::7"), std::string::npos) << s.error().message();
}

// --- Pins: a private bpffs mounted for the test, so the host's /sys/fs/bpf is never touched. ---

class BpfPinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "mounting bpffs needs root";
    bpffs_ = std::make_unique<testing::PrivateBpffs>();
    ASSERT_TRUE(bpffs_->ok()) << bpffs_->error();
    mount_point_ = bpffs_->path();
  }

  BpfFilterOptions options() const {
    return BpfFilterOptions{.pin_root = mount_point_ + "/portcullis",
                            .attach = false,
                            .l2_header_len = 14,
                            .tunnel_ifname = ""};
  }
  std::string pin(const char* name) const { return mount_point_ + "/portcullis/pcl-test/" + name; }

  // Unmounted when the test ends: that drops every pin it left, even after a failure.
  std::unique_ptr<testing::PrivateBpffs> bpffs_;
  std::string mount_point_;
};

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

TEST_F(BpfPinTest, RestartReusesPinnedMapsAndRemoveDeletesPins) {
  {
    BpfFilter first(options());
    auto built = first.build(settings(), contents());
    ASSERT_TRUE(built) << built.error().message();
    for (const char* name : {"pcl_agent_ports", "pcl_agents", "pcl_sources", "pcl_flows",
                             "pcl_counters", "pcl_tc_egress", "pcl_tc_ingress"}) {
      EXPECT_TRUE(exists(pin(name))) << name;
    }
    // A live flow and a counter, to be found again after the "restart".
    Packet p = tcp(kOperator, kEphemeral, kAgentA, 5985);
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = p.bytes.data(),
                .data_size_in = static_cast<std::uint32_t>(p.bytes.size()));
    ASSERT_EQ(bpf_prog_test_run_opts(first.egress_prog_fd(), &opts), 0);
    ASSERT_EQ(opts.retval, static_cast<std::uint32_t>(TC_ACT_OK));
  }  // the daemon exits; pins stay

  BpfFilter second(options());
  auto loaded = second.build(settings(), contents());
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(*second.flow_count(), 1u) << "pcl_flows must be the pinned map, not a fresh one";
  auto counters = second.read_counters();
  ASSERT_TRUE(counters);
  ASSERT_EQ(counters->size(), 1u);
  EXPECT_EQ(counters->front().device, "agent-a");
  EXPECT_EQ(counters->front().port, 5985);
  for (const auto& n : second.notices()) EXPECT_NE(n.find("re-used"), std::string::npos) << n;

  ASSERT_TRUE(second.remove());
  EXPECT_FALSE(exists(mount_point_ + "/portcullis/pcl-test"));
}

TEST_F(BpfPinTest, ForeignPinIsReplacedWithANotice) {
  ASSERT_EQ(::mkdir((mount_point_ + "/portcullis").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((mount_point_ + "/portcullis/pcl-test").c_str(), 0700), 0);
  // Same name, wrong shape: an array of 4-byte values.
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "pcl_flows", 4, 4, 8, nullptr);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bpf_obj_pin(fd, pin("pcl_flows").c_str()), 0);
  ::close(fd);

  BpfFilter f(options());
  auto built = f.build(settings(), contents());
  ASSERT_TRUE(built) << built.error().message();
  bool replaced = false;
  for (const auto& n : f.notices()) {
    if (n.find("replaced stale or foreign BPF pin") != std::string::npos &&
        n.find("pcl_flows") != std::string::npos) {
      replaced = true;
    }
  }
  EXPECT_TRUE(replaced) << "no notice about the foreign pcl_flows pin";
  int pinned = bpf_obj_get(pin("pcl_flows").c_str());
  ASSERT_GE(pinned, 0);
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  ASSERT_EQ(bpf_obj_get_info_by_fd(pinned, &info, &len), 0);
  ::close(pinned);
  EXPECT_EQ(info.type, BPF_MAP_TYPE_LRU_HASH);
  EXPECT_TRUE(f.remove());
}

// Flows stamped by hand in the pinned pcl_flows, relative to bpf_ktime_get_ns() (CLOCK_MONOTONIC).
class BpfFlowClockTest : public BpfPinTest {
 protected:
  void SetUp() override {
    BpfPinTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    filter_ = std::make_unique<BpfFilter>(options());
    auto built = filter_->build(settings(), contents());
    ASSERT_TRUE(built) << built.error().message();
  }
  void TearDown() override {
    filter_.reset();
    BpfPinTest::TearDown();
  }
  void stamp(const char* agent, std::uint16_t agent_port, Protocol proto, std::int64_t offset_ns) {
    timespec ts;
    ASSERT_EQ(::clock_gettime(CLOCK_MONOTONIC, &ts), 0);
    pcl_flow_key key{};
    inet_pton(AF_INET, agent, &key.agent);
    inet_pton(AF_INET, kOperator, &key.peer);
    key.agent_port = agent_port;
    key.peer_port = kEphemeral;
    key.proto = static_cast<std::uint8_t>(proto);
    pcl_flow_value value{};
    value.last_seen_ns =
        static_cast<std::uint64_t>(ts.tv_sec * 1'000'000'000LL + ts.tv_nsec + offset_ns);
    int fd = bpf_obj_get(pin("pcl_flows").c_str());
    ASSERT_GE(fd, 0);
    EXPECT_EQ(bpf_map_update_elem(fd, &key, &value, BPF_ANY), 0);
    ::close(fd);
  }
  int ingress(const Packet& p) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = p.bytes.data(),
                .data_size_in = static_cast<std::uint32_t>(p.bytes.size()));
    EXPECT_EQ(bpf_prog_test_run_opts(filter_->ingress_prog_fd(), &opts), 0);
    return static_cast<int>(opts.retval);
  }
  std::unique_ptr<BpfFilter> filter_;
};

// Another CPU's clock may be a little ahead: a flow stamped "in the future" is live, not expired.
TEST_F(BpfFlowClockTest, FlowStampedAheadOfThisCpuStillPasses) {
  stamp(kAgentA, 5985, Protocol::kTcp, 2'000'000'000);
  EXPECT_EQ(ingress(tcp(kAgentA, 5985, kOperator, kEphemeral, 0x12)), TC_ACT_OK);
}

TEST_F(BpfFlowClockTest, FlowSeenRecentlyPasses) {
  stamp(kAgentA, 3478, Protocol::kUdp, -1'000'000'000);
  EXPECT_EQ(ingress(udp(kAgentA, 3478, kOperator, kEphemeral)), TC_ACT_OK);
}

TEST_F(BpfFlowClockTest, FlowNotSeenForItsTimeoutIsExpired) {
  timespec ts;
  ASSERT_EQ(::clock_gettime(CLOCK_MONOTONIC, &ts), 0);
  const std::int64_t age = static_cast<std::int64_t>(PCL_FLOW_TIMEOUT_UDP_NS) + 1'000'000'000;
  if (ts.tv_sec * 1'000'000'000LL < age) {
    GTEST_SKIP() << "the monotonic clock started less than a UDP flow timeout ago (a fresh VM)";
  }
  stamp(kAgentA, 3478, Protocol::kUdp, -age);
  EXPECT_EQ(ingress(udp(kAgentA, 3478, kOperator, kEphemeral)), TC_ACT_SHOT);
}

}  // namespace
}  // namespace portcullis::bpf
