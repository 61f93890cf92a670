#include "controlplane/reconciler/reconciler.h"

#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "dataplane/base/log.h"
#include "dataplane/wireguard/peer_diff.h"

namespace portcullis::reconciler {
namespace {

constexpr double kPassBuckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

std::string counts_text(std::size_t added, std::size_t removed) {
  return "+" + std::to_string(added) + " -" + std::to_string(removed);
}

// The device as the last successful pass left it, for a diff without a read. Takes the peers
// over: the belief is replaced or dropped at the end of every pass anyway.
wg::DeviceState believed_device(wg::DeviceConfig&& config, const std::string& ifname) {
  wg::DeviceState s;
  s.ifname = ifname;
  s.private_key = std::move(config.private_key);
  s.listen_port = config.listen_port.value_or(0);
  s.fwmark = config.fwmark.value_or(0);
  s.peers = std::move(config.peers);
  return s;
}

// The device as desired_state() reads it: the hostname and inventory stay in the store.
state::Device trimmed(const state::Device& d) {
  state::Device t;
  t.id = d.id;
  t.wg_key = d.wg_key;
  t.address = d.address;
  t.ports = d.ports;
  t.status = d.status;
  t.generation = d.generation;
  return t;
}

}  // namespace

ReconcilerClock ReconcilerClock::system() {
  return ReconcilerClock{[] {
                           return std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                               .count();
                         },
                         [] { return std::chrono::steady_clock::now(); }};
}

int ReconcileReport::changing_calls() const {
  int n = 0;
  for (const auto& l : layers) n += l.changing_calls;
  return n;
}

std::vector<std::string> ReconcileReport::failed() const {
  std::vector<std::string> out;
  for (const auto& l : layers) {
    if (!l.ok()) out.push_back(l.name);
  }
  if (store_error) out.push_back("store");
  return out;
}

std::string ReconcileReport::to_string() const {
  std::string s = "generation " + std::to_string(generation);
  if (adoption) s += " adoption";
  if (incremental) s += " incremental";
  if (drift) s += " drift";
  s += applied ? " applied" : " not-applied";
  for (const auto& l : layers) {
    s += "; ";
    s += l.detail.empty() ? l.name : l.detail;
    if (l.error) s += " FAILED: " + l.error->message();
  }
  if (store_error) s += "; store FAILED: " + store_error->message();
  return s;
}

// The stored series the reconciler updates, resolved once so a pass never touches the
// registry's lock.
struct Reconciler::Instruments {
  metrics::Counter* passes_ok;
  metrics::Counter* passes_failed;
  metrics::Histogram* pass_seconds;
  metrics::Gauge* applied_generation;
  metrics::Gauge* store_generation;
  std::unordered_map<std::string, metrics::Counter*> drift_repairs;  // by layer
  std::unordered_map<std::string, metrics::Counter*> layer_errors;   // by layer
  metrics::Counter* transitions[kTunnelStates];                      // by new state
};

Reconciler::Reconciler(state::Store& store, wg::WireguardDevice& device,
                       std::vector<FilterLayer> layers, ReconcilerOptions options,
                       metrics::Registry& metrics, ReconcilerClock clock)
    : store_(store),
      device_(device),
      layers_(std::move(layers)),
      options_(std::move(options)),
      clock_(std::move(clock)),
      instruments_(std::make_unique<Instruments>()),
      health_(options_.health),
      scheduler_(options_.schedule) {
  auto& passes = metrics.counter("portcullis_reconcile_passes_total",
                                 "Reconcile passes by result (ok: every layer holds the desired "
                                 "state and the generation is recorded as applied).",
                                 {"result"});
  instruments_->passes_ok = &passes.with({"ok"});
  instruments_->passes_failed = &passes.with({"failed"});
  instruments_->pass_seconds =
      &metrics
           .histogram("portcullis_reconcile_duration_seconds",
                      "Duration of a reconcile pass (store read, kernel reads, diffs, applies).",
                      {}, kPassBuckets)
           .with({});
  instruments_->applied_generation =
      &metrics
           .gauge("portcullis_applied_generation",
                  "The store generation the kernel was last brought to by this process.")
           .with({});
  instruments_->store_generation =
      &metrics.gauge("portcullis_store_generation", "The store generation seen by the last pass.")
           .with({});
  auto& drift = metrics.counter(
      "portcullis_drift_repairs_total",
      "Passes that found a layer differing from an already applied state and repaired it.",
      {"layer"});
  auto& errors =
      metrics.counter("portcullis_reconcile_errors_total",
                      "Layers that failed to read, check or apply in a pass.", {"layer"});
  std::vector<std::string> names = {"wireguard"};
  for (const auto& l : layers_) names.push_back(l.name);
  for (const auto& n : names) {
    instruments_->drift_repairs[n] = &drift.with({n});
    instruments_->layer_errors[n] = &errors.with({n});
  }
  auto& transitions = metrics.counter("portcullis_tunnel_transitions_total",
                                      "Tunnel health changes, by the state entered.", {"to"});
  for (std::size_t s = 0; s < kTunnelStates; ++s) {
    instruments_->transitions[s] =
        &transitions.with({tunnel_state_name(static_cast<TunnelState>(s))});
  }
  collector_ = metrics.add_collector([this](metrics::Exposition& e) { collect(e); });
}

Reconciler::~Reconciler() {
  stop();
  collector_.reset();
}

Result<ReconcileReport> Reconciler::reconcile_once() {
  bool woken;
  {
    std::lock_guard lock(loop_mu_);
    woken = scheduler_.woken();
    scheduler_.pass_started(clock_.steady());
  }
  auto report = run_pass(woken);
  bool ok = report && report->applied;
  std::lock_guard lock(loop_mu_);
  if (!report && !store_read_failing_) {
    log_error("reconcile failed, retrying with backoff", {{"error", report.error().message()}});
  } else if (report && store_read_failing_) {
    log_notice("reconcile recovered", {{"layer", "store"}});
  }
  store_read_failing_ = !report;
  scheduler_.pass_finished(clock_.steady(), ok);
  return report;
}

Reconciler::Belief Reconciler::make_belief(std::int64_t generation,
                                           const std::vector<state::Device>& devices,
                                           const Desired& want) {
  Belief b;
  b.generation = generation;
  b.conflicts = !want.conflicts.empty();
  std::unordered_map<std::string_view, const state::Device*> by_id;
  by_id.reserve(devices.size());
  for (const auto& d : devices) by_id.emplace(d.id, &d);
  b.devices.reserve(want.peer_devices.size());
  b.by_key.reserve(want.peer_devices.size());
  b.by_address.reserve(want.peer_devices.size());
  for (const auto& id : want.peer_devices) {
    const state::Device& d = *by_id.at(id);
    auto [it, fresh] = b.devices.emplace(id, trimmed(d));
    b.by_key.emplace(d.wg_key, &it->first);
    b.by_address.emplace(d.address->v4_host_order(), &it->first);
  }
  return b;
}

std::optional<Reconciler::ChangedShare> Reconciler::changed_share(
    const Belief& belief, std::vector<state::Device> changed, const GatewaySettings& gateway) {
  if (belief.conflicts) return std::nullopt;
  ChangedShare c;
  c.devices = std::move(changed);
  std::vector<state::Device> believed;
  for (const auto& d : c.devices) {
    if (auto it = belief.devices.find(d.id); it != belief.devices.end()) {
      believed.push_back(it->second);
    }
  }
  c.want = desired_state(c.devices, gateway);
  if (!c.want.conflicts.empty()) return std::nullopt;
  // A key or address held by a device that did not change is a conflict only a full pass can
  // settle (a changed device may also have given its own up: that one is not a conflict).
  std::unordered_set<std::string_view> changed_ids;
  for (const auto& d : c.devices) changed_ids.insert(d.id);
  auto held_by_another = [&](const auto& owners, const auto& what, const std::string& id) {
    auto it = owners.find(what);
    return it != owners.end() && *it->second != id && !changed_ids.count(*it->second);
  };
  std::unordered_map<std::string_view, const state::Device*> by_id;
  for (const auto& d : c.devices) by_id.emplace(d.id, &d);
  for (const auto& id : c.want.peer_devices) {  // the changed devices in the kernel state
    const state::Device& d = *by_id.at(id);
    if (held_by_another(belief.by_key, d.wg_key, id) ||
        held_by_another(belief.by_address, d.address->v4_host_order(), id)) {
      return std::nullopt;
    }
  }
  c.had = desired_state(believed, gateway);
  return c;
}

void Reconciler::update_belief(Belief& belief, std::int64_t generation, const ChangedShare& c) {
  belief.generation = generation;
  for (const auto& d : c.devices) {
    auto it = belief.devices.find(d.id);
    if (it == belief.devices.end()) continue;
    // Only while it still names this device: another changed device may have taken it over.
    if (auto k = belief.by_key.find(it->second.wg_key);
        k != belief.by_key.end() && k->second == &it->first) {
      belief.by_key.erase(k);
    }
    if (auto a = belief.by_address.find(it->second.address->v4_host_order());
        a != belief.by_address.end() && a->second == &it->first) {
      belief.by_address.erase(a);
    }
    belief.devices.erase(it);
  }
  std::unordered_map<std::string_view, const state::Device*> by_id;
  for (const auto& d : c.devices) by_id.emplace(d.id, &d);
  for (const auto& id : c.want.peer_devices) {
    const state::Device& d = *by_id.at(id);
    auto [it, fresh] = belief.devices.emplace(id, trimmed(d));
    belief.by_key[d.wg_key] = &it->first;
    belief.by_address[d.address->v4_host_order()] = &it->first;
  }
}

Result<ReconcileReport> Reconciler::run_pass(bool woken) {
  std::lock_guard pass(pass_mu_);
  auto started = clock_.steady();
  // Incremental only when asked for by a wake and while the belief holds; a full pass at least
  // every resync_interval even under a steady stream of wakes.
  bool incremental =
      woken && belief_ && started - last_full_pass_ < options_.schedule.resync_interval;
  std::optional<Belief> believed = std::move(belief_);
  belief_.reset();

  // The generation first: devices read after it are at least that new, so recording it as
  // applied never claims a change that was not read.
  auto generation = store_.generation();
  if (!generation) {
    instruments_->passes_failed->inc();
    belief_ = std::move(believed);  // nothing was applied
    return fail(std::move(generation.error()).wrap("reconcile: read the store generation"));
  }
  std::optional<ChangedShare> changed;
  if (incremental) {
    auto devices = store_.list_devices_changed_after(believed->generation);
    if (!devices) {
      instruments_->passes_failed->inc();
      belief_ = std::move(believed);  // nothing was applied
      return fail(std::move(devices.error())
                      .wrap("reconcile: list devices changed after generation " +
                            std::to_string(believed->generation)));
    }
    changed = changed_share(*believed, std::move(*devices), options_.gateway);
    incremental = changed.has_value();
  }
  std::vector<state::Device> all;
  Desired full;
  if (!incremental) {
    auto devices = store_.list_devices();
    if (!devices) {
      instruments_->passes_failed->inc();
      belief_ = std::move(believed);  // nothing was applied
      return fail(std::move(devices.error()).wrap("reconcile: list devices"));
    }
    all = std::move(*devices);
    full = desired_state(all, options_.gateway);
    log_conflicts(full.conflicts);
  }
  const Desired& want = incremental ? changed->want : full;

  ReconcileReport report;
  report.generation = *generation;
  report.incremental = incremental;
  bool nothing_new;
  {
    std::lock_guard lock(applied_mu_);
    report.adoption = applied_ < 0;
    nothing_new = applied_ == *generation;
  }

  // WireGuard before the filters: a new peer's traffic meets a filter that does not know it yet
  // (dropped), and a removed peer carries no traffic before its entries go. Both orders are
  // safe because the filters deny by default; this one keeps removals quiet.
  if (incremental) {
    // Only the changed devices' share: peers and entries of the others are in neither side.
    wg::DeviceState device = believed_device(std::move(changed->had.device), device_.ifname());
    report.layers.push_back(reconcile_wireguard(want, &device));
    for (auto& layer : layers_) {
      report.layers.push_back(reconcile_filter(layer, want, &changed->had.contents));
    }
  } else {
    last_full_pass_ = started;
    health_read_at_ = started.time_since_epoch().count();
    report.layers.push_back(reconcile_wireguard(want, nullptr));
    for (auto& layer : layers_) report.layers.push_back(reconcile_filter(layer, want, nullptr));
  }
  bool ok = std::all_of(report.layers.begin(), report.layers.end(),
                        [](const LayerReport& l) { return l.ok(); });
  if (nothing_new) {
    for (const auto& l : report.layers) {
      if (l.differed()) {
        report.drift = true;
        record_drift(l, *generation);
      }
    }
  }
  if (ok && *generation != store_applied_) {
    if (auto s = store_.set_applied_generation(*generation); !s) {
      report.store_error = std::move(s.error()).wrap("record applied generation");
      ok = false;
    } else {
      store_applied_ = *generation;
    }
  }
  report.applied = ok;
  if (ok) {
    {
      std::lock_guard lock(applied_mu_);
      applied_ = std::max(applied_, *generation);
    }
    applied_cv_.notify_all();
    instruments_->applied_generation->set(static_cast<double>(*generation));
  }
  instruments_->store_generation->set(static_cast<double>(*generation));
  (ok ? instruments_->passes_ok : instruments_->passes_failed)->inc();
  for (const auto& l : report.layers) {
    if (!l.ok()) instruments_->layer_errors[l.name]->inc();
  }
  instruments_->pass_seconds->observe(
      std::chrono::duration<double>(clock_.steady() - started).count());
  log_failures(report);

  if (report.adoption && ok) {
    log_info("kernel state adopted", {{"generation", std::to_string(*generation)},
                                      {"devices", std::to_string(want.device.peers.size())},
                                      {"changing_calls", std::to_string(report.changing_calls())}});
  } else if (ok && report.changing_calls() > 0 && !report.drift) {
    log_info("reconciled",
             {{"generation", std::to_string(*generation)}, {"changes", report.to_string()}});
  }
  // A failed layer may hold anything between the old and the new state (a split WireGuard
  // message, a half-applied batch): only a read tells, so the next pass is a full one.
  if (ok && incremental) {
    update_belief(*believed, *generation, *changed);
    belief_ = std::move(believed);
  } else if (ok) {
    belief_ = make_belief(*generation, all, full);
  }
  {
    std::lock_guard lock(report_mu_);
    last_report_ = report;
  }
  return report;
}

void Reconciler::inspect(const std::function<void()>& fn) {
  std::lock_guard lock(pass_mu_);
  fn();
}

std::optional<ReconcileReport> Reconciler::last_report() const {
  std::lock_guard lock(report_mu_);
  return last_report_;
}

LayerReport Reconciler::reconcile_wireguard(const Desired& want, const wg::DeviceState* believed) {
  LayerReport r;
  r.name = "wireguard";
  Result<wg::DeviceState> read = wg::DeviceState{};
  if (!believed) {
    read = device_.read();
    if (!read) {
      r.error = std::move(read.error())
                    .wrap("reconcile: read WireGuard device '" + device_.ifname() + "'");
      return r;
    }
    std::vector<std::pair<const std::string*, const Key*>> peers;
    peers.reserve(want.device.peers.size());
    for (std::size_t i = 0; i < want.device.peers.size(); ++i) {
      peers.emplace_back(&want.peer_devices[i], &want.device.peers[i].public_key);
    }
    record_health(peers, *read);
  }
  const wg::DeviceState* have = believed ? believed : &*read;

  wg::DeviceDelta delta = wg::diff_device(want.device, *have);
  for (const auto& c : delta.peers) {
    if (c.remove) {
      ++r.removed;
    } else if (c.update_only) {
      ++r.changed;
    } else {
      ++r.added;
    }
  }
  r.detail =
      "wireguard: " + counts_text(r.added, r.removed) + " ~" + std::to_string(r.changed) + " peers";
  if (delta.private_key || delta.listen_port || delta.fwmark) {
    ++r.changed;
    r.detail += ", device fields (";
    r.detail += delta.private_key ? "private key" : "";
    r.detail += delta.private_key && delta.listen_port ? ", " : "";
    r.detail += delta.listen_port ? "listen port" : "";
    r.detail += (delta.private_key || delta.listen_port) && delta.fwmark ? ", " : "";
    r.detail += delta.fwmark ? "fwmark" : "";
    r.detail += ")";
  }
  if (delta.empty()) return r;
  ++r.changing_calls;
  if (auto s = device_.apply(delta); !s) {
    r.error = std::move(s.error()).wrap("reconcile: apply to WireGuard device '" +
                                        device_.ifname() + "'");
  }
  return r;
}

LayerReport Reconciler::reconcile_filter(FilterLayer& layer, const Desired& want,
                                         const filter::FilterContents* believed) {
  LayerReport r;
  r.name = layer.name;
  Result<LayerCheck> check =
      believed      ? LayerCheck{false, "", filter::diff_contents(want.contents, *believed)}
      : layer.check ? layer.check(options_.filter, want.contents)
                    : check_contents(layer.filter, want.contents);
  if (!check) {
    r.error = std::move(check.error()).wrap("reconcile: check " + layer.name + " filter");
    return r;
  }
  if (check->rebuild) {
    r.rebuilt = true;
    r.detail = layer.name + ": rebuilt (" + check->why + ")";
    ++r.changing_calls;
    if (auto s = layer.filter.build(options_.filter, want.contents); !s) {
      r.error = std::move(s.error()).wrap("reconcile: build " + layer.name + " filter");
    }
    return r;
  }
  const filter::FilterDelta& d = check->elements;
  r.added = d.add_agents.size() + d.add_allowed.size();
  r.removed = d.remove_agents.size() + d.remove_allowed.size();
  r.detail = layer.name + ": " + counts_text(r.added, r.removed) + " elements";
  if (d.empty()) return r;
  ++r.changing_calls;
  if (auto s = layer.filter.apply(d); !s) {
    r.error = std::move(s.error()).wrap("reconcile: apply to " + layer.name + " filter");
  }
  return r;
}

void Reconciler::record_drift(const LayerReport& layer, std::int64_t generation) {
  if (!layer.ok()) {
    log_error("drift found, repair failed",
              {{"layer", layer.name}, {"detail", layer.detail}, {"error", layer.error->message()}});
    return;
  }
  log_warning("drift repaired", {{"layer", layer.name},
                                 {"detail", layer.detail},
                                 {"generation", std::to_string(generation)}});
  instruments_->drift_repairs[layer.name]->inc();
  state::AuditEvent e;
  e.at = clock_.unix_seconds();
  e.actor = "reconciler";
  e.action = "drift.repair";
  e.target = layer.name;
  e.detail = layer.detail;
  e.source = "local";
  if (auto s = store_.audit(e); !s) {
    log_warning("audit of drift repair failed, ignoring",
                {{"layer", layer.name}, {"error", s.error().message()}});
  }
}

void Reconciler::record_health(const std::vector<std::pair<const std::string*, const Key*>>& peers,
                               const wg::DeviceState& have) {
  std::unordered_map<Key, const wg::Peer*> running;
  running.reserve(have.peers.size());
  for (const auto& p : have.peers) running.emplace(p.public_key, &p);
  std::vector<TunnelObservation> tunnels;
  tunnels.reserve(peers.size());
  for (const auto& [device, key] : peers) {
    auto it = running.find(*key);
    tunnels.push_back({device, it == running.end() ? nullptr : it->second});
  }

  std::int64_t now = clock_.unix_seconds();
  auto transitions = health_.update(tunnels, now);
  std::size_t audited = 0;
  for (const auto& t : transitions) {
    instruments_->transitions[static_cast<std::size_t>(t.to)]->inc();
    if (audited == options_.max_transition_audits) continue;
    ++audited;
    std::string detail = std::string(tunnel_state_name(t.from)) + " -> " + tunnel_state_name(t.to);
    detail += t.last_handshake > 0
                  ? " (last handshake " + std::to_string(now - t.last_handshake) + " s ago)"
                  : " (no handshake)";
    log_info("tunnel health changed", {{"device", t.device},
                                       {"from", tunnel_state_name(t.from)},
                                       {"to", tunnel_state_name(t.to)}});
    state::AuditEvent e{0, now, "reconciler", "tunnel.health", t.device, detail, "local"};
    if (auto s = store_.audit(e); !s) {
      log_warning("audit of tunnel health failed, ignoring",
                  {{"device", t.device}, {"error", s.error().message()}});
    }
  }
  if (transitions.size() > audited) {
    std::string detail = std::to_string(transitions.size() - audited) +
                         " more tunnel health changes not logged one by one";
    log_info("tunnel health changed", {{"more", std::to_string(transitions.size() - audited)}});
    state::AuditEvent e{0, now, "reconciler", "tunnel.health", "", detail, "local"};
    if (auto s = store_.audit(e); !s) {
      log_warning("audit of tunnel health failed, ignoring", {{"error", s.error().message()}});
    }
  }
}

void Reconciler::log_conflicts(const std::vector<std::string>& conflicts) {
  for (const auto& c : conflicts) {
    if (logged_conflicts_.insert(c).second) {
      log_error("device left out of the kernel state", {{"reason", c}});
    }
  }
}

void Reconciler::log_failures(const ReconcileReport& report) {
  std::set<std::string> failing;
  auto note = [&](const std::string& layer, const Error& error) {
    failing.insert(layer);
    if (!failing_layers_.count(layer)) {
      log_error("reconcile failed, retrying with backoff",
                {{"layer", layer},
                 {"generation", std::to_string(report.generation)},
                 {"error", error.message()}});
    }
  };
  for (const auto& l : report.layers) {
    if (l.error) note(l.name, *l.error);
  }
  if (report.store_error) note("store", *report.store_error);
  for (const auto& layer : failing_layers_) {
    if (!failing.count(layer)) log_notice("reconcile recovered", {{"layer", layer}});
  }
  failing_layers_ = std::move(failing);
}

void Reconciler::start() {
  std::lock_guard lock(loop_mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void Reconciler::stop() {
  {
    std::lock_guard lock(loop_mu_);
    stopping_ = true;
  }
  loop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Reconciler::wake() {
  {
    std::lock_guard lock(loop_mu_);
    scheduler_.wake();
    woken_ = true;
  }
  loop_cv_.notify_all();
}

bool Reconciler::wait_applied(std::int64_t generation, std::chrono::milliseconds timeout) {
  std::unique_lock lock(applied_mu_);
  return applied_cv_.wait_for(lock, timeout, [&] { return applied_ >= generation; });
}

std::int64_t Reconciler::applied_generation() const {
  std::lock_guard lock(applied_mu_);
  return applied_;
}

PassScheduler::TimePoint Reconciler::next_pass() const {
  std::lock_guard lock(loop_mu_);
  return scheduler_.next_pass();
}

bool Reconciler::refresh_health_if_due() {
  std::lock_guard pass(pass_mu_);
  auto now = clock_.steady();
  auto last = PassScheduler::TimePoint(PassScheduler::TimePoint::duration(health_read_at_));
  if (now - last < options_.health_interval) return false;
  health_read_at_ = now.time_since_epoch().count();
  if (!belief_) return false;  // failing passes read (and record health) themselves
  auto have = device_.read();
  if (!have) {
    if (!health_read_failing_) {
      log_warning("read WireGuard device for tunnel health failed, keeping the last health",
                  {{"device", device_.ifname()}, {"error", have.error().message()}});
    }
    health_read_failing_ = true;
    return true;
  }
  health_read_failing_ = false;
  std::vector<std::pair<const std::string*, const Key*>> peers;
  peers.reserve(belief_->devices.size());
  for (const auto& [id, device] : belief_->devices) peers.emplace_back(&id, &device.wg_key);
  record_health(peers, *have);
  return true;
}

bool Reconciler::run_due() {
  {
    std::lock_guard lock(loop_mu_);
    if (!scheduler_.due(clock_.steady())) return false;
  }
  (void)reconcile_once();  // logs its own failures
  return true;
}

void Reconciler::run() {
  std::unique_lock lock(loop_mu_);
  while (!stopping_) {
    lock.unlock();
    run_due();
    refresh_health_if_due();
    lock.lock();
    if (stopping_) break;
    auto next = std::min(
        scheduler_.next_pass(),
        PassScheduler::TimePoint(PassScheduler::TimePoint::duration(health_read_at_.load())) +
            options_.health_interval);
    auto now = clock_.steady();
    if (next > now) {
      loop_cv_.wait_for(lock, next - now, [&] { return stopping_ || woken_; });
    }
    woken_ = false;
  }
}

void Reconciler::collect(metrics::Exposition& e) {
  using metrics::Type;
  auto snapshot = health_.snapshot();
  std::int64_t now = clock_.unix_seconds();

  e.family("portcullis_tunnels", "Tunnels of active devices by health state.", Type::kGauge);
  for (std::size_t s = 0; s < kTunnelStates; ++s) {
    e.sample("portcullis_tunnels", {{"state", tunnel_state_name(static_cast<TunnelState>(s))}},
             std::uint64_t{snapshot->counts[s]});
  }
  e.family("portcullis_tunnel_handshake_age_seconds",
           "Seconds since the device's last WireGuard handshake, at scrape time (no sample: "
           "never).",
           Type::kGauge);
  for (const auto& t : snapshot->tunnels) {
    if (auto age = t.handshake_age(now)) {
      e.sample("portcullis_tunnel_handshake_age_seconds", {{"device", t.device}}, *age);
    }
  }
  e.family("portcullis_tunnel_receive_bytes_total",
           "Bytes received from the device over its tunnel, as of the last pass.", Type::kCounter);
  for (const auto& t : snapshot->tunnels) {
    e.sample("portcullis_tunnel_receive_bytes_total", {{"device", t.device}}, t.rx_bytes);
  }
  e.family("portcullis_tunnel_transmit_bytes_total",
           "Bytes sent to the device over its tunnel, as of the last pass.", Type::kCounter);
  for (const auto& t : snapshot->tunnels) {
    e.sample("portcullis_tunnel_transmit_bytes_total", {{"device", t.device}}, t.tx_bytes);
  }

  if (!options_.port_counters) return;
  Result<std::vector<bpf::PortCounters>> rows = std::vector<bpf::PortCounters>{};
  {
    std::lock_guard pass(pass_mu_);  // the filter objects are not used by two threads at once
    rows = options_.port_counters();
  }
  if (!rows) {
    log_warning("read eBPF counters for /metrics failed, leaving them out",
                {{"error", rows.error().message()}});
    return;
  }
  auto key = [](const bpf::PortCounters& c) {
    return std::tie(c.device, c.agent, c.protocol, c.port, c.direction, c.reason);
  };
  std::sort(rows->begin(), rows->end(),
            [&](const auto& a, const auto& b) { return key(a) < key(b); });
  // One series per label set: rows with the same labels (if the map ever keys on more) are
  // summed, as a duplicate series makes the whole scrape invalid.
  std::vector<bpf::PortCounters> merged;
  merged.reserve(rows->size());
  for (auto& c : *rows) {
    if (!merged.empty() && key(merged.back()) == key(c)) {
      merged.back().packets += c.packets;
      merged.back().bytes += c.bytes;
    } else {
      merged.push_back(std::move(c));
    }
  }
  rows->swap(merged);
  struct Row {
    std::string agent, port;
    const bpf::PortCounters* c;
  };
  std::vector<Row> labelled;
  labelled.reserve(rows->size());
  for (const auto& c : *rows) {
    labelled.push_back({c.agent.family() ? c.agent.to_string() : "", std::to_string(c.port), &c});
  }
  auto labels = [](const Row& r) {
    return std::array<metrics::Label, 7>{{
        {"device", r.c->device},
        {"agent", r.agent},
        {"protocol", r.c->protocol == IPPROTO_TCP   ? "tcp"
                     : r.c->protocol == IPPROTO_UDP ? "udp"
                                                    : "other"},
        {"port", r.port},
        {"direction", bpf::direction_name(r.c->direction)},
        {"verdict", r.c->reason == bpf::VerdictReason::kAllowed ? "allowed" : "dropped"},
        {"reason", bpf::verdict_reason_name(r.c->reason)},
    }};
  };
  e.family("portcullis_filter_packets_total",
           "Packets seen by the eBPF filter per agent, port, direction and verdict.",
           Type::kCounter);
  for (const auto& r : labelled) {
    auto l = labels(r);
    e.sample("portcullis_filter_packets_total", std::span<const metrics::Label>(l), r.c->packets);
  }
  e.family("portcullis_filter_bytes_total",
           "Bytes seen by the eBPF filter per agent, port, direction and verdict.", Type::kCounter);
  for (const auto& r : labelled) {
    auto l = labels(r);
    e.sample("portcullis_filter_bytes_total", std::span<const metrics::Label>(l), r.c->bytes);
  }
}

}  // namespace portcullis::reconciler
