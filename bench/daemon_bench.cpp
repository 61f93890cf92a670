// portcullisd benchmark: the real daemon in a namespace of its own (pcl-dbench-<pid>,
// wireguard-go), driven over HTTPS by simulated agents, as issue 6 asks:
//
//   daemon_bench [--agents 10000] [--concurrency 64] [--portcullisd PATH]
//
//   (a) ensure storm: N agents enroll with codes (created beforehand over the admin socket, not
//       timed), poll and vpn/ensure over HTTPS, C threads each with its own libcurl handle and
//       keep-alive connection opened before the clock starts (timed apart): throughput,
//       p50/p99 latency per endpoint and over all requests, errors
//       (goal: >= 500 ensures/s, p99 < 50 ms, 0 errors)
//   (b) restart at N devices: SIGTERM, start again; time from start to /health 200 ready, and the
//       changing calls of the adoption pass (goal: < 2 s, 0 writes)
//   (c) daemon RSS at N devices (VmRSS of /proc/<pid>/status; goal <= 64 MiB)
//   (d) operator API at N devices (issue 7), one logged-in operator on a keep-alive connection:
//       GET /api/devices (a page of 100 sorted by last handshake) and GET /api/tunnel/active,
//       p50/p99 (goal: p99 < 20 ms); /metrics scrape time and size
// The agents run on the same machine as the daemon: their TLS and signatures take CPU from it.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <latch>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "controlplane/admin/admin_socket.h"
#include "tests/support/agent_client.h"
#include "tests/support/netns.h"
#include "tests/support/operator_client.h"
#include "tests/support/portcullisd_process.h"

namespace portcullis::bench {
namespace {

using nlohmann::json;
using testing::HttpReply;
using testing::HttpsClient;
using testing::NetnsGuard;
using testing::SimulatedAgent;
using Clock = std::chrono::steady_clock;
using Ms = std::chrono::duration<double, std::milli>;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "daemon_bench: %s\n", what.c_str());
  std::exit(1);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5))];
}

// "VmRSS:     12345 kB" -> MiB
double status_mib(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(field + ":")) {
      return std::strtod(line.c_str() + field.size() + 1, nullptr) / 1024.0;
    }
  }
  return -1;
}

// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream f(text.substr(text.rfind(')') + 2));  // fields from 3 (state) on
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && f >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::strtod(field.c_str(), nullptr);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::size_t count_lines(const std::string& s) {
  return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n'));
}

struct Latencies {
  std::vector<double> enroll, poll, ensure;
  // Split of all three: requests that opened a TLS connection (a handshake: the first of each
  // client thread), and the rest.
  std::vector<double> connecting, kept_alive;
  void merge(const Latencies& o) {
    for (auto [to, from] : {std::pair{&enroll, &o.enroll},
                            {&poll, &o.poll},
                            {&ensure, &o.ensure},
                            {&connecting, &o.connecting},
                            {&kept_alive, &o.kept_alive}}) {
      to->insert(to->end(), from->begin(), from->end());
    }
  }
};

void print_latency(const char* name, const std::vector<double>& v) {
  std::printf("  %-7s n=%zu p50=%.2f ms p99=%.2f ms max=%.2f ms\n", name, v.size(),
              percentile(v, 0.5), percentile(v, 0.99),
              v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()));
}

int run(int argc, char** argv) {
  int agents = 10000, concurrency = 64;
  std::string binary = PORTCULLISD_BINARY;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--agents") {
      agents = std::atoi(argv[i + 1]);
    } else if (a == "--concurrency") {
      concurrency = std::atoi(argv[i + 1]);
    } else if (a == "--portcullisd") {
      binary = argv[i + 1];
    } else {
      die("usage: daemon_bench [--agents N] [--concurrency C] [--portcullisd PATH]");
    }
  }
  if (::geteuid() != 0) die("needs root (network namespace, nftables, BPF)");

  char tmpl[] = "/tmp/pcl-dbench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) die("mkdtemp");
  const std::string dir = tmpl;
  const std::string ifname = "pclb" + std::to_string(::getpid());
  testing::TestNetns ns("dbench");
  if (!ns.ok()) die("ip netns add " + ns.name());

  testing::PortcullisdOptions opts;
  opts.binary = binary;
  opts.netns_path = ns.path();
  opts.state_dir = dir + "/state";
  opts.env = {{"PORTCULLIS_WIREGUARD_INTERFACE", ifname},
              {"PORTCULLIS_WIREGUARD_BACKEND", "userspace"},
              {"PORTCULLIS_WIREGUARD_ENDPOINT", "192.0.2.1:30000"},
              {"PORTCULLIS_API_LISTEN", "127.0.0.1"},
              {"PORTCULLIS_API_PORT", "8443"}};
  // rmdir: the pin root too when nothing else is pinned there.
  auto cleanup = [&] {
    testing::run("rm -rf /sys/fs/bpf/portcullis/" + ifname + " " + dir +
                 "; rmdir /sys/fs/bpf/portcullis 2>/dev/null");
  };
  testing::PortcullisdProcess daemon(opts);
  if (auto err = daemon.start(std::chrono::seconds(60)); !err.empty()) {
    cleanup();
    die(err);
  }
  const std::string url = "https://127.0.0.1:8443";
  const std::string pin = daemon.log_field("portcullisd ready", "tls_pin").value_or("");
  std::printf("portcullisd %s, pid %d, %d agents, concurrency %d, %u CPUs\n", binary.c_str(),
              daemon.pid(), agents, concurrency, std::thread::hardware_concurrency());
  std::printf("RSS at 0 devices: %.1f MiB; load average: %s", status_mib(daemon.pid(), "VmRSS"),
              testing::run("cut -d' ' -f1-3 /proc/loadavg").out.c_str());

  // Codes and agent keys beforehand (not timed).
  auto t_codes = Clock::now();
  std::vector<std::string> codes(agents);
  for (int i = 0; i < agents; ++i) {
    auto r =
        admin::admin_request(daemon.admin_socket(), "enrollment-code.create", {{"ttl_s", 7200}});
    if (!r) die("enrollment-code.create: " + r.error().message());
    codes[i] = r->value("code", "");
  }
  std::printf("created %d enrollment codes over the admin socket in %.1f s\n", agents,
              Ms(Clock::now() - t_codes).count() / 1000);
  std::vector<std::unique_ptr<SimulatedAgent>> sims;
  for (int i = 0; i < agents; ++i) {
    sims.push_back(std::make_unique<SimulatedAgent>("bench-" + std::to_string(i)));
  }

  // (a) The storm.
  std::atomic<int> next{0};
  std::atomic<int> errors{0};
  std::mutex mu;
  Latencies all;
  std::string first_error;
  auto timed = [](auto&& fn, std::vector<double>& into, Latencies& split) {
    auto t0 = Clock::now();
    HttpReply r = fn();
    const double ms = Ms(Clock::now() - t0).count();
    into.push_back(ms);
    (r.new_connections > 0 ? split.connecting : split.kept_alive).push_back(ms);
    return r;
  };
  // Each client thread opens its connection (TCP, TLS handshake, pin check) with one GET /health
  // before the storm's clock starts; those are timed apart. The storm then times the API
  // requests; one that has to open a connection again still counts, in the "connect" line.
  std::latch connected(concurrency);
  std::latch go(1);
  std::vector<double> connect_ms;
  std::vector<std::thread> threads;
  std::atomic<long> connections{0};
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      NetnsGuard in(ns.path());
      if (!in.ok()) die("setns");
      HttpsClient client(url, pin);
      Latencies mine;
      long opened = 0;
      {
        const auto t0 = Clock::now();
        HttpReply h = client.get("/health");
        const double ms = Ms(Clock::now() - t0).count();
        if (h.status != 200) die("GET /health before the storm: " + h.curl_error + h.text);
        std::lock_guard lock(mu);
        connect_ms.push_back(ms);
      }
      connected.count_down();
      go.wait();
      for (int i; (i = next++) < agents;) {
        SimulatedAgent& a = *sims[i];
        std::string err;
        HttpReply r = timed([&] { return a.enroll(client, codes[i]); }, mine.enroll, mine);
        opened += r.new_connections;
        if (r.status != 200 || r.body.value("status", "") != "approved") {
          err = "enroll: " + std::to_string(r.status) + " " + r.curl_error + r.text;
        } else {
          r = timed([&] { return a.poll(client); }, mine.poll, mine);
          opened += r.new_connections;
          if (r.status != 200 || a.access_token.empty()) {
            err = "poll: " + std::to_string(r.status) + " " + r.curl_error + r.text;
          } else {
            r = timed([&] { return a.ensure(client); }, mine.ensure, mine);
            opened += r.new_connections;
            json doc;
            err = a.verify_document(r, &doc);
          }
        }
        if (!err.empty()) {
          ++errors;
          std::lock_guard lock(mu);
          if (first_error.empty()) first_error = err;
        }
      }
      connections += opened;
      std::lock_guard lock(mu);
      all.merge(mine);
    });
  }
  connected.wait();
  const double daemon_cpu_before = cpu_seconds(daemon.pid());
  const double bench_cpu_before = cpu_seconds(::getpid());
  const auto storm_start = Clock::now();
  go.count_down();
  for (auto& t : threads) t.join();
  const double storm_s = Ms(Clock::now() - storm_start).count() / 1000;
  std::printf(
      "(a) ensure storm: %d agents in %.2f s: %.0f agents/s (enroll+poll+ensure each), "
      "%.0f requests/s, %d errors, %ld TLS connections opened during it\n",
      agents, storm_s, agents / storm_s, 3 * agents / storm_s, errors.load(), connections.load());
  const double daemon_cpu = cpu_seconds(daemon.pid()) - daemon_cpu_before;
  const double bench_cpu = cpu_seconds(::getpid()) - bench_cpu_before;
  std::printf(
      "  CPU during the storm: portcullisd %.1f s (%.2f ms per agent, %.0f agents per "
      "daemon CPU second), the agents %.1f s\n",
      daemon_cpu, 1000 * daemon_cpu / agents, agents / daemon_cpu, bench_cpu);
  print_latency("enroll", all.enroll);
  print_latency("poll", all.poll);
  print_latency("ensure", all.ensure);
  std::printf(
      "  the same requests: those that opened a TLS connection (handshake included), those on a "
      "kept-alive one, all of them\n");
  if (!all.connecting.empty()) print_latency("connect", all.connecting);
  print_latency("kept", all.kept_alive);
  std::vector<double> every = all.connecting;
  every.insert(every.end(), all.kept_alive.begin(), all.kept_alive.end());
  print_latency("all", every);
  std::printf(
      "  before the storm, %d connections opened at once (GET /health each: TLS handshake, pin "
      "check):\n",
      concurrency);
  print_latency("opening", connect_ms);
  if (!first_error.empty()) std::printf("  first error: %s\n", first_error.c_str());

  // The kernel catches up: every device a peer.
  const auto converge_start = Clock::now();
  std::size_t peers = 0;
  while (Ms(Clock::now() - converge_start).count() < 60'000) {
    peers = count_lines(ns.run("wg show " + ifname + " peers").out);
    if (peers >= static_cast<std::size_t>(agents)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf("    kernel holds %zu peers %.0f ms after the storm ended\n", peers,
              Ms(Clock::now() - converge_start).count());

  // (d) The operator API and /metrics at N devices.
  {
    NetnsGuard in(ns.path());
    testing::OperatorClient op(url, pin);
    const std::string password = "daemon-bench-password";
    HttpReply r = op.setup("admin", password);
    if (r.status != 201) die("POST /api/setup: " + std::to_string(r.status) + " " + r.text);
    r = op.login("admin", password);
    if (r.status != 200) die("POST /api/login: " + std::to_string(r.status) + " " + r.text);
    auto measure = [&](const std::string& path, const char* items) {
      std::vector<double> ms;
      std::size_t bytes = 0, count = 0;
      for (int i = 0; i < 200; ++i) {
        auto t0 = Clock::now();
        HttpReply g = op.get(path);
        ms.push_back(Ms(Clock::now() - t0).count());
        if (g.status != 200) die("GET " + path + ": " + std::to_string(g.status) + " " + g.text);
        bytes = g.text.size();
        count = g.body[items].size();
      }
      std::printf("(d) GET %s at %d devices: %zu %s, %zu bytes, p50 %.2f ms, p99 %.2f ms\n",
                  path.c_str(), agents, count, items, bytes, percentile(ms, 0.5),
                  percentile(ms, 0.99));
    };
    measure("/api/devices?limit=100&sort=last_handshake&order=desc", "devices");
    measure("/api/devices?limit=100&sort=hostname&search=bench-99", "devices");
    measure("/api/tunnel/active", "tunnels");
    HttpsClient client(url, pin);
    std::vector<double> scrape;
    std::size_t bytes = 0;
    for (int i = 0; i < 20; ++i) {
      auto t0 = Clock::now();
      HttpReply m = client.get("/metrics");
      scrape.push_back(Ms(Clock::now() - t0).count());
      bytes = m.text.size();
      if (m.status != 200) std::printf("    /metrics answered %ld\n", m.status);
    }
    std::printf("    GET /metrics at %d devices: %zu bytes, p50 %.1f ms, p99 %.1f ms\n", agents,
                bytes, percentile(scrape, 0.5), percentile(scrape, 0.99));
  }

  // (c) RSS.
  std::printf("(c) RSS at %d devices: VmRSS %.1f MiB (anon %.1f, file %.1f), VmHWM %.1f MiB\n",
              agents, status_mib(daemon.pid(), "VmRSS"), status_mib(daemon.pid(), "RssAnon"),
              status_mib(daemon.pid(), "RssFile"), status_mib(daemon.pid(), "VmHWM"));

  // (b) Restart.
  std::this_thread::sleep_for(std::chrono::seconds(1));  // let a last pass settle
  const int status = daemon.stop();
  const auto restart_start = Clock::now();
  if (auto err = daemon.start(std::chrono::seconds(60)); !err.empty()) {
    cleanup();
    die("restart: " + err);
  }
  double health_ms = -1;
  {
    NetnsGuard in(ns.path());
    HttpsClient client(url, pin);
    while (Ms(Clock::now() - restart_start).count() < 60'000) {
      HttpReply h = client.get("/health");
      if (h.status == 200 && h.body.value("status", "") == "ready") {
        health_ms = Ms(Clock::now() - restart_start).count();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  std::printf(
      "(b) restart at %d devices (SIGTERM exit %d): ready line after %.0f ms, /health 200 "
      "ready after %.0f ms; adoption changing_calls=%s\n",
      agents, status, Ms(daemon.start_to_ready()).count(), health_ms,
      daemon.log_field("kernel state adopted", "changing_calls").value_or("?").c_str());
  std::printf("    %s\n",
              daemon.log_field("initial reconcile", "report").value_or("(no report)").c_str());
  std::printf("    RSS after restart: VmRSS %.1f MiB (anon %.1f, file %.1f)\n",
              status_mib(daemon.pid(), "VmRSS"), status_mib(daemon.pid(), "RssAnon"),
              status_mib(daemon.pid(), "RssFile"));

  daemon.stop();
  (void)testing::run("ip netns exec " + ns.name() + " ip link del " + ifname + " 2>/dev/null");
  cleanup();
  return errors == 0 ? 0 : 1;
}

}  // namespace
}  // namespace portcullis::bench

int main(int argc, char** argv) { return portcullis::bench::run(argc, argv); }
