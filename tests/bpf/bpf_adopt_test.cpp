// A restarted daemon's BpfFilter adopts what the previous process left, with no changing call,
// and replaces it when it is outdated, foreign or detached.
//
//   pcl-bpf-<pid>   pcl-test (veth, peer pcl-peer): clsact with our egress/ingress filters
//   private bpffs   /tmp/pcl-bpffs-XXXXXX/portcullis/pcl-test/{pcl_*maps, pcl_tc_*}
//
// Each test builds with the policy below through one BpfFilter, lets it go (the daemon exits),
// then acts through a new one. A veth is an Ethernet device, so the programs parse 14-byte L2
// headers and BPF_PROG_TEST_RUN's Ethernet frames alike. Namespace, tc hooks and pins go away
// with the namespace and the bpffs mount, even when an assertion fails.

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "controlplane/metrics/registry.h"
#include "controlplane/reconciler/filter_layer.h"
#include "controlplane/reconciler/reconciler.h"
#include "controlplane/reconciler/testing/fake_store.h"
#include "dataplane/bpf/bpf_filter.h"
#include "dataplane/testing/fake_wireguard_device.h"
#include "portcullis_filter.skel.h"
#include "tests/support/bpffs.h"
#include "tests/support/netns.h"

namespace portcullis::bpf {
namespace {

using filter::AllowEntry;
using filter::Protocol;
using portcullis::testing::NetnsGuard;
using portcullis::testing::TestNetns;

// Our place on the clsact hooks (kTcHandle, kTcPriority in bpf_filter.cpp).
constexpr std::uint32_t kTcHandle = 0x70636c;
constexpr std::uint32_t kTcPriority = 0x7063;
constexpr const char* kIfname = "pcl-test";

IpAddress ip(const char* text) { return *IpAddress::parse(text); }

filter::FilterSettings settings() {
  filter::FilterSettings s;
  s.tunnel_ifname = kIfname;
  s.gateway_address = ip("10.255.0.1");
  s.agent_pool = *IpPrefix::parse("10.255.0.0/16");
  s.operator_networks = {*IpPrefix::parse("192.0.2.0/24")};
  return s;
}

// Policy A: agent 10.255.0.2 allows tcp/5985 and udp/3478, agent 10.255.0.3 allows tcp/5900.
filter::FilterContents policy_a() {
  filter::FilterContents c;
  c.agents = {{ip("10.255.0.2"), "agent-a"}, {ip("10.255.0.3"), "agent-b"}};
  c.allowed = {{ip("10.255.0.2"), Protocol::kTcp, 5985, "agent-a"},
               {ip("10.255.0.2"), Protocol::kUdp, 3478, "agent-a"},
               {ip("10.255.0.3"), Protocol::kTcp, 5900, "agent-b"}};
  return c;
}

// Ethernet + IPv4 + TCP SYN 192.0.2.10:40000 -> 10.255.0.2:5985 (allowed by policy A).
std::vector<std::uint8_t> operator_syn() {
  std::vector<std::uint8_t> p(14 + 20 + 20, 0);
  p[12] = 0x08;         // ethertype IPv4
  p[14] = 0x45;         // version 4, ihl 5
  p[17] = 40;           // total length
  p[23] = IPPROTO_TCP;  // protocol
  inet_pton(AF_INET, "192.0.2.10", &p[26]);
  inet_pton(AF_INET, "10.255.0.2", &p[30]);
  p[34] = 40000 >> 8, p[35] = 40000 & 0xff;
  p[36] = 5985 >> 8, p[37] = 5985 & 0xff;
  p[46] = 0x50;  // data offset 5
  p[47] = 0x02;  // SYN
  return p;
}

int run_prog(int fd, const std::vector<std::uint8_t>& packet) {
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = packet.data(),
              .data_size_in = static_cast<std::uint32_t>(packet.size()));
  if (bpf_prog_test_run_opts(fd, &opts) < 0) return -1;
  return static_cast<int>(opts.retval);
}

std::uint32_t prog_id(int fd) {
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

bool has_notice(const BpfFilter& f, const std::string& text) {
  return std::any_of(f.notices().begin(), f.notices().end(),
                     [&](const std::string& n) { return n.find(text) != std::string::npos; });
}

std::string notices_text(const BpfFilter& f) {
  std::string out;
  for (const auto& n : f.notices()) out += "\n  " + n;
  return out;
}

class BpfAdoptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, tc, bpffs)";
    ns_ = std::make_unique<TestNetns>("bpf");
    ASSERT_TRUE(ns_->ok());
    ASSERT_TRUE(ns_->run(std::string("ip link add ") + kIfname +
                         " type veth peer name pcl-peer && ip link set " + kIfname + " up")
                    .ok());
    bpffs_ = std::make_unique<testing::PrivateBpffs>();
    ASSERT_TRUE(bpffs_->ok()) << bpffs_->error();
    mount_point_ = bpffs_->path();
    in_ = std::make_unique<NetnsGuard>(*ns_);
    ASSERT_TRUE(in_->ok());
  }
  void TearDown() override {
    in_.reset();
    bpffs_.reset();
  }

  BpfFilterOptions options() const {
    BpfFilterOptions o;
    o.pin_root = mount_point_ + "/portcullis";
    o.tunnel_ifname = kIfname;
    return o;
  }
  std::string pin(const char* name) const {
    return mount_point_ + "/portcullis/" + kIfname + "/" + name;
  }

  // The id of the program at our place on the hook; 0 if none.
  static std::uint32_t attached(bpf_tc_attach_point point) {
    bpf_tc_hook hook{};
    hook.sz = sizeof(hook);
    hook.ifindex = static_cast<int>(::if_nametoindex(kIfname));
    hook.attach_point = point;
    bpf_tc_opts opts{};
    opts.sz = sizeof(opts);
    opts.handle = kTcHandle;
    opts.priority = kTcPriority;
    return bpf_tc_query(&hook, &opts) == 0 ? opts.prog_id : 0;
  }

  // The previous daemon: builds policy A, opens one flow (which also counts), exits.
  void previous_process_builds() {
    BpfFilter first(options());
    auto built = first.build(settings(), policy_a());
    ASSERT_TRUE(built) << built.error().message();
    ASSERT_EQ(run_prog(first.egress_prog_fd(), operator_syn()), TC_ACT_OK);
    egress_id_ = prog_id(first.egress_prog_fd());
    ingress_id_ = prog_id(first.ingress_prog_fd());
    ASSERT_EQ(attached(BPF_TC_EGRESS), egress_id_);
    ASSERT_EQ(attached(BPF_TC_INGRESS), ingress_id_);
  }

  std::unique_ptr<TestNetns> ns_;
  std::unique_ptr<NetnsGuard> in_;
  std::unique_ptr<testing::PrivateBpffs> bpffs_;
  std::string mount_point_;
  std::uint32_t egress_id_ = 0, ingress_id_ = 0;
};

TEST_F(BpfAdoptTest, NewObjectAdoptsWithoutAChangingCall) {
  previous_process_builds();

  BpfFilter second(options());
  auto have = second.read();
  ASSERT_TRUE(have) << have.error().message();
  EXPECT_EQ(have->agents, policy_a().agents);
  EXPECT_EQ(have->allowed, policy_a().allowed);
  EXPECT_EQ(have->allowed[0].device, "agent-a");
  EXPECT_TRUE(has_notice(second, "adopted")) << notices_text(second);

  auto counters = second.read_counters();
  ASSERT_TRUE(counters) << counters.error().message();
  ASSERT_EQ(counters->size(), 1u);
  EXPECT_EQ(counters->front().port, 5985);
  EXPECT_EQ(counters->front().device, "agent-a");
  EXPECT_EQ(counters->front().packets, 1u);
  EXPECT_EQ(*second.flow_count(), 1u);

  auto check = second.check(settings(), policy_a());
  ASSERT_TRUE(check) << check.error().message();
  EXPECT_FALSE(check->rebuild) << check->why;
  EXPECT_TRUE(check->elements.empty());
  // build() over an unchanged state is a no-op too (the reconciler may call it).
  auto built = second.build(settings(), policy_a());
  ASSERT_TRUE(built) << built.error().message();
  EXPECT_EQ(second.changing_calls(), 0u) << "adopting must not write anything";
  EXPECT_EQ(attached(BPF_TC_EGRESS), egress_id_) << "re-attached";
  EXPECT_EQ(attached(BPF_TC_INGRESS), ingress_id_) << "re-attached";
  EXPECT_EQ(prog_id(second.egress_prog_fd()), egress_id_);

  // A one-port delta goes into the pinned maps the attached programs use.
  filter::FilterDelta d;
  d.add_allowed = {{ip("10.255.0.3"), Protocol::kTcp, 22, "agent-b"}};
  auto applied = second.apply(d);
  ASSERT_TRUE(applied) << applied.error().message();
  EXPECT_EQ(second.changing_calls(), 1u);
  have = second.read();
  ASSERT_TRUE(have);
  EXPECT_EQ(have->allowed.size(), 4u);
  EXPECT_EQ(attached(BPF_TC_EGRESS), egress_id_);
  EXPECT_EQ(attached(BPF_TC_INGRESS), ingress_id_);
  ASSERT_TRUE(second.remove());
  EXPECT_EQ(attached(BPF_TC_EGRESS), 0u);
}

TEST_F(BpfAdoptTest, ApplyAndCountersAdoptToo) {
  previous_process_builds();
  BpfFilter second(options());
  filter::FilterDelta d;
  d.remove_allowed = {{ip("10.255.0.2"), Protocol::kTcp, 5985, "agent-a"}};
  auto applied = second.apply(d);
  ASSERT_TRUE(applied) << applied.error().message();
  EXPECT_EQ(*second.flow_count(), 0u) << "the removed port's flow is cut";
  EXPECT_EQ(attached(BPF_TC_EGRESS), egress_id_);

  BpfFilter third(options());
  auto counters = third.read_counters();
  ASSERT_TRUE(counters) << counters.error().message();
  EXPECT_EQ(counters->size(), 1u);
  EXPECT_EQ(third.changing_calls(), 0u);
}

TEST_F(BpfAdoptTest, WithoutPinsReadIsNotInstalled) {
  BpfFilter fresh(options());
  auto have = fresh.read();
  ASSERT_FALSE(have);
  EXPECT_EQ(have.error().errno_value(), ENOENT) << have.error().message();
  EXPECT_FALSE(fresh.read_counters());
  auto check = fresh.check(settings(), policy_a());
  ASSERT_TRUE(check) << check.error().message();
  EXPECT_TRUE(check->rebuild);
  EXPECT_NE(check->why.find("no pin"), std::string::npos) << check->why;
  EXPECT_EQ(fresh.changing_calls(), 0u);
}

// A previous daemon version: same maps, programs loaded with another pcl_build_id.
TEST_F(BpfAdoptTest, OlderBuildIsReplacedInPlaceWithANotice) {
  previous_process_builds();
  {
    std::unique_ptr<portcullis_filter_bpf, void (*)(portcullis_filter_bpf*)> old(
        portcullis_filter_bpf__open(), portcullis_filter_bpf__destroy);
    ASSERT_TRUE(old);
    old->rodata->pcl_l2_len = 14;
    old->rodata->pcl_build_id = 0x01dULL;  // "old"
    bpf_map* map;
    bpf_object__for_each_map(map, old->obj) {
      if (bpf_map__is_internal(map)) continue;
      ASSERT_EQ(bpf_map__set_pin_path(map, pin(bpf_map__name(map)).c_str()), 0);
    }
    ASSERT_EQ(portcullis_filter_bpf__load(old.get()), 0);
    bpf_tc_hook hook{};
    hook.sz = sizeof(hook);
    hook.ifindex = static_cast<int>(::if_nametoindex(kIfname));
    for (auto [point, prog] : {std::pair{BPF_TC_EGRESS, old->progs.pcl_tc_egress},
                               std::pair{BPF_TC_INGRESS, old->progs.pcl_tc_ingress}}) {
      hook.attach_point = point;
      bpf_tc_opts opts{};
      opts.sz = sizeof(opts);
      opts.prog_fd = bpf_program__fd(prog);
      opts.handle = kTcHandle;
      opts.priority = kTcPriority;
      opts.flags = BPF_TC_F_REPLACE;
      ASSERT_EQ(bpf_tc_attach(&hook, &opts), 0);
      std::string path = pin(bpf_program__name(prog));
      ASSERT_EQ(::unlink(path.c_str()), 0);
      ASSERT_EQ(bpf_program__pin(prog, path.c_str()), 0);
    }
    egress_id_ = prog_id(bpf_program__fd(old->progs.pcl_tc_egress));
  }

  BpfFilter upgraded(options());
  auto have = upgraded.read();
  ASSERT_FALSE(have);
  EXPECT_EQ(have.error().errno_value(), ENOENT);
  EXPECT_NE(have.error().message().find("another portcullisd build"), std::string::npos)
      << have.error().message();
  auto check = upgraded.check(settings(), policy_a());
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->rebuild);
  EXPECT_EQ(upgraded.changing_calls(), 0u);

  auto built = upgraded.build(settings(), policy_a());
  ASSERT_TRUE(built) << built.error().message();
  EXPECT_TRUE(has_notice(upgraded, "another portcullisd build")) << notices_text(upgraded);
  EXPECT_TRUE(has_notice(upgraded, "re-used pinned BPF map")) << notices_text(upgraded);
  std::uint32_t now_attached = attached(BPF_TC_EGRESS);
  EXPECT_NE(now_attached, egress_id_) << "the old program still runs";
  EXPECT_EQ(now_attached, prog_id(upgraded.egress_prog_fd()));
  EXPECT_EQ(*upgraded.flow_count(), 1u) << "maps (and flows) survive an upgrade";

  // And the next process adopts the upgraded one.
  BpfFilter next(options());
  EXPECT_TRUE(next.read());
  EXPECT_EQ(next.changing_calls(), 0u);
}

// A map whose definition changed (here: pcl_agents with another value size) is not adopted;
// build() replaces it, fills it and swaps the programs.
TEST_F(BpfAdoptTest, MapWithAnotherDefinitionLeadsToARebuild) {
  previous_process_builds();
  ASSERT_EQ(::unlink(pin("pcl_agents").c_str()), 0);
  int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "pcl_agents", 4, 8, 16, nullptr);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bpf_obj_pin(fd, pin("pcl_agents").c_str()), 0);
  ::close(fd);

  BpfFilter second(options());
  auto have = second.read();
  ASSERT_FALSE(have);
  EXPECT_EQ(have.error().errno_value(), ENOENT);
  EXPECT_NE(have.error().message().find("pcl_agents"), std::string::npos) << have.error().message();
  auto built = second.build(settings(), policy_a());
  ASSERT_TRUE(built) << built.error().message();
  EXPECT_TRUE(has_notice(second, "replaced stale or foreign BPF pin")) << notices_text(second);
  have = second.read();
  ASSERT_TRUE(have) << have.error().message();
  EXPECT_EQ(have->agents, policy_a().agents);
  EXPECT_NE(attached(BPF_TC_EGRESS), egress_id_);
  EXPECT_EQ(attached(BPF_TC_EGRESS), prog_id(second.egress_prog_fd()));
}

// Detached behind our back: read() says not installed, build() re-attaches the same programs.
TEST_F(BpfAdoptTest, DetachedProgramsAreReattached) {
  previous_process_builds();
  BpfFilter second(options());
  ASSERT_TRUE(second.read());
  ASSERT_EQ(ns_->run(std::string("tc filter del dev ") + kIfname + " egress").status, 0);

  auto check = second.check(settings(), policy_a());
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->rebuild);
  EXPECT_NE(check->why.find("not attached"), std::string::npos) << check->why;
  auto have = second.read();
  ASSERT_FALSE(have);
  EXPECT_EQ(have.error().errno_value(), ENOENT);

  auto built = second.build(settings(), policy_a());
  ASSERT_TRUE(built) << built.error().message();
  EXPECT_TRUE(has_notice(second, "re-attaching")) << notices_text(second);
  EXPECT_EQ(attached(BPF_TC_EGRESS), egress_id_);
  EXPECT_EQ(attached(BPF_TC_INGRESS), ingress_id_);
  EXPECT_EQ(second.changing_calls(), 2u) << "one attach per hook; clsact and maps untouched";
}

// Changed operator networks: check() asks for build(), which writes only the sources.
TEST_F(BpfAdoptTest, ChangedSourcesAreUpdatedWithoutReattaching) {
  previous_process_builds();
  BpfFilter second(options());
  auto s = settings();
  s.operator_networks = {*IpPrefix::parse("198.51.100.0/24")};
  auto check = second.check(s, policy_a());
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->rebuild);
  EXPECT_NE(check->why.find("198.51.100.0/24"), std::string::npos) << check->why;
  auto built = second.build(s, policy_a());
  ASSERT_TRUE(built) << built.error().message();
  EXPECT_EQ(second.changing_calls(), 2u) << "one source added, one removed";
  EXPECT_EQ(attached(BPF_TC_EGRESS), egress_id_);
  EXPECT_EQ(run_prog(second.egress_prog_fd(), operator_syn()), TC_ACT_SHOT)
      << "192.0.2.0/24 is no operator network any more";
  check = second.check(s, policy_a());
  ASSERT_TRUE(check);
  EXPECT_FALSE(check->rebuild) << check->why;
}

// The reconciler over the eBPF layer alone: a restart with unchanged state is a pass with no
// changing call, and the filter object made none either.
TEST_F(BpfAdoptTest, ReconcilerRestartMakesNoChangingCall) {
  reconciler::testing::FakeStore store;
  state::Device d;
  d.id = "agent-a";
  KeyBytes key{};
  key[0] = 7;
  d.wg_key = Key(key);
  d.address = ip("10.255.0.2");
  d.ports = {{Protocol::kTcp, 5985}, {Protocol::kUdp, 3478}};
  store.put_device(d);
  portcullis::testing::FakeWireguardDevice wg(kIfname);
  reconciler::ReconcilerOptions o;
  o.gateway = {SecretKey::generate_private(), 30000};
  o.filter = settings();

  auto pass = [&](BpfFilter& f) {
    metrics::Registry metrics;
    reconciler::Reconciler rec(store, wg, {reconciler::ebpf_layer(f)}, o, metrics);
    auto r = rec.reconcile_once();
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : reconciler::ReconcileReport{};
  };
  {
    BpfFilter first(options());
    auto r = pass(first);
    EXPECT_TRUE(r.failed().empty()) << r.to_string();
    EXPECT_GT(r.changing_calls(), 0) << r.to_string();
  }
  BpfFilter second(options());
  auto r = pass(second);
  EXPECT_TRUE(r.failed().empty()) << r.to_string();
  EXPECT_EQ(r.changing_calls(), 0) << r.to_string();
  EXPECT_EQ(second.changing_calls(), 0u);
  auto have = second.read();
  ASSERT_TRUE(have);
  EXPECT_EQ(have->allowed.size(), 2u);
}

// Scale: 10,000 agents x 5 ports. Adoption and a clean check read the maps and write nothing.
TEST_F(BpfAdoptTest, AdoptsTenThousandDevicesWithoutWrites) {
  filter::FilterContents c;
  for (int i = 0; i < 10000; ++i) {
    in_addr a;
    a.s_addr = htonl((10u << 24) | (255u << 16) | static_cast<std::uint32_t>(i + 2));
    IpAddress addr = IpAddress::v4(a);
    std::string device = "device-" + std::to_string(i);
    c.agents.push_back({addr, device});
    for (std::uint16_t port : {5985, 5986, 5900, 3478, 47002}) {
      c.allowed.push_back({addr, Protocol::kTcp, port, device});
    }
  }
  std::sort(c.agents.begin(), c.agents.end());
  std::sort(c.allowed.begin(), c.allowed.end());
  {
    BpfFilter first(options());
    auto built = first.build(settings(), c);
    ASSERT_TRUE(built) << built.error().message();
  }
  auto start = std::chrono::steady_clock::now();
  BpfFilter second(options());
  auto check = second.check(settings(), c);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  ASSERT_TRUE(check) << check.error().message();
  EXPECT_FALSE(check->rebuild) << check->why;
  EXPECT_TRUE(check->elements.empty());
  EXPECT_EQ(second.changing_calls(), 0u);
  std::printf("adopt + check of 10,000 agents, 50,000 entries: %lld ms\n",
              static_cast<long long>(ms));
}

}  // namespace
}  // namespace portcullis::bpf
