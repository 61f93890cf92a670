#pragma once
// The reconciler: desired state (Store) -> WireGuard peers and every packet filter layer, always
// as diffs. One pass reads the store generation and the devices, diffs them against what each
// layer holds, applies only non-empty deltas and, when every layer succeeded, records the
// generation as applied. Passes are of two kinds (kube-proxy's full and partial syncs):
//
//   full         reads the kernel (WireGuard read(), the layers' check()) and diffs against it:
//                the first pass of the process, the periodic resync (and a wake pass once
//                resync_interval has gone by since the last full one, so a stream of wakes never
//                postpones it), and every pass after a failed one;
//   incremental  a pass asked for by wake(): reads only the devices changed since the last
//                successful pass (Store::list_devices_changed_after) and diffs their new share
//                of the kernel state against their old one, as this process believes each layer
//                holds it, without any kernel read: one changed device costs reading and diffing
//                that device, not a read of 10,000 devices, 10,000 peers and 50,000 set elements.
//                If a changed device claims a WireGuard key or an address another device holds,
//                or the belief holds such a conflict, the pass is a full one instead: only the
//                whole list says who wins.
//
// The first pass adopts what the kernel holds (an unchanged kernel sees no write). Full passes
// that find differences although nothing new was wanted repair drift (counted in
// portcullis_drift_repairs_total{layer}, audit-logged as "drift.repair"). Incremental passes
// cannot see drift: an element removed behind the reconciler's back is put back by the next full
// pass (within resync_interval), not by a wake pass. A failed apply (or any failed layer) drops
// the belief, so the next pass is a full one.
//
// Tunnel health comes from WireGuard handshake times, so only from reads: every full pass, and
// between them a health-only read by the loop every health_interval (default 10 s). The health
// snapshot (/metrics, the operator API) is therefore at most health_interval old, and a device
// added by a wake pass appears in it at the next such read.
//
// Wiring (portcullisd main):
//
//   metrics::Registry metrics;
//   reconciler::ReconcilerOptions opts;
//   opts.gateway = {wg_private_key, 30000};
//   opts.filter = {"portcullis0", gateway_ip, pool, operator_networks};
//   opts.port_counters = [&bpf] { return bpf->read_counters(); };  // optional, for /metrics
//   reconciler::Reconciler rec(*store, *wg_device,
//                              {reconciler::nftables_layer(*nft), {"ebpf", *bpf}}, opts, metrics);
//   rec.start();                        // first pass now, then on wake() and every resync
//   ...  store change (API) -> rec.wake(); vpn/ready -> rec.wait_applied(generation, 10s)
//   rec.stop();                         // SIGTERM: the kernel keeps tunnels and filters

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "controlplane/metrics/registry.h"
#include "controlplane/reconciler/desired_state.h"
#include "controlplane/reconciler/filter_layer.h"
#include "controlplane/reconciler/pass_scheduler.h"
#include "controlplane/reconciler/tunnel_health.h"
#include "controlplane/state/store.h"
#include "dataplane/bpf/bpf_filter.h"
#include "dataplane/filter/packet_filter.h"
#include "dataplane/wireguard/device.h"

namespace portcullis::reconciler {

// Time as the reconciler sees it; tests drive both.
struct ReconcilerClock {
  std::function<std::int64_t()> unix_seconds;                     // audit times, handshake ages
  std::function<std::chrono::steady_clock::time_point()> steady;  // pass scheduling
  static ReconcilerClock system();
};

struct ReconcilerOptions {
  GatewaySettings gateway;
  filter::FilterSettings filter;
  ScheduleOptions schedule;
  HealthThresholds health;
  // At most this many tunnel transitions are audit-logged one by one per pass; the rest become
  // one summary event (a gateway back after a long outage would otherwise write 10,000 rows).
  std::size_t max_transition_audits = 100;
  // Between full passes, the loop refreshes tunnel health with a WireGuard read this often.
  std::chrono::milliseconds health_interval{10000};
  // Optional: the eBPF per-port counters, read at scrape time for /metrics.
  std::function<Result<std::vector<bpf::PortCounters>>()> port_counters;
};

// What one pass did to one layer ("wireguard", or a filter layer's name).
struct LayerReport {
  std::string name;
  std::optional<Error> error;  // this layer failed (read, check or apply)
  bool rebuilt = false;        // a cold build (not installed, or its structure differed)
  std::size_t added = 0;       // peers, or set elements
  std::size_t removed = 0;
  std::size_t changed = 0;  // peers updated in place; device fields count as one
  int changing_calls = 0;   // apply() / build() calls made
  std::string detail;       // "nftables: +2 -0 elements", "ebpf: rebuilt (not installed)"

  bool ok() const { return !error; }
  bool differed() const { return rebuilt || added || removed || changed; }
};

struct ReconcileReport {
  std::int64_t generation = 0;
  bool adoption = false;     // the first pass of this process
  bool drift = false;        // differences found although this generation was already applied
  bool incremental = false;  // diffed against this process's belief, no kernel read
  bool applied = false;      // every layer succeeded and the generation is recorded as applied
  std::optional<Error> store_error;  // recording the applied generation failed
  std::vector<LayerReport> layers;   // "wireguard" first, then the filter layers in order

  int changing_calls() const;
  std::vector<std::string> failed() const;  // names of failed layers, and "store"
  std::string to_string() const;            // one line, for logs and tests
};

class Reconciler {
 public:
  Reconciler(state::Store& store, wg::WireguardDevice& device, std::vector<FilterLayer> layers,
             ReconcilerOptions options, metrics::Registry& metrics,
             ReconcilerClock clock = ReconcilerClock::system());
  ~Reconciler();  // stop()s
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // One pass now, on the calling thread (serialised with the loop's passes; it counts for the
  // schedule, so start() after it waits for the next wake or resync). Fails only when the store
  // cannot be read; a failing layer is reported in the report.
  Result<ReconcileReport> reconcile_once();

  // The loop: a thread that runs due passes (see PassScheduler). Wakes merge.
  void start();
  void stop();
  void wake();
  // True once a pass of this process has applied `generation` (or a later one).
  bool wait_applied(std::int64_t generation, std::chrono::milliseconds timeout);
  // The highest generation applied by this process; -1 before the first successful pass.
  std::int64_t applied_generation() const;

  // One step of the loop, for the thread and for tests: runs a pass if one is due on the
  // clock's steady time; true if it ran.
  bool run_due();
  PassScheduler::TimePoint next_pass() const;
  // Between full passes: a WireGuard read for tunnel health if health_interval has gone by since
  // the last one (and a pass has succeeded); true if it read. The loop calls it.
  bool refresh_health_if_due();

  // Runs fn while no pass runs (the dataplane objects belong to the passes), for read-only
  // inspection of the filters, e.g. the operator API's /api/explain and /api/ruleset.
  void inspect(const std::function<void()>& fn);

  std::shared_ptr<const HealthSnapshot> health() const { return health_.snapshot(); }
  // The report of the last finished pass (for /health); empty before the first.
  std::optional<ReconcileReport> last_report() const;

 private:
  struct Instruments;

  // woken: a wake asked for this pass (it may be incremental).
  Result<ReconcileReport> run_pass(bool woken);
  // believed: diff against it instead of reading the device (an incremental pass).
  LayerReport reconcile_wireguard(const Desired& want, const wg::DeviceState* believed);
  LayerReport reconcile_filter(FilterLayer& layer, const Desired& want,
                               const filter::FilterContents* believed);
  void record_drift(const LayerReport& layer, std::int64_t generation);
  // peers: (device id, its WireGuard key) of every tunnel the kernel should hold.
  void record_health(const std::vector<std::pair<const std::string*, const Key*>>& peers,
                     const wg::DeviceState& have);
  void log_conflicts(const std::vector<std::string>& conflicts);
  void log_failures(const ReconcileReport& report);
  void collect(metrics::Exposition& e);
  void run();

  state::Store& store_;
  wg::WireguardDevice& device_;
  std::vector<FilterLayer> layers_;
  ReconcilerOptions options_;
  ReconcilerClock clock_;
  std::unique_ptr<Instruments> instruments_;
  HealthTracker health_;

  std::mutex pass_mu_;  // one pass at a time; also guards the dataplane objects for collectors
  std::set<std::string> logged_conflicts_;
  std::set<std::string> failing_layers_;  // logged once until they recover
  std::int64_t store_applied_ = -1;       // the last value written to the store
  // What every layer holds as far as this process knows: the devices behind the Desired of the
  // last pass, if it succeeded (trimmed to what desired_state() reads). Empty before the first
  // successful pass and after a failed one.
  struct Belief {
    std::int64_t generation = -1;                            // the store generation that pass read
    std::unordered_map<std::string, state::Device> devices;  // in the kernel state, by id
    std::unordered_map<Key, const std::string*> by_key;      // -> the id key in `devices`
    std::unordered_map<std::uint32_t, const std::string*> by_address;
    bool conflicts = false;  // some device was left out: only full passes decide those
  };
  // A wake pass's reads: the changed devices' wanted share and the share the belief had.
  struct ChangedShare {
    std::vector<state::Device> devices;  // changed since the belief's generation
    Desired want;                        // desired_state(devices)
    Desired had;                         // desired_state(their believed versions)
  };
  static Belief make_belief(std::int64_t generation, const std::vector<state::Device>& devices,
                            const Desired& want);
  // Empty when the changes need a full pass (a conflict).
  static std::optional<ChangedShare> changed_share(const Belief& belief,
                                                   std::vector<state::Device> changed,
                                                   const GatewaySettings& gateway);
  static void update_belief(Belief& belief, std::int64_t generation, const ChangedShare& c);
  std::optional<Belief> belief_;
  PassScheduler::TimePoint last_full_pass_{};
  // Steady time of the last WireGuard read for health (atomic: the loop reads it to sleep).
  std::atomic<PassScheduler::TimePoint::rep> health_read_at_{0};
  bool health_read_failing_ = false;  // logged once until it recovers

  mutable std::mutex report_mu_;
  std::optional<ReconcileReport> last_report_;

  mutable std::mutex applied_mu_;
  std::condition_variable applied_cv_;
  std::int64_t applied_ = -1;

  mutable std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  PassScheduler scheduler_;
  bool stopping_ = false;
  bool woken_ = false;
  bool store_read_failing_ = false;  // logged once until it recovers
  std::thread thread_;

  metrics::CollectorHandle collector_;  // last: removed first
};

}  // namespace portcullis::reconciler
