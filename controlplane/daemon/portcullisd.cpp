// portcullisd: the Portcullis gateway daemon.
//
//   portcullisd [--config FILE]                  run (embedded defaults without a config file)
//   portcullisd --check-config [--config FILE]   validate and print the effective configuration
//   portcullisd enrollment-code create [--ttl 24h]
//   portcullisd enrollment list | approve ID | deny ID
//   portcullisd device list | revoke ID | ports ID 5985/tcp 3478 ...
// The admin commands talk to the running daemon over its root-only socket.
//
// Start-up order: config -> state dir and keys -> SQLite -> tunnel interface -> filters ->
// reconciler (first pass adopts what the kernel holds) -> HTTPS API -> admin socket -> READY.
// SIGTERM stops the API and the reconciler and leaves tunnels and filters in the kernel.

#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>

#include "controlplane/admin/admin_socket.h"
#include "controlplane/api/agent_api.h"
#include "controlplane/api/crypto.h"
#include "controlplane/config/daemon_config.h"
#include "controlplane/daemon/admin_commands.h"
#include "controlplane/daemon/gateway_status.h"
#include "controlplane/http/https_server.h"
#include "controlplane/metrics/registry.h"
#include "controlplane/operator/flow_explainer.h"
#include "controlplane/operator/operator_api.h"
#include "controlplane/reconciler/reconciler.h"
#include "controlplane/state/sqlite_store.h"
#include "dataplane/base/key_file.h"
#include "dataplane/base/log.h"
#include "dataplane/bpf/bpf_filter.h"
#include "dataplane/bpf/bpffs.h"
#include "dataplane/link/netlink_links.h"
#include "dataplane/nftables/nftables_filter.h"
#include "dataplane/tunnel/tunnel_interface.h"

extern char** environ;

namespace portcullis::daemon {
namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// CivetWeb gives each connection a worker thread for its whole keep-alive life, and agents keep
// their connection open: with fewer threads than concurrently connected agents, the others wait
// until a connection closes (up to the keep-alive timeout). Idle threads cost address space only.
constexpr int kApiWorkerThreads = 128;
constexpr int kApiKeepAliveMs = 5000;
// glibc gives busy threads arenas of their own (up to 8 per core); with 128 API threads that
// fragments memory (measured: 105 MiB RSS after a 10,000-agent storm against 51 MiB after a
// restart). Two arenas are plenty for a daemon whose hot path is the kernel and SQLite.
constexpr int kMallocArenas = 2;
constexpr std::chrono::seconds kMemoryTrimPeriod{10};

int fatal(const Error& e, const char* what) {
  log_error(what, {{"error", e.message()}});
  return 1;
}

wg::Backend to_wg_backend(config::WireguardBackend b) {
  switch (b) {
    case config::WireguardBackend::kKernel:
      return wg::Backend::kKernel;
    case config::WireguardBackend::kUserspace:
      return wg::Backend::kUserspace;
    case config::WireguardBackend::kAuto:
      break;
  }
  return wg::Backend::kAuto;
}

// The reconciler as the agent API needs it.
class ReconcilerWaiter final : public api::ApplyWaiter {
 public:
  explicit ReconcilerWaiter(reconciler::Reconciler& r) : r_(r) {}
  void wake() override { r_.wake(); }
  bool wait_applied(std::int64_t generation, std::chrono::milliseconds timeout) override {
    return r_.wait_applied(generation, timeout);
  }

 private:
  reconciler::Reconciler& r_;
};

Status make_private_dir(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return fail(Error(ec, "create directory '" + path + "'"));
  if (::chmod(path.c_str(), 0700) != 0) return fail(Error::last_errno("chmod 700 '" + path + "'"));
  return {};
}

// Blocks SIGTERM/SIGINT/SIGHUP in every thread (started after this) and waits for one.
class SignalWait {
 public:
  SignalWait() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  // Waits for a signal; calls `idle` every `period` meanwhile.
  int wait(std::chrono::seconds period, const std::function<void()>& idle) {
    timespec timeout{static_cast<time_t>(period.count()), 0};
    for (;;) {
      int sig = sigtimedwait(&set_, nullptr, &timeout);
      if (sig > 0) return sig;
      if (errno == EAGAIN) idle();
    }
  }

 private:
  sigset_t set_;
};

int run_daemon(const config::DaemonConfig& cfg, const std::string& admin_socket) {
  ::mallopt(M_ARENA_MAX, kMallocArenas);
  SignalWait signals;  // before any thread starts
  set_log_level(cfg.log.level);
  const auto& dir = cfg.gateway.state_dir;
  if (auto s = make_private_dir(dir); !s) return fatal(s.error(), "cannot prepare state directory");

  auto store = state::SqliteStore::open(dir + "/portcullis.db");
  if (!store) return fatal(store.error(), "cannot open the database");
  auto wg_key = load_or_create_private_key(dir + "/wireguard.key");
  if (!wg_key) return fatal(wg_key.error(), "cannot load the WireGuard key");
  auto signing_key = api::SigningKey::load_or_create(dir + "/signing.key");
  if (!signing_key) return fatal(signing_key.error(), "cannot load the signing key");

  auto links = link::NetlinkLinks::open();
  if (!links) return fatal(links.error(), "cannot open rtnetlink");
  tunnel::TunnelInterfaceSpec spec;
  spec.ifname = cfg.wireguard.interface;
  spec.backend = to_wg_backend(cfg.wireguard.backend);
  spec.mtu = static_cast<std::uint32_t>(cfg.wireguard.mtu);
  auto gw_prefix = IpPrefix::make(cfg.pool.gateway, cfg.pool.network.cidr());
  spec.addresses = {*gw_prefix};
  auto tun = tunnel::ensure_tunnel_interface(spec, **links);
  if (!tun) return fatal(tun.error(), "cannot set up the WireGuard interface");
  log_info("tunnel interface ready",
           {{"ifname", spec.ifname},
            {"backend", wg::backend_name(tun->backend)},
            {"link", tun->link_changes.to_string()},
            {"wireguard_go_started", tun->started_wireguard_go ? "yes" : "no"}});

  auto nft = nftables::NftablesFilter::open();
  if (!nft) return fatal(nft.error(), "cannot open nftables");
  if (auto mounted = bpf::ensure_bpffs("/sys/fs/bpf"); !mounted) {
    return fatal(mounted.error(), "cannot use the BPF filesystem");
  } else if (*mounted) {
    log_notice("mounted the BPF filesystem", {{"path", "/sys/fs/bpf"}});
  }
  bpf::BpfFilterOptions bpf_options;
  bpf_options.tunnel_ifname = cfg.wireguard.interface;  // adopts a previous process's pins
  bpf::BpfFilter ebpf(bpf_options);

  metrics::Registry metrics;
  reconciler::ReconcilerOptions ropts;
  ropts.gateway = {*wg_key, cfg.wireguard.listen_port};
  ropts.filter = {cfg.wireguard.interface, cfg.pool.gateway, cfg.pool.network,
                  cfg.policy.operator_networks};
  ropts.schedule.min_interval = std::chrono::milliseconds(cfg.reconciler.min_interval_ms);
  ropts.schedule.resync_interval = std::chrono::seconds(cfg.reconciler.resync_interval_s);
  ropts.health.fresh_after = cfg.tunnel.fresh_after_s;
  ropts.health.dead_after = cfg.tunnel.dead_after_s;
  ropts.port_counters = [&ebpf] { return ebpf.read_counters(); };
  reconciler::Reconciler rec(**store, *tun->device,
                             {reconciler::nftables_layer(**nft), reconciler::ebpf_layer(ebpf)},
                             ropts, metrics);
  auto first = rec.reconcile_once();
  if (!first) return fatal(first.error(), "cannot read the desired state");
  log_info("initial reconcile", {{"report", first->to_string()}});
  for (const auto& n : ebpf.notices()) log_notice("ebpf pins", {{"notice", n}});
  rec.start();

  ReconcilerWaiter waiter(rec);
  api::AgentApiConfig acfg;
  acfg.gateway_endpoint = cfg.wireguard.endpoint;
  acfg.gateway_port = cfg.wireguard.listen_port;
  acfg.gateway_wg_public_key = wg_key->public_key();
  acfg.pool = cfg.pool.network;
  acfg.gateway_address = cfg.pool.gateway;
  acfg.default_ports = cfg.policy.default_ports;
  GatewayStatus status(**store, rec, metrics);
  // Group commit at work: transactions per COMMIT (concurrent requests share one).
  const metrics::CollectorHandle store_metrics =
      metrics.add_collector([&db = **store](metrics::Exposition& out) {
        const auto counts = db.commit_counts();
        const std::span<const metrics::Label> none;
        out.family("portcullis_store_transactions_total",
                   "Request transactions committed to the database.", metrics::Type::kCounter);
        out.sample("portcullis_store_transactions_total", none, counts.transactions);
        out.family("portcullis_store_commits_total",
                   "Database COMMITs that made them durable (concurrent requests share one).",
                   metrics::Type::kCounter);
        out.sample("portcullis_store_commits_total", none, counts.commits);
      });
  api::AgentApi agent_api(acfg, **store, waiter, *signing_key, unix_now, status.request_observer());

  operator_api::PacketFilterExplainer explainer(
      {{"nftables", **nft}, {"ebpf", ebpf}},
      [&rec](const std::function<void()>& fn) { rec.inspect(fn); });
  operator_api::OperatorApiConfig ocfg;
  ocfg.pool = cfg.pool.network;
  ocfg.gateway_address = cfg.pool.gateway;
  ocfg.default_ports = cfg.policy.default_ports;
  operator_api::OperatorApi operators(
      ocfg, {**store,
             **store,
             waiter,
             explainer,
             {[&rec] { return rec.health(); }, [&rec] { return rec.last_report(); }},
             {},
             unix_now,
             status.request_observer()});

  // The agent API's exact paths win over the operator API's catch-all below /api/.
  auto routes = agent_api.routes();
  for (auto&& more : {status.routes(), operators.routes()}) {
    routes.insert(routes.end(), more.begin(), more.end());
  }
  http::HttpsServerConfig hcfg;
  hcfg.address = cfg.api.listen.to_string();
  hcfg.port = cfg.api.port;
  hcfg.cert_file = cfg.api.tls_cert;
  hcfg.key_file = cfg.api.tls_key;
  hcfg.max_body_bytes = static_cast<std::size_t>(cfg.api.max_body_bytes);
  hcfg.worker_threads = kApiWorkerThreads;
  // An idle keep-alive connection holds a worker thread: agents talk in short bursts.
  hcfg.keep_alive_timeout_ms = kApiKeepAliveMs;
  auto server = http::HttpsServer::start(hcfg, std::move(routes));
  if (!server) return fatal(server.error(), "cannot start the HTTPS API");

  AdminContext admin_ctx{**store, cfg.policy.default_ports, unix_now, [&rec] { rec.wake(); }};
  auto admin = admin::AdminServer::start(
      admin_socket, [&admin_ctx](const std::string& command, const nlohmann::json& args) {
        return run_admin_command(admin_ctx, command, args);
      });
  if (!admin) return fatal(admin.error(), "cannot start the admin socket");

  const auto& id = (*server)->identity();
  log_notice("portcullisd ready", {{"url", (*server)->url()},
                                   {"tls_sha256", id.cert_sha256.hex_colon()},
                                   {"tls_pin", id.public_key_pin()},
                                   {"wireguard_public_key", wg_key->public_key().to_base64()},
                                   {"listen_port", std::to_string(cfg.wireguard.listen_port)}});
  sd_notify(0, "READY=1");

  // glibc keeps memory freed after a burst (an enrollment storm) in its heaps; hand it back to the
  // kernel now and then (measured: 100 MiB RSS after a 10,000-agent storm, 55 MiB after restart).
  int sig = signals.wait(kMemoryTrimPeriod, [] { ::malloc_trim(0); });
  log_notice("stopping; tunnels and filters stay in the kernel", {{"signal", strsignal(sig)}});
  sd_notify(0, "STOPPING=1");
  admin->reset();
  server->reset();
  rec.stop();
  return 0;
}

std::string ttl_error(const std::string& text) {
  return "--ttl '" + text + "': use a number with s, m, h or d (e.g. 30m, 24h, 7d)";
}

Result<std::int64_t> parse_ttl(const std::string& text) {
  if (text.size() < 2) return fail_invalid(ttl_error(text));
  std::int64_t unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return fail_invalid(ttl_error(text));
  }
  std::int64_t n = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9' || n > 1'000'000) return fail_invalid(ttl_error(text));
    n = n * 10 + (c - '0');
  }
  return n * unit;
}

int admin_call(const std::string& socket, const std::string& command, nlohmann::json args) {
  auto r = admin::admin_request(socket, command, args);
  if (!r) {
    std::fprintf(stderr, "portcullisd: %s\n", r.error().context().c_str());
    return 1;
  }
  std::cout << r->dump(2) << "\n";
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"portcullisd: the Portcullis WireGuard gateway daemon"};
  std::string config_path;
  bool check_config = false;
  std::string admin_socket = admin::kDefaultSocketPath;
  app.add_option("--config", config_path,
                 std::string("TOML configuration (default ") + config::kDefaultConfigPath +
                     "; embedded defaults if that is missing)");
  app.add_flag("--check-config", check_config, "validate the configuration, print it and exit");
  app.add_option("--admin-socket", admin_socket, "the root-only admin socket")
      ->envname("PORTCULLIS_ADMIN_SOCKET");

  auto* code = app.add_subcommand("enrollment-code", "enrollment codes");
  auto* code_create = code->add_subcommand("create", "create a single-use enrollment code");
  std::string ttl = "24h";
  code_create->add_option("--ttl", ttl, "lifetime: 30m, 24h, 7d (default 24h)");
  code->require_subcommand(1);

  std::string id;
  auto* enr = app.add_subcommand("enrollment", "enrollment requests");
  auto* enr_list = enr->add_subcommand("list", "list enrollment requests");
  auto* enr_approve = enr->add_subcommand("approve", "approve a pending request");
  enr_approve->add_option("id", id)->required();
  auto* enr_deny = enr->add_subcommand("deny", "deny a pending request");
  enr_deny->add_option("id", id)->required();
  enr->require_subcommand(1);

  std::vector<std::string> ports;
  auto* dev = app.add_subcommand("device", "devices");
  auto* dev_list = dev->add_subcommand("list", "list devices");
  auto* dev_revoke = dev->add_subcommand("revoke", "revoke a device: tunnel, filters, tokens");
  dev_revoke->add_option("id", id)->required();
  auto* dev_ports = dev->add_subcommand("ports", "set a device's port allowlist");
  dev_ports->add_option("id", id)->required();
  dev_ports->add_option("ports", ports, "5985 (tcp and udp), 5985/tcp, 3478/udp")->required();
  dev->require_subcommand(1);

  CLI11_PARSE(app, argc, argv);

  if (*code_create) {
    auto seconds = parse_ttl(ttl);
    if (!seconds)
      return std::fprintf(stderr, "portcullisd: %s\n", seconds.error().context().c_str()), 2;
    return admin_call(admin_socket, "enrollment-code.create", {{"ttl_s", *seconds}});
  }
  if (*enr_list) return admin_call(admin_socket, "enrollment.list", nlohmann::json::object());
  if (*enr_approve) return admin_call(admin_socket, "enrollment.approve", {{"id", id}});
  if (*enr_deny) return admin_call(admin_socket, "enrollment.deny", {{"id", id}});
  if (*dev_list) return admin_call(admin_socket, "device.list", nlohmann::json::object());
  if (*dev_revoke) return admin_call(admin_socket, "device.revoke", {{"id", id}});
  if (*dev_ports) return admin_call(admin_socket, "device.ports", {{"id", id}, {"ports", ports}});

  auto cfg = config::load_config(config_path, config::environment_from(environ));
  if (!cfg) {
    std::fprintf(stderr, "portcullisd: configuration: %s\n", cfg.error().context().c_str());
    return 2;
  }
  if (check_config) {
    std::cout << config::describe(*cfg);
    return 0;
  }
  return run_daemon(*cfg, admin_socket);
}

}  // namespace
}  // namespace portcullis::daemon

int main(int argc, char** argv) { return portcullis::daemon::run(argc, argv); }
