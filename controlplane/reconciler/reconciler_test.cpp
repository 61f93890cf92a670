#include "controlplane/reconciler/reconciler.h"

#include <gtest/gtest.h>

#include "controlplane/metrics/testing/promtool.h"
#include "controlplane/reconciler/testing/devices.h"
#include "controlplane/reconciler/testing/fake_store.h"
#include "dataplane/testing/fake_packet_filter.h"
#include "dataplane/testing/fake_wireguard_device.h"

namespace portcullis::reconciler {
namespace {

using filter::Protocol;
using portcullis::testing::FakePacketFilter;
using portcullis::testing::FakeWireguardDevice;
using std::chrono::milliseconds;
using testing::device;
using testing::FakeStore;
using testing::ip;
using testing::key_of;

struct FakeClock {
  std::int64_t unix = 1'700'000'000;
  std::chrono::steady_clock::time_point steady =
      std::chrono::steady_clock::time_point() + std::chrono::hours(1);
  ReconcilerClock clock() {
    return {[this] { return unix; }, [this] { return steady; }};
  }
  void advance(milliseconds d) {
    steady += d;
    unix += std::chrono::duration_cast<std::chrono::seconds>(d).count();
  }
};

ReconcilerOptions options() {
  ReconcilerOptions o;
  o.gateway = {SecretKey::generate_private(), 30000};
  o.filter = {.tunnel_ifname = "portcullis0",
              .gateway_address = ip("10.255.0.1"),
              .agent_pool = *IpPrefix::parse("10.255.0.0/16"),
              .operator_networks = {*IpPrefix::parse("192.0.2.0/24")}};
  o.schedule = {.min_interval = milliseconds(200),
                .resync_interval = milliseconds(5000),
                .backoff_initial = milliseconds(500),
                .backoff_max = milliseconds(4000)};
  return o;
}

// Counts every call that changes a fake.
struct Calls {
  std::uint64_t wg_apply, nft_apply, nft_build, bpf_apply, bpf_build;
  bool operator==(const Calls&) const = default;
};

class ReconcilerTest : public ::testing::Test {
 protected:
  ReconcilerTest() {
    store_.put_device(device("dev-a", 1, "10.255.0.2"));
    store_.put_device(
        device("dev-b", 2, "10.255.0.3", {{Protocol::kTcp, 5985}, {Protocol::kUdp, 3478}}));
    store_.put_device(device("dev-c", 3, "10.255.0.4"));
    store_.put_device(device("dev-pending", 4, nullptr));  // approved, no ensure yet
  }

  std::unique_ptr<Reconciler> make(ReconcilerOptions o) {
    return std::make_unique<Reconciler>(
        store_, wg_, std::vector<FilterLayer>{{"nftables", nft_}, {"ebpf", bpf_}}, std::move(o),
        metrics_, clock_.clock());
  }
  Reconciler& rec() {
    if (!rec_) rec_ = make(options_);
    return *rec_;
  }
  ReconcileReport pass() {
    auto r = rec().reconcile_once();
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : ReconcileReport{};
  }
  Calls calls() const {
    return {wg_.apply_calls(), nft_.apply_calls(), nft_.build_calls(), bpf_.apply_calls(),
            bpf_.build_calls()};
  }
  std::int64_t generation() { return *store_.generation(); }
  std::string metric_line(const std::string& prefix) {
    std::string text = metrics_.render();
    auto at = text.find("\n" + prefix);
    if (at == std::string::npos) return "";
    auto end = text.find('\n', at + 1);
    return text.substr(at + 1, end - at - 1);
  }

  ReconcilerOptions options_ = options();
  FakeStore store_;
  FakeWireguardDevice wg_{"portcullis0"};
  FakePacketFilter nft_;
  FakePacketFilter bpf_;
  metrics::Registry metrics_;
  FakeClock clock_;
  std::unique_ptr<Reconciler> rec_;
};

constexpr const char* kAllThreeFilter =
    "filter tunnel=portcullis0 gateway=10.255.0.1 pool=10.255.0.0/16 operators=192.0.2.0/24\n"
    "agent 10.255.0.2 device=dev-a\n"
    "agent 10.255.0.3 device=dev-b\n"
    "agent 10.255.0.4 device=dev-c\n"
    "allow 10.255.0.2 tcp 5985 device=dev-a\n"
    "allow 10.255.0.3 tcp 5985 device=dev-b\n"
    "allow 10.255.0.3 udp 3478 device=dev-b\n"
    "allow 10.255.0.4 tcp 5985 device=dev-c\n";

TEST_F(ReconcilerTest, FirstPassOnAnEmptyKernelAddsEverything) {
  auto r = pass();
  EXPECT_TRUE(r.applied);
  EXPECT_TRUE(r.adoption);
  EXPECT_FALSE(r.drift);
  EXPECT_EQ(r.to_string(),
            "generation 4 adoption applied; wireguard: +3 -0 ~0 peers, device fields (private "
            "key, listen port); nftables: rebuilt (not installed); ebpf: rebuilt (not installed)");
  EXPECT_EQ(r.changing_calls(), 3);
  EXPECT_EQ(calls(), (Calls{1, 0, 1, 0, 1}));

  EXPECT_EQ(nft_.to_text(), kAllThreeFilter);
  EXPECT_EQ(bpf_.to_text(), kAllThreeFilter);
  EXPECT_EQ(wg_.state().listen_port, 30000);
  ASSERT_EQ(wg_.state().peers.size(), 3u);
  for (const auto& p : wg_.state().peers) {
    EXPECT_EQ(p.allowed_ips.size(), 1u);
    EXPECT_FALSE(p.endpoint);
    EXPECT_EQ(p.persistent_keepalive, 0);
  }
  EXPECT_EQ(*store_.applied_generation(), 4);
  EXPECT_EQ(rec().applied_generation(), 4);
  EXPECT_TRUE(rec().wait_applied(4, milliseconds(0)));
  EXPECT_FALSE(rec().wait_applied(5, milliseconds(0)));
  EXPECT_TRUE(store_.audit_log().empty());  // adoption is not drift
}

TEST_F(ReconcilerTest, AnUnchangedStateMakesZeroChangingCalls) {
  pass();
  auto before = calls();
  auto set_applied = store_.set_applied_calls();
  for (int i = 0; i < 3; ++i) {
    auto r = pass();
    EXPECT_TRUE(r.applied);
    EXPECT_EQ(r.changing_calls(), 0) << r.to_string();
    EXPECT_FALSE(r.drift);
  }
  EXPECT_EQ(calls(), before);
  EXPECT_EQ(store_.set_applied_calls(), set_applied);  // nothing new to record either
  EXPECT_EQ(metric_line("portcullis_reconcile_passes_total{result=\"ok\"}"),
            "portcullis_reconcile_passes_total{result=\"ok\"} 4");
}

TEST_F(ReconcilerTest, RestartAdoptsWhatTheKernelHoldsWithoutWrites) {
  pass();
  wg_.state().peers[0].rx_bytes = 777;  // a live session
  auto before = calls();
  rec_.reset();  // the daemon restarts; the kernel keeps everything
  auto r = pass();
  EXPECT_TRUE(r.adoption);
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(r.changing_calls(), 0) << r.to_string();
  EXPECT_EQ(calls(), before);
  EXPECT_EQ(wg_.state().peers[0].rx_bytes, 777u);
  EXPECT_TRUE(rec().wait_applied(generation(), milliseconds(0)));
}

TEST_F(ReconcilerTest, ChangedPortsTouchOnlyThatDevicesElementsAndNoPeer) {
  pass();
  auto before = calls();
  ASSERT_TRUE(store_.set_device_ports("dev-b", {{Protocol::kTcp, 5900}, {Protocol::kUdp, 3478}}));
  auto r = pass();
  EXPECT_TRUE(r.applied);
  EXPECT_FALSE(r.drift);
  EXPECT_EQ(r.to_string(),
            "generation 5 applied; wireguard: +0 -0 ~0 peers; nftables: +1 -1 elements; ebpf: +1 "
            "-1 elements");
  auto after = calls();
  EXPECT_EQ(after.wg_apply, before.wg_apply);  // no WireGuard call
  EXPECT_EQ(after.nft_apply, before.nft_apply + 1);
  EXPECT_EQ(after.bpf_apply, before.bpf_apply + 1);
  EXPECT_EQ(after.nft_build, before.nft_build);
  EXPECT_EQ(nft_.to_text(),
            "filter tunnel=portcullis0 gateway=10.255.0.1 pool=10.255.0.0/16 "
            "operators=192.0.2.0/24\n"
            "agent 10.255.0.2 device=dev-a\n"
            "agent 10.255.0.3 device=dev-b\n"
            "agent 10.255.0.4 device=dev-c\n"
            "allow 10.255.0.2 tcp 5985 device=dev-a\n"
            "allow 10.255.0.3 tcp 5900 device=dev-b\n"
            "allow 10.255.0.3 udp 3478 device=dev-b\n"
            "allow 10.255.0.4 tcp 5985 device=dev-c\n");
  EXPECT_EQ(bpf_.to_text(), nft_.to_text());
  EXPECT_EQ(*store_.applied_generation(), 5);
}

TEST_F(ReconcilerTest, RevokeRemovesThePeerAndItsFilterEntries) {
  pass();
  ASSERT_TRUE(store_.revoke_device("dev-b", clock_.unix));
  auto r = pass();
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(r.to_string(),
            "generation 5 applied; wireguard: +0 -1 ~0 peers; nftables: +0 -3 elements; ebpf: +0 "
            "-3 elements");
  EXPECT_EQ(wg_.state().find_peer(key_of(2)), nullptr);
  EXPECT_EQ(wg_.state().peers.size(), 2u);
  EXPECT_EQ(nft_.to_text().find("10.255.0.3"), std::string::npos);
  EXPECT_EQ(bpf_.to_text().find("10.255.0.3"), std::string::npos);
}

TEST_F(ReconcilerTest, NewDeviceIsAddedAndWaitAppliedReleases) {
  pass();
  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  std::int64_t g = generation();
  EXPECT_FALSE(rec().wait_applied(g, milliseconds(0)));
  auto r = pass();
  EXPECT_EQ(r.to_string(),
            "generation 5 applied; wireguard: +1 -0 ~0 peers; nftables: +2 -0 elements; ebpf: +2 "
            "-0 elements");
  EXPECT_TRUE(rec().wait_applied(g, milliseconds(0)));
}

TEST_F(ReconcilerTest, DriftIsRepairedCountedAndAudited) {
  pass();
  // Behind the reconciler's back: an element goes from nftables, a peer from WireGuard.
  filter::FilterDelta gone;
  gone.remove_allowed = {{ip("10.255.0.3"), Protocol::kUdp, 3478, ""}};
  gone.remove_agents = {{ip("10.255.0.4"), ""}};
  ASSERT_TRUE(nft_.apply(gone));
  wg::DeviceDelta peer_gone;
  wg::PeerChange remove_a;
  remove_a.public_key = key_of(1);
  remove_a.remove = true;
  peer_gone.peers.push_back(remove_a);
  ASSERT_TRUE(wg_.apply(peer_gone));

  clock_.advance(milliseconds(5000));
  auto r = pass();
  EXPECT_TRUE(r.drift);
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(r.to_string(),
            "generation 4 drift applied; wireguard: +1 -0 ~0 peers; nftables: +2 -0 elements; "
            "ebpf: +0 -0 elements");
  EXPECT_EQ(nft_.to_text(), kAllThreeFilter);
  EXPECT_NE(wg_.state().find_peer(key_of(1)), nullptr);

  auto audit = store_.audit_log();
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[0].actor, "reconciler");
  EXPECT_EQ(audit[0].action, "drift.repair");
  EXPECT_EQ(audit[0].target, "wireguard");
  EXPECT_EQ(audit[0].detail, "wireguard: +1 -0 ~0 peers");
  EXPECT_EQ(audit[0].at, clock_.unix);
  EXPECT_EQ(audit[1].target, "nftables");
  EXPECT_EQ(audit[1].detail, "nftables: +2 -0 elements");
  EXPECT_EQ(metric_line("portcullis_drift_repairs_total{layer=\"nftables\"}"),
            "portcullis_drift_repairs_total{layer=\"nftables\"} 1");
  EXPECT_EQ(metric_line("portcullis_drift_repairs_total{layer=\"wireguard\"}"),
            "portcullis_drift_repairs_total{layer=\"wireguard\"} 1");
  EXPECT_EQ(metric_line("portcullis_drift_repairs_total{layer=\"ebpf\"}"),
            "portcullis_drift_repairs_total{layer=\"ebpf\"} 0");

  // Repaired: the next pass is quiet.
  r = pass();
  EXPECT_FALSE(r.drift);
  EXPECT_EQ(r.changing_calls(), 0);
  EXPECT_EQ(store_.audit_log().size(), 2u);
}

TEST_F(ReconcilerTest, AStructuralCheckFailureRebuildsThatLayer) {
  int structure_broken = 0;
  rec_ = std::make_unique<Reconciler>(
      store_, wg_,
      std::vector<FilterLayer>{{"nftables", nft_,
                                [&](const filter::FilterSettings&,
                                    const filter::FilterContents& want) -> Result<LayerCheck> {
                                  if (structure_broken-- > 0)
                                    return LayerCheck{true, "chain 'filter-forward' missing", {}};
                                  return check_contents(nft_, want);
                                }},
                               {"ebpf", bpf_}},
      options_, metrics_, clock_.clock());
  pass();
  structure_broken = 1;  // e.g. `nft flush chain inet portcullis filter-forward`
  auto r = pass();
  EXPECT_TRUE(r.drift);
  EXPECT_EQ(r.layers[1].detail, "nftables: rebuilt (chain 'filter-forward' missing)");
  EXPECT_EQ(nft_.build_calls(), 2u);
  ASSERT_EQ(store_.audit_log().size(), 1u);
  EXPECT_EQ(store_.audit_log()[0].detail, "nftables: rebuilt (chain 'filter-forward' missing)");
}

TEST_F(ReconcilerTest, OneFailingLayerDoesNotStopTheOthersAndIsRetried) {
  pass();
  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  bpf_.fail_apply(1, Error::from_errno(ENOMEM, "update map 'pcl_agent_ports'"));
  auto r = pass();
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(r.failed(), std::vector<std::string>{"ebpf"});
  EXPECT_NE(r.to_string().find("ebpf: +2 -0 elements FAILED: reconcile: apply to ebpf filter: "
                               "update map 'pcl_agent_ports'"),
            std::string::npos)
      << r.to_string();
  EXPECT_NE(wg_.state().find_peer(key_of(5)), nullptr);             // WireGuard applied
  EXPECT_NE(nft_.to_text().find("10.255.0.5"), std::string::npos);  // nftables applied
  EXPECT_EQ(bpf_.to_text().find("10.255.0.5"), std::string::npos);  // ebpf not
  EXPECT_EQ(*store_.applied_generation(), 4);
  EXPECT_EQ(rec().applied_generation(), 4);
  EXPECT_EQ(metric_line("portcullis_reconcile_errors_total{layer=\"ebpf\"}"),
            "portcullis_reconcile_errors_total{layer=\"ebpf\"} 1");

  r = pass();  // the retry
  EXPECT_TRUE(r.applied);
  EXPECT_FALSE(r.drift);  // a retry of generation 5 is not drift
  EXPECT_EQ(r.to_string(),
            "generation 5 applied; wireguard: +0 -0 ~0 peers; nftables: +0 -0 elements; ebpf: +2 "
            "-0 elements");
  EXPECT_EQ(*store_.applied_generation(), 5);
  EXPECT_TRUE(store_.audit_log().empty());
}

TEST_F(ReconcilerTest, AFailingWireguardReadStillAppliesTheFilters) {
  wg_.fail_read(1, Error::from_errno(ENODEV, "read device"));
  auto r = pass();
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(r.failed(), std::vector<std::string>{"wireguard"});
  EXPECT_EQ(nft_.to_text(), kAllThreeFilter);
  EXPECT_EQ(*store_.applied_generation(), 0);
  EXPECT_EQ(rec().applied_generation(), -1);
  r = pass();
  EXPECT_TRUE(r.applied);
  EXPECT_TRUE(r.adoption);  // nothing was applied by this process before
}

TEST_F(ReconcilerTest, AnUnreadableStoreFailsThePassAndChangesNothing) {
  store_.fail_list_devices(1, Error::from_errno(EBUSY, "list devices"));
  auto r = rec().reconcile_once();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EBUSY);
  EXPECT_EQ(calls(), (Calls{0, 0, 0, 0, 0}));
  EXPECT_EQ(metric_line("portcullis_reconcile_passes_total{result=\"failed\"}"),
            "portcullis_reconcile_passes_total{result=\"failed\"} 1");
}

TEST_F(ReconcilerTest, WakesMergeUnderMinIntervalAndResyncRunsOnItsTimer) {
  EXPECT_TRUE(rec().run_due());  // the first pass: at once
  EXPECT_FALSE(rec().run_due());
  auto reads = wg_.read_calls();

  for (int i = 0; i < 5; ++i) rec().wake();
  EXPECT_FALSE(rec().run_due());  // within min_interval of the last pass
  clock_.advance(milliseconds(199));
  EXPECT_FALSE(rec().run_due());
  clock_.advance(milliseconds(1));
  EXPECT_TRUE(rec().run_due());  // one pass for five wakes
  EXPECT_FALSE(rec().run_due());
  EXPECT_EQ(metric_line("portcullis_reconcile_passes_total{result=\"ok\"}"),
            "portcullis_reconcile_passes_total{result=\"ok\"} 2");
  EXPECT_TRUE(rec().last_report()->incremental);
  EXPECT_EQ(wg_.read_calls(), reads);  // a wake pass reads nothing

  clock_.advance(milliseconds(4999));
  EXPECT_FALSE(rec().run_due());
  clock_.advance(milliseconds(1));
  EXPECT_TRUE(rec().run_due());  // the periodic full resync
  EXPECT_FALSE(rec().last_report()->incremental);
  EXPECT_EQ(wg_.read_calls(), reads + 1);
}

TEST_F(ReconcilerTest, AManualPassCountsForTheScheduleAndLeavesItsReport) {
  EXPECT_FALSE(rec().last_report());
  pass();  // e.g. main() before start()
  EXPECT_FALSE(rec().run_due());
  EXPECT_EQ(rec().next_pass(), clock_.steady + milliseconds(5000));
  auto report = rec().last_report();
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->applied);
  EXPECT_EQ(report->layers.size(), 3u);
}

TEST_F(ReconcilerTest, RepeatedFailuresBackOff) {
  EXPECT_TRUE(rec().run_due());
  bpf_.fail_apply(1, Error::from_errno(EIO, "map"));
  bpf_.fail_apply(2, Error::from_errno(EIO, "map"));
  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  clock_.advance(milliseconds(200));
  rec().wake();
  EXPECT_TRUE(rec().run_due());  // fails
  EXPECT_EQ(rec().next_pass(), clock_.steady + milliseconds(500));
  rec().wake();
  clock_.advance(milliseconds(499));
  EXPECT_FALSE(rec().run_due());  // a wake does not cut a backoff short
  clock_.advance(milliseconds(1));
  EXPECT_TRUE(rec().run_due());  // fails again
  EXPECT_EQ(rec().next_pass(), clock_.steady + milliseconds(1000));
  clock_.advance(milliseconds(1000));
  EXPECT_TRUE(rec().run_due());  // succeeds
  EXPECT_TRUE(rec().wait_applied(generation(), milliseconds(0)));
  EXPECT_EQ(rec().next_pass(), clock_.steady + milliseconds(5000));
}

// Reads of every layer, to tell full passes (kernel reads) from incremental ones (none).
struct Reads {
  std::uint64_t wg, nft, bpf;
  bool operator==(const Reads&) const = default;
};

class IncrementalPassTest : public ReconcilerTest {
 protected:
  Reads reads() const { return {wg_.read_calls(), nft_.read_calls(), bpf_.read_calls()}; }
  // A wake pass, min_interval after the previous one.
  ReconcileReport wake_pass() {
    clock_.advance(milliseconds(200));
    rec().wake();
    EXPECT_TRUE(rec().run_due());
    auto r = rec().last_report();
    return r ? *r : ReconcileReport{};
  }
};

TEST_F(IncrementalPassTest, TheFirstPassIsFullEvenWhenWoken) {
  rec().wake();
  EXPECT_TRUE(rec().run_due());
  EXPECT_FALSE(rec().last_report()->incremental);
  EXPECT_EQ(reads(), (Reads{1, 1, 1}));
}

TEST_F(IncrementalPassTest, AWakePassAfterOneChangeReadsNothingAndAppliesOnlyThatDelta) {
  pass();
  Reads before = reads();
  Calls calls_before = calls();
  std::uint64_t touched_before = wg_.peers_touched();
  store_.put_device(device("dev-d", 5, "10.255.0.5", {{Protocol::kUdp, 3478}}));

  auto r = wake_pass();
  EXPECT_TRUE(r.incremental);
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(r.to_string(),
            "generation 5 incremental applied; wireguard: +1 -0 ~0 peers; nftables: +2 -0 "
            "elements; ebpf: +2 -0 elements");
  EXPECT_EQ(reads(), before);  // zero read() / check() calls on every layer
  EXPECT_EQ(calls(),
            (Calls{calls_before.wg_apply + 1, calls_before.nft_apply + 1, calls_before.nft_build,
                   calls_before.bpf_apply + 1, calls_before.bpf_build}));
  EXPECT_EQ(wg_.peers_touched(), touched_before + 1);  // dev-d's peer alone
  EXPECT_NE(wg_.state().find_peer(key_of(5)), nullptr);
  EXPECT_NE(nft_.to_text().find("allow 10.255.0.5 udp 3478 device=dev-d"), std::string::npos);
  EXPECT_TRUE(rec().wait_applied(generation(), milliseconds(0)));

  // Revoke it again: again only its delta, still no read.
  ASSERT_TRUE(store_.revoke_device("dev-d", clock_.unix));
  r = wake_pass();
  EXPECT_TRUE(r.incremental);
  EXPECT_EQ(r.to_string(),
            "generation 6 incremental applied; wireguard: +0 -1 ~0 peers; nftables: +0 -2 "
            "elements; ebpf: +0 -2 elements");
  EXPECT_EQ(reads(), before);
  EXPECT_EQ(nft_.to_text(), kAllThreeFilter);
  EXPECT_EQ(bpf_.to_text(), kAllThreeFilter);
  EXPECT_EQ(wg_.state().find_peer(key_of(5)), nullptr);

  // A wake with nothing new: no read, no write.
  Calls idle = calls();
  r = wake_pass();
  EXPECT_TRUE(r.incremental);
  EXPECT_EQ(r.changing_calls(), 0);
  EXPECT_EQ(calls(), idle);
  EXPECT_EQ(reads(), before);
}

TEST_F(IncrementalPassTest, AWakePassReadsOnlyTheDevicesChangedSinceTheLastPass) {
  pass();
  EXPECT_EQ(store_.list_all_calls(), 1u);
  // A new key and a new address for dev-b, new ports for dev-c, dev-a unchanged.
  store_.put_device(device("dev-b", 12, "10.255.0.13", {{Protocol::kUdp, 3478}}));
  store_.put_device(device("dev-c", 3, "10.255.0.4", {{Protocol::kTcp, 5900}}));

  auto r = wake_pass();
  EXPECT_TRUE(r.incremental);
  EXPECT_EQ(store_.list_all_calls(), 1u) << "no read of every device";
  EXPECT_EQ(store_.changed_after_calls(), 1u);
  EXPECT_EQ(r.to_string(),
            "generation 6 incremental applied; wireguard: +1 -1 ~0 peers; nftables: +3 -4 "
            "elements; ebpf: +3 -4 elements");
  // What a full pass from scratch would have built.
  constexpr const char* kWant =
      "filter tunnel=portcullis0 gateway=10.255.0.1 pool=10.255.0.0/16 operators=192.0.2.0/24\n"
      "agent 10.255.0.2 device=dev-a\n"
      "agent 10.255.0.4 device=dev-c\n"
      "agent 10.255.0.13 device=dev-b\n"
      "allow 10.255.0.2 tcp 5985 device=dev-a\n"
      "allow 10.255.0.4 tcp 5900 device=dev-c\n"
      "allow 10.255.0.13 udp 3478 device=dev-b\n";
  EXPECT_EQ(nft_.to_text(), kWant);
  EXPECT_EQ(bpf_.to_text(), kWant);
  EXPECT_EQ(wg_.state().find_peer(key_of(2)), nullptr);
  ASSERT_NE(wg_.state().find_peer(key_of(12)), nullptr);
  EXPECT_EQ(wg_.state().find_peer(key_of(12))->allowed_ips,
            std::vector<IpPrefix>{*IpPrefix::parse("10.255.0.13/32")});
  EXPECT_EQ(wg_.state().peers.size(), 3u);

  // The next wake sees only what changed after this pass: nothing.
  r = wake_pass();
  EXPECT_TRUE(r.incremental);
  EXPECT_EQ(r.changing_calls(), 0);

  // And the resync that follows agrees with the belief: no drift, no write.
  Calls before = calls();
  clock_.advance(milliseconds(5000));
  EXPECT_TRUE(rec().run_due());
  EXPECT_FALSE(rec().last_report()->incremental);
  EXPECT_FALSE(rec().last_report()->drift) << rec().last_report()->to_string();
  EXPECT_EQ(calls(), before);
}

TEST_F(IncrementalPassTest, TwoChangedDevicesMaySwapAddressesInOneWakePass) {
  pass();
  store_.put_device(device("dev-a", 1, "10.255.0.3"));
  store_.put_device(
      device("dev-b", 2, "10.255.0.2", {{Protocol::kTcp, 5985}, {Protocol::kUdp, 3478}}));
  auto r = wake_pass();
  EXPECT_TRUE(r.incremental) << "both holders changed: no conflict";
  EXPECT_TRUE(r.applied);
  // (Set elements are keyed by address, protocol and port; the device comment is a label.)
  EXPECT_NE(nft_.to_text().find("allow 10.255.0.2 udp 3478 device=dev-b"), std::string::npos);
  EXPECT_EQ(nft_.to_text().find("allow 10.255.0.3 udp 3478"), std::string::npos);
  EXPECT_EQ(wg_.state().find_peer(key_of(1))->allowed_ips,
            std::vector<IpPrefix>{*IpPrefix::parse("10.255.0.3/32")});
  clock_.advance(milliseconds(5000));
  EXPECT_TRUE(rec().run_due());
  EXPECT_FALSE(rec().last_report()->drift) << rec().last_report()->to_string();
}

// The store prevents two active devices with one key or address; if it ever held them, which
// one wins must not depend on which of them changed last: only a full pass decides.
TEST_F(IncrementalPassTest, AChangedDeviceClaimingAnotherDevicesAddressMakesTheWakePassFull) {
  pass();
  Reads before = reads();
  store_.put_device(device("dev-z", 9, "10.255.0.2"));  // dev-a's address
  auto r = wake_pass();
  EXPECT_FALSE(r.incremental);
  EXPECT_EQ(store_.list_all_calls(), 2u);
  EXPECT_EQ(reads(), (Reads{before.wg + 1, before.nft + 1, before.bpf + 1}));
  // desired_state() decides in id order: dev-a keeps it, dev-z is left out.
  EXPECT_EQ(nft_.to_text(), kAllThreeFilter);
  EXPECT_EQ(wg_.state().find_peer(key_of(9)), nullptr);

  // While the conflict stands every wake pass is full; once it is gone they are incremental.
  store_.put_device(device("dev-c", 3, "10.255.0.4", {{Protocol::kTcp, 5900}}));
  EXPECT_FALSE(wake_pass().incremental);
  ASSERT_TRUE(store_.revoke_device("dev-z", clock_.unix));
  EXPECT_FALSE(wake_pass().incremental);  // the belief still had the conflict
  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  r = wake_pass();
  EXPECT_TRUE(r.incremental);
  EXPECT_EQ(r.to_string(),
            "generation 8 incremental applied; wireguard: +1 -0 ~0 peers; nftables: +2 -0 "
            "elements; ebpf: +2 -0 elements");

  // A changed key that an unchanged device holds: full again.
  store_.put_device(device("dev-e", 1, "10.255.0.6"));  // dev-a's key
  EXPECT_FALSE(wake_pass().incremental);
  EXPECT_EQ(wg_.state().find_peer(key_of(1))->allowed_ips,
            std::vector<IpPrefix>{*IpPrefix::parse("10.255.0.2/32")});
}

TEST_F(IncrementalPassTest, DriftIsRepairedByTheResyncNotByAWakePass) {
  pass();
  filter::FilterDelta gone;
  gone.remove_allowed = {{ip("10.255.0.3"), Protocol::kUdp, 3478, ""}};
  ASSERT_TRUE(nft_.apply(gone));
  Reads before = reads();

  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  auto r = wake_pass();
  EXPECT_TRUE(r.incremental);
  EXPECT_FALSE(r.drift);
  EXPECT_EQ(reads(), before);
  EXPECT_EQ(nft_.to_text().find("allow 10.255.0.3 udp 3478"), std::string::npos);  // not seen

  clock_.advance(milliseconds(5000));  // the resync timer, no wake
  EXPECT_TRUE(rec().run_due());
  r = *rec().last_report();
  EXPECT_FALSE(r.incremental);
  EXPECT_TRUE(r.drift);
  EXPECT_EQ(reads(), (Reads{before.wg + 1, before.nft + 1, before.bpf + 1}));
  EXPECT_EQ(r.to_string(),
            "generation 5 drift applied; wireguard: +0 -0 ~0 peers; nftables: +1 -0 elements; "
            "ebpf: +0 -0 elements");
  EXPECT_NE(nft_.to_text().find("allow 10.255.0.3 udp 3478 device=dev-b"), std::string::npos);
  EXPECT_EQ(metric_line("portcullis_drift_repairs_total{layer=\"nftables\"}"),
            "portcullis_drift_repairs_total{layer=\"nftables\"} 1");
}

TEST_F(IncrementalPassTest, WakesNeverPostponeTheFullPassBeyondTheResyncInterval) {
  pass();
  for (int i = 0; i < 24; ++i) {  // 24 x 200 ms: still within the 5 s resync interval
    store_.put_device(device(("dev-x" + std::to_string(i)).c_str(), 10 + i, nullptr));
    EXPECT_TRUE(wake_pass().incremental) << i;
  }
  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  EXPECT_FALSE(wake_pass().incremental);  // 5 s since the last full pass
  EXPECT_TRUE(wake_pass().incremental);
}

TEST_F(IncrementalPassTest, AFailedApplyMakesTheNextPassFull) {
  pass();
  bpf_.fail_apply(1, Error::from_errno(EIO, "map"));
  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  auto r = wake_pass();
  EXPECT_TRUE(r.incremental);
  EXPECT_FALSE(r.applied);
  Reads before = reads();

  clock_.advance(milliseconds(500));  // the backoff
  rec().wake();
  EXPECT_TRUE(rec().run_due());
  r = *rec().last_report();
  EXPECT_FALSE(r.incremental);
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(reads(), (Reads{before.wg + 1, before.nft + 1, before.bpf + 1}));
  EXPECT_EQ(r.to_string(),
            "generation 5 applied; wireguard: +0 -0 ~0 peers; nftables: +0 -0 elements; ebpf: "
            "+2 -0 elements");
  EXPECT_EQ(bpf_.to_text(), nft_.to_text());

  ASSERT_TRUE(store_.revoke_device("dev-d", clock_.unix));
  EXPECT_TRUE(wake_pass().incremental);  // the belief holds again
}

TEST_F(IncrementalPassTest, HealthIsRefreshedByItsOwnReadBetweenFullPasses) {
  options_.health_interval = milliseconds(1000);
  pass();
  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  wake_pass();
  EXPECT_EQ(rec().health()->find("dev-d"), nullptr);  // not read yet
  EXPECT_FALSE(rec().refresh_health_if_due());        // 200 ms since the full pass
  for (auto& p : wg_.state().peers) {
    if (p.public_key == key_of(5)) {
      p.last_handshake = wg::Clock::time_point(std::chrono::seconds(clock_.unix - 1));
    }
  }
  std::uint64_t wg_reads = wg_.read_calls();
  clock_.advance(milliseconds(800));
  EXPECT_TRUE(rec().refresh_health_if_due());
  EXPECT_EQ(wg_.read_calls(), wg_reads + 1);
  ASSERT_NE(rec().health()->find("dev-d"), nullptr);
  EXPECT_EQ(rec().health()->find("dev-d")->state, TunnelState::kFresh);
  EXPECT_FALSE(rec().refresh_health_if_due());
}

TEST_F(ReconcilerTest, TunnelHealthTransitionsAreCountedAuditedAndExposed) {
  // dev-a handshakes now, dev-b never; dev-c is not in the kernel yet on the first read.
  pass();
  auto& peers = wg_.state().peers;
  for (auto& p : peers) {
    if (p.public_key == key_of(1)) {
      p.last_handshake = wg::Clock::time_point(std::chrono::seconds(clock_.unix - 5));
      p.rx_bytes = 1000;
      p.tx_bytes = 2000;
    }
  }
  pass();  // dev-a: dead (not in the kernel on the first read) -> fresh
  auto snap = rec().health();
  ASSERT_EQ(snap->tunnels.size(), 3u);
  EXPECT_EQ(snap->find("dev-a")->state, TunnelState::kFresh);
  EXPECT_EQ(snap->find("dev-b")->state, TunnelState::kDead);
  auto audit = store_.audit_log();
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0].action, "tunnel.health");
  EXPECT_EQ(audit[0].target, "dev-a");
  EXPECT_EQ(audit[0].detail, "dead -> fresh (last handshake 5 s ago)");

  clock_.advance(milliseconds(200'000));  // 205 s since the handshake
  pass();
  EXPECT_EQ(rec().health()->find("dev-a")->state, TunnelState::kStale);
  EXPECT_EQ(rec().health()->find("dev-a")->since, clock_.unix);
  clock_.advance(milliseconds(400'000));  // 605 s
  pass();
  EXPECT_EQ(rec().health()->find("dev-a")->state, TunnelState::kDead);
  audit = store_.audit_log();
  ASSERT_EQ(audit.size(), 3u);
  EXPECT_EQ(audit[2].detail, "stale -> dead (last handshake 605 s ago)");

  EXPECT_EQ(metric_line("portcullis_tunnel_transitions_total{to=\"fresh\"}"),
            "portcullis_tunnel_transitions_total{to=\"fresh\"} 1");
  EXPECT_EQ(metric_line("portcullis_tunnel_transitions_total{to=\"stale\"}"),
            "portcullis_tunnel_transitions_total{to=\"stale\"} 1");
  EXPECT_EQ(metric_line("portcullis_tunnel_transitions_total{to=\"dead\"}"),
            "portcullis_tunnel_transitions_total{to=\"dead\"} 1");
  EXPECT_EQ(metric_line("portcullis_tunnels{state=\"dead\"}"),
            "portcullis_tunnels{state=\"dead\"} 3");
  EXPECT_EQ(metric_line("portcullis_tunnel_handshake_age_seconds{"),
            "portcullis_tunnel_handshake_age_seconds{device=\"dev-a\"} 605");
  EXPECT_EQ(metric_line("portcullis_tunnel_receive_bytes_total{device=\"dev-a\"}"),
            "portcullis_tunnel_receive_bytes_total{device=\"dev-a\"} 1000");
  EXPECT_EQ(metric_line("portcullis_tunnel_transmit_bytes_total{device=\"dev-a\"}"),
            "portcullis_tunnel_transmit_bytes_total{device=\"dev-a\"} 2000");
}

TEST_F(ReconcilerTest, MassTransitionsAreAuditedUpToALimitThenSummarised) {
  options_.max_transition_audits = 1;
  pass();
  for (auto& p : wg_.state().peers) {
    p.last_handshake = wg::Clock::time_point(std::chrono::seconds(clock_.unix));
  }
  pass();
  auto audit = store_.audit_log();
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[0].target, "dev-a");
  EXPECT_EQ(audit[1].target, "");
  EXPECT_EQ(audit[1].detail, "2 more tunnel health changes not logged one by one");
  EXPECT_EQ(metric_line("portcullis_tunnel_transitions_total{to=\"fresh\"}"),
            "portcullis_tunnel_transitions_total{to=\"fresh\"} 3");
}

TEST_F(ReconcilerTest, PortCountersAreReadAtScrapeTime) {
  int reads = 0;
  options_.port_counters = [&]() -> Result<std::vector<bpf::PortCounters>> {
    ++reads;
    bpf::PortCounters allowed;
    allowed.agent = ip("10.255.0.2");
    allowed.device = "dev-a";
    allowed.protocol = IPPROTO_TCP;
    allowed.port = 5985;
    allowed.packets = 12;
    allowed.bytes = 3400;
    bpf::PortCounters dropped = allowed;
    dropped.port = 22;
    dropped.reason = bpf::VerdictReason::kPortNotAllowed;
    dropped.packets = 3;
    dropped.bytes = 180;
    return std::vector<bpf::PortCounters>{dropped, allowed, dropped};  // a duplicate is summed
  };
  pass();
  EXPECT_EQ(reads, 0);
  std::string text = metrics_.render();
  EXPECT_EQ(reads, 1);
  EXPECT_NE(text.find("# TYPE portcullis_filter_packets_total counter\n"
                      "portcullis_filter_packets_total{device=\"dev-a\",agent=\"10.255.0.2\","
                      "protocol=\"tcp\",port=\"22\",direction=\"to-agent\",verdict=\"dropped\","
                      "reason=\"port-not-allowed\"} 6\n"
                      "portcullis_filter_packets_total{device=\"dev-a\",agent=\"10.255.0.2\","
                      "protocol=\"tcp\",port=\"5985\",direction=\"to-agent\",verdict=\"allowed\","
                      "reason=\"allowed\"} 12\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("portcullis_filter_bytes_total{device=\"dev-a\",agent=\"10.255.0.2\","
                      "protocol=\"tcp\",port=\"5985\",direction=\"to-agent\",verdict=\"allowed\","
                      "reason=\"allowed\"} 3400\n"),
            std::string::npos);
}

TEST_F(ReconcilerTest, PromtoolAcceptsTheReconcilersExposition) {
  options_.port_counters = [&]() -> Result<std::vector<bpf::PortCounters>> {
    bpf::PortCounters known;
    known.agent = ip("10.255.0.2");
    known.device = "dev-a";
    known.protocol = IPPROTO_TCP;
    known.port = 5985;
    known.packets = 12;
    bpf::PortCounters malformed;  // no agent, no port
    malformed.reason = bpf::VerdictReason::kMalformed;
    malformed.direction = bpf::Direction::kFromAgent;
    malformed.packets = 1;
    return std::vector<bpf::PortCounters>{known, malformed};
  };
  pass();
  wg_.state().peers[0].last_handshake = wg::Clock::time_point(std::chrono::seconds(clock_.unix));
  pass();
  std::string text = metrics_.render();
  auto check = metrics::testing::promtool_check(text);
  if (!check) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  EXPECT_TRUE(check->ok) << check->output << "\n" << text;
  EXPECT_EQ(check->output, "") << text;
}

TEST_F(ReconcilerTest, TheThreadAppliesWakesAndStops) {
  // The real clock: the loop waits on its condition variable, the test on wait_applied.
  rec_ = std::make_unique<Reconciler>(store_, wg_,
                                      std::vector<FilterLayer>{{"nftables", nft_}, {"ebpf", bpf_}},
                                      options_, metrics_);
  rec_->start();
  EXPECT_TRUE(rec_->wait_applied(generation(), std::chrono::seconds(10)));
  store_.put_device(device("dev-d", 5, "10.255.0.5"));
  rec_->wake();
  EXPECT_TRUE(rec_->wait_applied(generation(), std::chrono::seconds(10)));
  rec_->stop();
  EXPECT_NE(wg_.state().find_peer(key_of(5)), nullptr);
  rec_->stop();  // twice is fine
}

}  // namespace
}  // namespace portcullis::reconciler

namespace portcullis::reconciler {
namespace {

// 10,000 devices with 5 ports each: what a restart (adoption), an unchanged resync pass, a
// one-device change and a scrape cost in the reconciler itself. The kernel (the fakes) already
// holds the state, as after a daemon restart; the fake WireGuard device is seeded directly
// because its apply() moves allowed IPs between peers in O(peers) per prefix.
TEST(ReconcilerScale, TenThousandDevices) {
  FakeStore store;
  for (int i = 0; i < 10000; ++i) {
    state::Device d;
    d.id = "dev" + std::to_string(100000 + i);
    KeyBytes b{};
    b[0] = static_cast<std::uint8_t>(i & 0xff);
    b[1] = static_cast<std::uint8_t>(i >> 8);
    b[31] = 0x42;
    d.wg_key = Key(b);
    d.address =
        IpAddress::v4_host_order((10u << 24) | (255u << 16) | static_cast<std::uint32_t>(2 + i));
    d.ports = {{Protocol::kTcp, 5985},
               {Protocol::kTcp, 5986},
               {Protocol::kTcp, 5900},
               {Protocol::kUdp, 3478},
               {Protocol::kTcp, 47002}};
    store.put_device(std::move(d));
  }
  ReconcilerOptions o = options();
  FakeClock clock;
  FakeWireguardDevice wg("portcullis0");
  FakePacketFilter nft, bpf;
  {
    auto want = desired_state(*store.list_devices(), o.gateway);
    wg.state().private_key = o.gateway.private_key;
    wg.state().public_key = o.gateway.private_key.public_key();
    wg.state().listen_port = 30000;
    for (auto p : want.device.peers) {
      p.last_handshake = wg::Clock::time_point(std::chrono::seconds(clock.unix - 30));
      wg.state().peers.push_back(std::move(p));
    }
    ASSERT_TRUE(nft.build(o.filter, want.contents));
    ASSERT_TRUE(bpf.build(o.filter, want.contents));
  }
  metrics::Registry metrics;
  Reconciler rec(store, wg, {{"nftables", nft}, {"ebpf", bpf}}, o, metrics, clock.clock());
  auto time_ms = [](auto&& f) {
    auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
  };
  Result<ReconcileReport> r;
  double adopt_ms = time_ms([&] { r = rec.reconcile_once(); });
  ASSERT_TRUE(r && r->applied);
  EXPECT_TRUE(r->adoption);
  EXPECT_EQ(r->changing_calls(), 0);
  EXPECT_EQ(rec.health()->counts[0], 10000u);  // all fresh
  double resync_ms = time_ms([&] { r = rec.reconcile_once(); });
  ASSERT_TRUE(r && r->applied);
  EXPECT_EQ(r->changing_calls(), 0);
  ASSERT_TRUE(store.set_device_ports("dev104242", {{Protocol::kTcp, 22}}));
  double change_ms = time_ms([&] { r = rec.reconcile_once(); });
  ASSERT_TRUE(r && r->applied);
  EXPECT_EQ(r->changing_calls(), 2) << r->to_string();  // one delta per filter layer
  // The same change as an API request makes it: a wake pass reads and diffs that device alone
  // (its time here is mostly the fake filters re-sorting their 50,000 entries on apply).
  ASSERT_TRUE(store.set_device_ports("dev104243", {{Protocol::kTcp, 22}}));
  const std::uint64_t listed = store.list_all_calls();
  clock.advance(o.schedule.min_interval);
  rec.wake();
  double wake_ms = time_ms([&] { ASSERT_TRUE(rec.run_due()); });
  ASSERT_TRUE(rec.last_report()->incremental);
  EXPECT_EQ(rec.last_report()->changing_calls(), 2) << rec.last_report()->to_string();
  EXPECT_EQ(store.list_all_calls(), listed);
  std::string text;
  double render_ms = time_ms([&] { text = metrics.render(); });
  std::printf(
      "10000 devices: adoption pass %.1f ms, unchanged pass %.1f ms, one-device change "
      "%.1f ms (full pass), %.2f ms (wake pass), scrape %.1f ms (%zu bytes)\n",
      adopt_ms, resync_ms, change_ms, wake_ms, render_ms, text.size());
  // Times are printed, not asserted: a loaded CI machine under ASan is no benchmark
  // (bench/daemon_bench measures these in a Release build).
}

}  // namespace
}  // namespace portcullis::reconciler
