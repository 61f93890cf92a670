// WireGuard dataplane benchmark: ours against wg(8) on the same device, in one run.
//
//   wg_bench [--backend kernel|userspace] [--peers 1000,10000] [--rounds 5] [--changes 200]
//
// For each peer count, in a namespace of its own (pcl-bench-<pid>) with one interface:
//   cold apply     ours (read, diff, apply onto an empty device) vs `wg setconf` of the same file
//   one peer       ours: the daemon's path, a one-peer delta; ours-sync: read + diff + apply of the
//                  whole config; vs `wg syncconf` of the whole config (one peer's AllowedIPs
//                  differ)
//   one-peer p50/p99 over --changes changes, also at 100 peers, for the flatness ratio
//   dump           ours read() vs `wg show <if> dump`
// Userspace figures come from wireguard-go on the host; run it inside ../shared/vm for the kernel.

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "dataplane/link/netlink_links.h"
#include "dataplane/tunnel/tunnel_interface.h"
#include "dataplane/wireguard/peer_diff.h"
#include "dataplane/wireguard/wg_conf.h"
#include "tests/support/netns.h"

namespace portcullis::bench {
namespace {

using Ms = std::chrono::duration<double, std::milli>;
using testing::run;

double time_ms(const std::function<void()>& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return Ms(std::chrono::steady_clock::now() - t0).count();
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5))];
}

double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

// A failure unwinds to main, so the namespace, interface and wireguard-go are cleaned up.
struct BenchFailure {
  std::string what;
};

[[noreturn]] void die(const std::string& what) { throw BenchFailure{what}; }

template <class T>
T must(Result<T> r, const char* what) {
  if (!r) die(std::string(what) + ": " + r.error().message());
  return std::move(*r);
}

void must(const Status& s, const char* what) {
  if (!s) die(std::string(what) + ": " + s.error().message());
}

wg::DeviceConfig make_config(int peers, const SecretKey& private_key) {
  wg::DeviceConfig c;
  c.private_key = private_key;
  c.listen_port = 30000;
  for (int i = 0; i < peers; ++i) {
    wg::Peer p;
    p.public_key = SecretKey::generate_private().public_key();
    p.allowed_ips = {IpPrefix::host(IpAddress::v4_host_order(0x0aff0002u + i))};
    p.persistent_keepalive = 30;
    c.peers.push_back(std::move(p));
  }
  return c;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) die("write " + path);
}

void wg_cmd(const std::string& args) {
  auto r = run("wg " + args + " >/dev/null");
  if (!r.ok()) die("wg " + args + " failed with status " + std::to_string(r.status));
}

struct Figures {
  int peers = 0;
  double cold_ours = 0, cold_wg = 0;
  double one_ours = 0, one_ours_sync = 0, one_wg_sync = 0;
  double p50 = 0, p99 = 0;
  double dump_ours = 0, dump_wg = 0;
};

class Bench {
 public:
  Bench(wg::Backend backend, int rounds, int changes)
      : backend_(backend), rounds_(rounds), changes_(changes) {}

  Figures measure(int peers) {
    testing::TestNetns ns("bench");
    if (!ns.ok()) die("cannot create a network namespace (run as root)");
    testing::NetnsGuard in(ns);
    std::string ifname = "pclb" + std::to_string(getpid() % 100000);
    auto links = must(link::NetlinkLinks::open(), "rtnetlink");
    tunnel::TunnelInterfaceSpec spec;
    spec.ifname = ifname;
    spec.backend = backend_;
    auto tun = must(tunnel::ensure_tunnel_interface(spec, *links), "create interface");
    auto& dev = *tun.device;

    auto key = SecretKey::generate_private();
    auto config = make_config(peers, key);
    std::string dir = "/tmp/pcl-bench-" + std::to_string(getpid());
    run("mkdir -p -m 700 " + dir);
    std::string conf = dir + "/full.conf", conf2 = dir + "/changed.conf";
    write_file(conf, wg::format_wg_conf(config));
    auto changed = config;
    changed.peers[peers / 2].allowed_ips = {*IpPrefix::parse("10.254.0.1/32")};
    write_file(conf2, wg::format_wg_conf(changed));

    auto empty_device = [&] {
      wg::DeviceConfig none;
      none.private_key = key;
      none.listen_port = 30000;
      must(dev.apply(wg::diff_device(none, must(dev.read(), "read"))), "empty device");
    };
    auto sync_ours = [&](const wg::DeviceConfig& want) {
      must(dev.apply(wg::diff_device(want, must(dev.read(), "read"))), "sync");
    };

    Figures f;
    f.peers = peers;
    std::vector<double> ours, ref;
    for (int r = 0; r < rounds_; ++r) {
      empty_device();
      ours.push_back(time_ms([&] { sync_ours(config); }));
      empty_device();
      ref.push_back(time_ms([&] { wg_cmd("setconf " + ifname + " " + conf); }));
    }
    f.cold_ours = median(ours);
    f.cold_wg = median(ref);
    auto check = must(dev.read(), "read");
    if (check.peers.size() != static_cast<std::size_t>(peers)) die("cold apply lost peers");

    // One peer's AllowedIPs flip between the two configurations each round.
    std::vector<double> delta_only, ours_sync, wg_sync;
    for (int r = 0; r < rounds_; ++r) {
      ours_sync.push_back(time_ms([&] { sync_ours(r % 2 ? config : changed); }));
      wg_sync.push_back(
          time_ms([&] { wg_cmd("syncconf " + ifname + " " + (r % 2 ? conf2 : conf)); }));
    }
    const auto& flip = config.peers[peers / 2];
    for (int i = 0; i < changes_; ++i) {
      wg::DeviceDelta d;
      wg::PeerChange c;
      c.public_key = flip.public_key;
      c.update_only = true;
      c.allowed_ips = i % 2 ? flip.allowed_ips : changed.peers[peers / 2].allowed_ips;
      d.peers.push_back(std::move(c));
      delta_only.push_back(time_ms([&] { must(dev.apply(d), "one-peer delta"); }));
    }
    f.one_ours = median(delta_only);
    f.p50 = percentile(delta_only, 0.5);
    f.p99 = percentile(delta_only, 0.99);
    f.one_ours_sync = median(ours_sync);
    f.one_wg_sync = median(wg_sync);

    std::vector<double> dump_ours, dump_wg;
    for (int r = 0; r < rounds_; ++r) {
      dump_ours.push_back(time_ms([&] { must(dev.read(), "read"); }));
      dump_wg.push_back(time_ms([&] { wg_cmd("show " + ifname + " dump"); }));
    }
    f.dump_ours = median(dump_ours);
    f.dump_wg = median(dump_wg);

    run("rm -rf " + dir);
    must(tunnel::remove_tunnel_interface(ifname, *links), "remove interface");
    return f;
  }

 private:
  wg::Backend backend_;
  int rounds_;
  int changes_;
};

}  // namespace
}  // namespace portcullis::bench

int run(portcullis::wg::Backend backend, const std::vector<int>& counts, int rounds, int changes);

// "1000,10000" -> {1000, 10000}; every count from 2 to 100,000.
std::vector<int> parse_counts(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  for (std::string n; std::getline(ss, n, ',');) {
    int v = 0;
    auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), v);
    if (ec != std::errc() || p != n.data() + n.size() || v < 2 || v > 100000) {
      portcullis::bench::die("--peers: '" + n + "' is not a count from 2 to 100000");
    }
    out.push_back(v);
  }
  return out;
}

int positive(const std::string& flag, const std::string& text) {
  int v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v < 1) {
    portcullis::bench::die(flag + ": '" + text + "' is not a positive number");
  }
  return v;
}

int main(int argc, char** argv) {
  using namespace portcullis;
  try {
    wg::Backend backend = wg::Backend::kUserspace;
    std::vector<int> counts = {1000, 10000};
    int rounds = 5, changes = 200;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) bench::die(a + " needs a value");
        return argv[++i];
      };
      if (a == "--backend") {
        backend = bench::must(wg::parse_backend(next()), "--backend");
      } else if (a == "--peers") {
        counts = parse_counts(next());
      } else if (a == "--rounds") {
        rounds = positive(a, next());
      } else if (a == "--changes") {
        changes = positive(a, next());
      } else {
        bench::die("unknown argument " + a + " (see the header of bench/wg_bench.cpp)");
      }
    }
    return run(backend, counts, rounds, changes);
  } catch (const bench::BenchFailure& f) {
    std::fprintf(stderr, "wg_bench: %s\n", f.what.c_str());
    return 1;
  }
}

int run(portcullis::wg::Backend backend, const std::vector<int>& counts, int rounds, int changes) {
  using namespace portcullis;
  bench::Bench b(backend, rounds, changes);
  std::printf("backend %s, %d rounds (medians), %d one-peer changes; times in ms\n",
              wg::backend_name(backend), rounds, changes);
  auto small = b.measure(100);
  std::vector<bench::Figures> all;
  for (int n : counts) {
    std::fprintf(stderr, "measuring %d peers...\n", n);
    all.push_back(b.measure(n));
  }
  std::printf("%7s | %9s %9s %6s | %8s %9s %9s %7s | %7s %7s | %8s %8s %6s\n", "peers", "cold ours",
              "setconf", "ratio", "1p ours", "1p sync", "syncconf", "speedup", "1p p50", "1p p99",
              "dump ours", "wg dump", "ratio");
  for (const auto& f : all) {
    std::printf(
        "%7d | %9.2f %9.2f %5.2fx | %8.3f %9.2f %9.2f %6.0fx | %7.3f %7.3f | %8.2f %8.2f %5.2fx\n",
        f.peers, f.cold_ours, f.cold_wg, f.cold_ours / f.cold_wg, f.one_ours, f.one_ours_sync,
        f.one_wg_sync, f.one_wg_sync / f.one_ours, f.p50, f.p99, f.dump_ours, f.dump_wg,
        f.dump_ours / f.dump_wg);
  }
  const auto& big = all.back();
  std::printf("one-peer change p99 at %d vs 100 peers: %.3f / %.3f ms = %.2fx (goal <= 1.5)\n",
              big.peers, big.p99, small.p99, big.p99 / small.p99);
  return 0;
}
