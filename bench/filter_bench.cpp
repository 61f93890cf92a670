// Packet filter benchmark: ours (NftablesFilter, BpfFilter) against nft(8) and an iptables linear
// chain, at 10,000 devices x 5 TCP ports (50,000 allowed triples), in one run.
//
//   filter_bench [--devices 10000] [--ports 5] [--rounds 5] [--changes 400] [--cli-changes 60]
//                [--sizes 100,1000,10000] [--iperf-seconds 5] [--iperf-runs 3]
//                [--sections cold,change,path] [--link veth|wireguard]
//
// cold    ours (NftablesFilter::open + build) vs `nft -f` of `nft list table inet portcullis` as
//         our build left it (so the text is the same table, sets, chains and elements), each
//         round on a fresh namespace; medians over --rounds.
// change  one device's 5 elements removed and added back, alternating, at each --sizes count:
//         NftablesFilter::apply and BpfFilter::apply of the same delta (p50/p99 over --changes),
//         and `nft delete element` / `nft add element` of the same 5 elements for reference.
// path    iperf3 TCP throughput operator -> agent through the gateway (topology below) with no
//         filter, nft only, eBPF only, both, and iptables chains of the same 50,000 rules (the
//         allowed flow matched last, or in the middle); modes interleaved over --iperf-runs runs,
//         a fresh topology for each, median. Each filtering run also checks that a port that is
//         not allowed (tcp/5201) is dropped, so the filter is on the path.
//
// Packet path topology (veth all the way: no crypto, so the filters' cost is not hidden):
//
//      pcl-fbop-<pid>   vo 10.9.0.2/24, default via 10.9.0.1                    iperf3 -c
//            | veth
//      pcl-fbgw-<pid>   vg 10.9.0.1/24, forwarding on
//                       pclf<pid> 10.255.0.1/16: the filters' tunnel_ifname (Ethernet, L2 14)
//            | veth
//      pcl-fbag-<pid>   vb: last device's address /16, middle device's /32,     iperf3 -s
//                       route 10.9.0.0/24 via 10.255.0.1
//
// --link wireguard replaces the agent veth with a wireguard-go tunnel (gateway pclf<pid>,
// UDP 30000 over a veth underlay; agent pclg<pid>): the filters then sit on an L3 TUN device.
//
// Everything runs in namespaces this program creates. The measuring process is a child; the
// parent forwards SIGINT/SIGTERM/SIGHUP to it and, when it ends however it ends, deletes the
// namespaces (and their processes) and the scratch directory named with the child's PID.
// Nothing is pinned (BpfFilterOptions::pin_root is empty), so no BPF object outlives the child.

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "dataplane/bpf/bpf_filter.h"
#include "dataplane/filter/packet_filter.h"
#include "dataplane/nftables/nftables_filter.h"
#include "tests/support/netns.h"

namespace portcullis::bench {
namespace {

using filter::AgentEntry;
using filter::AllowEntry;
using filter::FilterContents;
using filter::FilterDelta;
using filter::FilterSettings;
using filter::Protocol;
using testing::NetnsGuard;
using testing::run;
using testing::TestNetns;
using Ms = std::chrono::duration<double, std::milli>;

constexpr std::uint32_t kFirstAgent = 0x0aff0002u;  // 10.255.0.2; device i has kFirstAgent + i
constexpr std::uint16_t kDefaultPorts[] = {3478, 5900, 5985, 5986, 47002};  // sorted
constexpr std::uint16_t kBlockedPort = 5201;  // never allowed: the "filter is on the path" probe
constexpr char kOperatorNetwork[] = "10.9.0.0/24";

double time_ms(const std::function<void()>& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return Ms(std::chrono::steady_clock::now() - t0).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5))];
}

double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "filter_bench: %s\n", what.c_str());
  std::exit(1);
}

template <class T>
T must(Result<T> r, const std::string& what) {
  if (!r) die(what + ": " + r.error().message());
  return std::move(*r);
}

void must(const Status& s, const std::string& what) {
  if (!s) die(what + ": " + s.error().message());
}

void sh(const std::string& command) {
  auto r = run(command);
  if (!r.ok()) die("'" + command + "' failed with status " + std::to_string(r.status));
}

void sh(const TestNetns& ns, const std::string& command) {
  auto r = ns.run(command);
  if (!r.ok()) {
    die("in " + ns.name() + ": '" + command + "' failed with status " + std::to_string(r.status));
  }
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) die("write " + path);
}

std::string scratch_dir(pid_t pid) { return "/tmp/pcl-fbench-" + std::to_string(pid); }

// ---- the policy under test

std::vector<std::uint16_t> port_list(int ports) {
  std::vector<std::uint16_t> out;
  for (int i = 0; i < ports; ++i) {
    out.push_back(i < 5 ? kDefaultPorts[i] : static_cast<std::uint16_t>(10000 + i));
  }
  std::sort(out.begin(), out.end());
  return out;
}

IpAddress device_address(int i) {
  return IpAddress::v4_host_order(kFirstAgent + static_cast<std::uint32_t>(i));
}

std::string device_name(int i) {
  char name[32];
  std::snprintf(name, sizeof name, "dev-%05d", i);
  return name;
}

// Device i: agent 10.255.0.2 + i, TCP on every port of port_list(ports). Sorted, unique.
FilterContents make_contents(int devices, int ports) {
  FilterContents c;
  auto list = port_list(ports);
  for (int i = 0; i < devices; ++i) {
    c.agents.push_back(AgentEntry{device_address(i), device_name(i)});
    for (auto port : list) {
      c.allowed.push_back(AllowEntry{device_address(i), Protocol::kTcp, port, device_name(i)});
    }
  }
  return c;
}

FilterSettings make_settings(const std::string& tunnel_ifname) {
  FilterSettings s;
  s.tunnel_ifname = tunnel_ifname;
  s.gateway_address = *IpAddress::parse("10.255.0.1");
  s.agent_pool = *IpPrefix::parse("10.255.0.0/16");
  s.operator_networks = {*IpPrefix::parse(kOperatorNetwork)};
  return s;
}

std::vector<AllowEntry> device_entries(const FilterContents& c, int device) {
  std::vector<AllowEntry> out;
  auto addr = device_address(device);
  for (const auto& e : c.allowed) {
    if (e.agent == addr) out.push_back(e);
  }
  return out;
}

// ---- cold build

struct ColdFigures {
  double ours_ms = 0;
  double nft_ms = 0;
  bool equivalent = false;
  std::size_t text_bytes = 0;
};

// The listing's elements and lines, sorted: two builds of one table hash their elements in
// different orders, so only the multiset of items is compared.
std::vector<std::string> listing_items(const std::string& listing) {
  std::vector<std::string> items;
  std::string cur;
  auto flush = [&] {
    auto b = cur.find_first_not_of(" \t");
    auto e = cur.find_last_not_of(" \t");
    if (b != std::string::npos) items.push_back(cur.substr(b, e - b + 1));
    cur.clear();
  };
  for (char ch : listing) {
    if (ch == '\n' || ch == ',') {
      flush();
    } else {
      cur += ch;
    }
  }
  flush();
  std::sort(items.begin(), items.end());
  return items;
}

ColdFigures measure_cold(const FilterSettings& settings, const FilterContents& contents,
                         int rounds) {
  const std::string text_path = scratch_dir(::getpid()) + "/portcullis.nft";
  std::string listing;
  std::vector<double> ours, ref;
  ColdFigures f;
  for (int r = 0; r < rounds; ++r) {
    {
      TestNetns ns("fbcold");
      if (!ns.ok()) die("cannot create a network namespace (run as root)");
      NetnsGuard in(ns);
      if (!in.ok()) die("cannot enter " + ns.name());
      ours.push_back(time_ms([&] {
        auto nft = must(nftables::NftablesFilter::open(), "open nftables");
        must(nft->build(settings, contents), "cold build (ours)");
      }));
      if (r == 0) {
        auto listed = run("nft list table inet portcullis");
        if (!listed.ok()) die("nft list table inet portcullis failed");
        listing = listed.out;
        write_file(text_path, listing);
        f.text_bytes = listing.size();
      }
    }
    {
      TestNetns ns("fbcold");
      if (!ns.ok()) die("cannot create a network namespace");
      NetnsGuard in(ns);
      if (!in.ok()) die("cannot enter " + ns.name());
      ref.push_back(time_ms([&] { sh("nft -f " + text_path); }));
      if (r == 0) {
        auto listed = run("nft list table inet portcullis");
        f.equivalent = listed.ok() && listing_items(listed.out) == listing_items(listing);
      }
    }
  }
  f.ours_ms = median(ours);
  f.nft_ms = median(ref);
  return f;
}

// ---- one-device change latency

struct ChangeFigures {
  int devices = 0;
  double nft_p50 = 0, nft_p99 = 0;
  double bpf_p50 = 0, bpf_p99 = 0;
  double cli_p50 = 0, cli_p99 = 0;
  // The two halves apart, p50 and p99: a removal also cuts the flows it allowed.
  struct Halves {
    double remove_p50 = 0, remove_p99 = 0, add_p50 = 0, add_p99 = 0;
  };
  Halves nft_halves, bpf_halves;
};

// Samples alternate removal, addition, removal, ...
ChangeFigures::Halves halves(const std::vector<double>& samples) {
  std::vector<double> removals, additions;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    (i % 2 ? additions : removals).push_back(samples[i]);
  }
  return {percentile(removals, 0.5), percentile(removals, 0.99), percentile(additions, 0.5),
          percentile(additions, 0.99)};
}

// `nft add|delete element inet portcullis agent-ports { a . tcp . p comment "dev", ... }`
std::string nft_element_command(const char* verb, const std::vector<AllowEntry>& entries) {
  std::string cmd = std::string("nft '") + verb + " element inet portcullis agent-ports { ";
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    if (i) cmd += ", ";
    cmd += e.agent.to_string() + " . " + filter::protocol_name(e.protocol) + " . " +
           std::to_string(e.port);
    if (verb[0] == 'a') cmd += " comment \"" + e.device + "\"";
  }
  return cmd + " }'";
}

ChangeFigures measure_change(int devices, int ports, int changes, int cli_changes) {
  TestNetns ns("fbchg");
  if (!ns.ok()) die("cannot create a network namespace (run as root)");
  NetnsGuard in(ns);
  if (!in.ok()) die("cannot enter " + ns.name());
  // An Ethernet device for the tc hooks (a veth: the host has no dummy driver); no traffic.
  const std::string ifname = "pclf" + std::to_string(::getpid());
  sh("ip link add " + ifname + " type veth peer name " + ifname + "p && ip link set " + ifname +
     " up");
  const auto settings = make_settings(ifname);
  const auto contents = make_contents(devices, ports);
  const auto entries = device_entries(contents, devices / 2);
  FilterDelta remove, add;
  remove.remove_allowed = entries;
  add.add_allowed = entries;

  ChangeFigures f;
  f.devices = devices;
  auto nft = must(nftables::NftablesFilter::open(), "open nftables");
  must(nft->build(settings, contents), "cold build of " + std::to_string(devices) + " devices");
  bpf::BpfFilterOptions options;
  options.pin_root.clear();
  bpf::BpfFilter bpf(options);
  must(bpf.build(settings, contents), "BPF build of " + std::to_string(devices) + " devices");

  // Removal first, so an even count leaves the device as it was.
  std::vector<double> nft_ms, bpf_ms, cli_ms;
  for (int i = 0; i < changes; ++i) {
    const auto& d = i % 2 ? add : remove;
    nft_ms.push_back(time_ms([&] { must(nft->apply(d), "nft one-device change"); }));
  }
  for (int i = 0; i < changes; ++i) {
    const auto& d = i % 2 ? add : remove;
    bpf_ms.push_back(time_ms([&] { must(bpf.apply(d), "BPF one-device change"); }));
  }
  const std::string del_cmd = nft_element_command("delete", entries);
  const std::string add_cmd = nft_element_command("add", entries);
  for (int i = 0; i < cli_changes; ++i) {
    cli_ms.push_back(time_ms([&] { sh(i % 2 ? add_cmd : del_cmd); }));
  }
  auto have = must(nft->read(), "read nft");
  if (have.allowed.size() != contents.allowed.size()) die("nft lost elements during changes");
  auto have_bpf = must(bpf.read(), "read BPF maps");
  if (have_bpf.allowed.size() != contents.allowed.size()) die("BPF lost entries during changes");
  must(bpf.remove(), "remove BPF filter");

  f.nft_halves = halves(nft_ms);
  f.bpf_halves = halves(bpf_ms);
  f.nft_p50 = percentile(nft_ms, 0.5);
  f.nft_p99 = percentile(nft_ms, 0.99);
  f.bpf_p50 = percentile(bpf_ms, 0.5);
  f.bpf_p99 = percentile(bpf_ms, 0.99);
  f.cli_p50 = percentile(cli_ms, 0.5);
  f.cli_p99 = percentile(cli_ms, 0.99);
  return f;
}

// ---- packet path

enum class PathMode { kNone, kNft, kBpf, kBoth, kIptablesLast, kIptablesMiddle, kLegacyLast };

const char* mode_name(PathMode m) {
  switch (m) {
    case PathMode::kNone:
      return "no filter";
    case PathMode::kNft:
      return "nft (ours)";
    case PathMode::kBpf:
      return "eBPF (ours)";
    case PathMode::kBoth:
      return "nft + eBPF (ours)";
    case PathMode::kIptablesLast:
      return "iptables-nft, match last";
    case PathMode::kIptablesMiddle:
      return "iptables-nft, match middle";
    case PathMode::kLegacyLast:
      return "iptables-legacy, match last";
  }
  return "?";
}

bool is_iptables(PathMode m) {
  return m == PathMode::kIptablesLast || m == PathMode::kIptablesMiddle ||
         m == PathMode::kLegacyLast;
}

struct PathRun {
  double gbps = 0;  // 0: iperf3 failed
  bool blocked_ok = false;
  std::uint64_t bpf_packets = 0;  // allowed to-agent packets the eBPF counters saw for the flow
};

// *filter
// -A FORWARD -i <tun> -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT   (replies)
// -A FORWARD -d <agent>/32 -o <tun> -p tcp -m tcp --dport <port> -j ACCEPT   (x 50,000, in order)
// -A FORWARD -j DROP
// COMMIT
// Packets toward the agent walk the chain to their rule; replies match the first rule.
std::string iptables_rules(const FilterContents& c, const std::string& tun) {
  std::string out = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";
  out += "-A FORWARD -i " + tun + " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n";
  for (const auto& e : c.allowed) {
    out += "-A FORWARD -d " + e.agent.to_string() + "/32 -o " + tun + " -p tcp -m tcp --dport " +
           std::to_string(e.port) + " -j ACCEPT\n";
  }
  out += "-A FORWARD -j DROP\nCOMMIT\n";
  return out;
}

// The "bits_per_second" of "sum_received" in iperf3's JSON report.
double received_gbps(const std::string& json) {
  auto sum = json.find("\"sum_received\"");
  if (sum == std::string::npos) return 0;
  auto key = json.find("\"bits_per_second\"", sum);
  if (key == std::string::npos) return 0;
  auto colon = json.find(':', key);
  return std::strtod(json.c_str() + colon + 1, nullptr) / 1e9;
}

class PacketPath {
 public:
  PacketPath(const FilterContents& contents, int seconds, bool wireguard)
      : contents_(contents),
        seconds_(seconds),
        wireguard_(wireguard),
        tun_("pclf" + std::to_string(::getpid())),
        settings_(make_settings(tun_)),
        rules_path_(scratch_dir(::getpid()) + "/iptables.rules") {
    const int devices = static_cast<int>(contents.agents.size());
    const auto last = device_entries(contents, devices - 1);
    const auto middle = device_entries(contents, devices / 2);
    last_ = last.back();
    middle_ = middle[middle.size() / 2];
    write_file(rules_path_, iptables_rules(contents, tun_));
    // Rule number of each target: rule 1 is the replies' rule.
    for (std::size_t i = 0; i < contents.allowed.size(); ++i) {
      if (contents.allowed[i] == last_) last_rule_ = i + 2;
      if (contents.allowed[i] == middle_) middle_rule_ = i + 2;
    }
  }

  const AllowEntry& target(PathMode m) const {
    return m == PathMode::kIptablesMiddle ? middle_ : last_;
  }
  std::size_t rule_of(PathMode m) const {
    return m == PathMode::kIptablesMiddle ? middle_rule_ : last_rule_;
  }
  std::size_t rule_count() const { return contents_.allowed.size() + 2; }

  // One iperf3 run on a fresh topology with `mode` installed on the gateway.
  PathRun measure(PathMode mode) {
    TestNetns op("fbop"), gw("fbgw"), ag("fbag");
    if (!op.ok() || !gw.ok() || !ag.ok()) die("cannot create network namespaces (run as root)");
    if (!testing::add_veth(gw, "vg", op, "vo")) die("cannot create veth pairs");
    sh(op, "ip addr add 10.9.0.2/24 dev vo && ip route add default via 10.9.0.1");
    sh(gw, "ip addr add 10.9.0.1/24 dev vg && sysctl -qw net.ipv4.ip_forward=1");
    // wireguard-go leaves its UAPI socket behind when killed: stop it by deleting its link.
    struct WireguardStop {
      const TestNetns* gw = nullptr;
      const TestNetns* ag = nullptr;
      std::string gw_if, ag_if;
      ~WireguardStop() {
        if (gw) gw->run("ip link del " + gw_if + " 2>/dev/null");
        if (ag) ag->run("ip link del " + ag_if + " 2>/dev/null");
      }
    } stop;
    if (wireguard_) {
      stop = {&gw, &ag, tun_, agent_if()};
      connect_wireguard(gw, ag);
    } else {
      connect_veth(gw, ag);
    }

    std::vector<std::uint16_t> listen = {last_.port};
    if (middle_.port != last_.port) listen.push_back(middle_.port);
    std::string pattern = std::to_string(kBlockedPort);
    for (auto port : listen) {
      sh(ag, "iperf3 -s -D -1 -p " + std::to_string(port) + " >/dev/null 2>&1");
      pattern += "|" + std::to_string(port);
    }
    sh(ag, "socat TCP-LISTEN:" + std::to_string(kBlockedPort) +
               ",reuseaddr,fork EXEC:cat >/dev/null 2>&1 &");
    // iperf3 -D returns before it listens: wait until every port is up.
    sh(ag, "for i in $(seq 100); do [ $(ss -Hltn | grep -c -E ':(" + pattern + ") ') -ge " +
               std::to_string(listen.size() + 1) + " ] && exit 0; sleep 0.05; done; exit 1");

    std::unique_ptr<nftables::NftablesFilter> nft;
    std::unique_ptr<bpf::BpfFilter> bpf;
    {
      NetnsGuard in(gw);
      if (!in.ok()) die("cannot enter " + gw.name());
      if (mode == PathMode::kNft || mode == PathMode::kBoth) {
        nft = must(nftables::NftablesFilter::open(), "open nftables");
        must(nft->build(settings_, contents_), "nft build on the gateway");
      }
      if (mode == PathMode::kBpf || mode == PathMode::kBoth) {
        bpf::BpfFilterOptions options;
        options.pin_root.clear();
        bpf = std::make_unique<bpf::BpfFilter>(options);
        must(bpf->build(settings_, contents_), "BPF build on the gateway");
      }
      if (is_iptables(mode)) {
        const char* tool =
            mode == PathMode::kLegacyLast ? "iptables-legacy-restore" : "iptables-nft-restore";
        sh(std::string(tool) + " < " + rules_path_);
      }
    }

    PathRun r;
    const auto& t = target(mode);
    {
      NetnsGuard in(op);
      if (!in.ok()) die("cannot enter " + op.name());
      // A port nobody allows: dropped by every filter, reachable without one.
      bool reached = run("nc -z -w 1 " + last_.agent.to_string() + " " +
                         std::to_string(kBlockedPort) + " 2>/dev/null")
                         .ok();
      r.blocked_ok = mode == PathMode::kNone ? reached : !reached;
      auto out = run("iperf3 -c " + t.agent.to_string() + " -p " + std::to_string(t.port) + " -t " +
                     std::to_string(seconds_) + " -J 2>/dev/null");
      r.gbps = received_gbps(out.out);
    }
    if (bpf) {
      NetnsGuard in(gw);
      for (const auto& c : must(bpf->read_counters(), "read BPF counters")) {
        if (c.agent == t.agent && c.port == t.port && c.direction == bpf::Direction::kToAgent &&
            c.reason == bpf::VerdictReason::kAllowed) {
          r.bpf_packets += c.packets;
        }
      }
      must(bpf->remove(), "remove BPF filter");
    }
    return r;  // the namespaces go with their filters, tables and processes
  }

  std::string agent_if() const { return "pclg" + std::to_string(::getpid()); }

 private:
  // gateway tun_ 10.255.0.1/16 == veth == agent vb (the agent's addresses, on one link).
  void connect_veth(const TestNetns& gw, const TestNetns& ag) {
    if (!testing::add_veth(gw, tun_, ag, "vb")) die("cannot create veth pairs");
    sh(gw, "ip addr add 10.255.0.1/16 dev " + tun_);
    sh(ag, "ip addr add " + last_.agent.to_string() + "/16 dev vb && ip addr add " +
               middle_.agent.to_string() + "/32 dev vb && ip route add 10.9.0.0/24 via 10.255.0.1");
    // Static neighbours on the agent link: the eBPF filter drops ARP (it passes IPv4 only, as
    // on a WireGuard device, which has no ARP), so nothing may need it during the runs.
    auto mac = [](const TestNetns& ns, const std::string& ifname) {
      auto r = ns.run("cat /sys/class/net/" + ifname + "/address");
      if (!r.ok() || r.out.size() < 17) die("read MAC address of " + ifname + " in " + ns.name());
      return r.out.substr(0, 17);
    };
    const std::string gw_mac = mac(gw, tun_), ag_mac = mac(ag, "vb");
    for (const auto* e : {&last_, &middle_}) {
      sh(gw, "ip neigh replace " + e->agent.to_string() + " lladdr " + ag_mac + " dev " + tun_ +
                 " nud permanent");
    }
    sh(ag, "ip neigh replace 10.255.0.1 lladdr " + gw_mac + " dev vb nud permanent");
  }

  // gateway wireguard-go tun_ 10.255.0.1/16, UDP 30000 on vu 10.0.1.1/24
  //   == veth underlay ==
  // agent wireguard-go pclg<pid> (the agent's addresses), endpoint 10.0.1.1:30000
  void connect_wireguard(const TestNetns& gw, const TestNetns& ag) {
    if (!testing::add_veth(gw, "vu", ag, "vu")) die("cannot create the underlay veth pair");
    sh(gw, "ip addr add 10.0.1.1/24 dev vu");
    sh(ag, "ip addr add 10.0.1.2/24 dev vu");
    const std::string dir = scratch_dir(::getpid());
    sh("umask 077 && wg genkey > " + dir + "/gw.key && wg genkey > " + dir + "/ag.key");
    auto pub = [&](const std::string& key) {
      auto r = run("wg pubkey < " + dir + "/" + key);
      if (!r.ok() || r.out.size() < 44) die("wg pubkey failed");
      return r.out.substr(0, 44);
    };
    const std::string gw_pub = pub("gw.key"), ag_pub = pub("ag.key");
    const std::string ag_if = agent_if();
    sh(gw, "wireguard-go " + tun_ + " >/dev/null 2>&1 && wg set " + tun_ +
               " listen-port 30000 private-key " + dir + "/gw.key peer " + ag_pub +
               " allowed-ips " + last_.agent.to_string() + "/32," + middle_.agent.to_string() +
               "/32 && ip addr add 10.255.0.1/16 dev " + tun_ + " && ip link set " + tun_ + " up");
    sh(ag, "wireguard-go " + ag_if + " >/dev/null 2>&1 && wg set " + ag_if + " private-key " + dir +
               "/ag.key peer " + gw_pub +
               " endpoint 10.0.1.1:30000 allowed-ips 10.255.0.0/16,10.9.0.0/24"
               " persistent-keepalive 1 && ip addr add " +
               last_.agent.to_string() + "/32 dev " + ag_if + " && ip addr add " +
               middle_.agent.to_string() + "/32 dev " + ag_if + " && ip link set " + ag_if +
               " up && ip route add 10.255.0.0/16 dev " + ag_if +
               " && ip route add 10.9.0.0/24 dev " + ag_if);
    // The first handshake, before any filter (the filters drop ICMP).
    sh(gw, "for i in $(seq 50); do ping -c 1 -W 1 " + last_.agent.to_string() +
               " >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1");
  }

  const FilterContents& contents_;
  int seconds_;
  bool wireguard_;
  std::string tun_;
  FilterSettings settings_;
  std::string rules_path_;
  AllowEntry last_, middle_;
  std::size_t last_rule_ = 0, middle_rule_ = 0;
};

// ---- report

std::string machine_line() {
  auto model = run("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1").out;
  if (!model.empty() && model.back() == '\n') model.pop_back();
  auto kernel = run("uname -r").out;
  if (!kernel.empty() && kernel.back() == '\n') kernel.pop_back();
  return model + ", " + std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs, kernel " + kernel;
}

std::string load_line() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

struct Options {
  int devices = 10000;
  int ports = 5;
  int rounds = 5;
  int changes = 400;
  int cli_changes = 60;
  std::vector<int> sizes = {100, 1000, 10000};
  int iperf_seconds = 5;
  int iperf_runs = 3;
  bool cold = true, change = true, path = true;
  bool wireguard = false;  // --link wireguard: the agent link is a wireguard-go tunnel
};

int bench_main(const Options& o) {
  sh("mkdir -p -m 700 " + scratch_dir(::getpid()));
  std::printf("filter_bench: %d devices x %d TCP ports = %d triples; %s\n", o.devices, o.ports,
              o.devices * o.ports, machine_line().c_str());
  std::printf("load average at start: %s\n\n", load_line().c_str());
  std::fflush(stdout);
  const auto contents = make_contents(o.devices, o.ports);

  if (o.cold) {
    std::fprintf(stderr, "cold build, %d rounds...\n", o.rounds);
    auto f = measure_cold(make_settings("pclf0"), contents, o.rounds);
    std::printf("cold build of %zu triples (median of %d, fresh namespace each):\n",
                contents.allowed.size(), o.rounds);
    std::printf(
        "  ours %.1f ms | nft -f %.1f ms (%zu bytes of text, same table: %s) | "
        "ratio %.2fx (goal <= 1.0x, < 1000 ms)\n\n",
        f.ours_ms, f.nft_ms, f.text_bytes, f.equivalent ? "yes" : "NO", f.ours_ms / f.nft_ms);
    std::fflush(stdout);
  }

  if (o.change) {
    std::vector<ChangeFigures> all;
    for (int n : o.sizes) {
      std::fprintf(stderr, "one-device changes at %d devices...\n", n);
      all.push_back(measure_change(n, o.ports, o.changes, o.cli_changes));
    }
    std::printf(
        "one-device change (%d elements removed / added back, alternating), ms; ours over "
        "%d samples, nft CLI over %d:\n",
        o.ports, o.changes, o.cli_changes);
    std::printf("  %7s | %8s %8s | %8s %8s | %9s %9s\n", "devices", "nft p50", "nft p99", "bpf p50",
                "bpf p99", "CLI p50", "CLI p99");
    for (const auto& f : all) {
      std::printf("  %7d | %8.3f %8.3f | %8.3f %8.3f | %9.2f %9.2f\n", f.devices, f.nft_p50,
                  f.nft_p99, f.bpf_p50, f.bpf_p99, f.cli_p50, f.cli_p99);
    }
    std::printf(
        "  ours, removals (which also cut the flows they allowed) and additions apart, ms:\n");
    std::printf("  %7s | %8s %8s %8s %8s | %8s %8s %8s %8s\n", "devices", "nft rm50", "rm99",
                "add50", "add99", "bpf rm50", "rm99", "add50", "add99");
    for (const auto& f : all) {
      const auto &n = f.nft_halves, &b = f.bpf_halves;
      std::printf("  %7d | %8.3f %8.3f %8.3f %8.3f | %8.3f %8.3f %8.3f %8.3f\n", f.devices,
                  n.remove_p50, n.remove_p99, n.add_p50, n.add_p99, b.remove_p50, b.remove_p99,
                  b.add_p50, b.add_p99);
    }
    const auto &small = all.front(), &big = all.back();
    std::printf("  p99 at %d vs %d devices: nft %.2fx, bpf %.2fx (goal: flat, < 5 ms)\n\n",
                big.devices, small.devices, big.nft_p99 / small.nft_p99,
                big.bpf_p99 / small.bpf_p99);
    std::fflush(stdout);
  }

  if (o.path) {
    const PathMode modes[] = {PathMode::kNone,         PathMode::kNft,
                              PathMode::kBpf,          PathMode::kBoth,
                              PathMode::kIptablesLast, PathMode::kIptablesMiddle,
                              PathMode::kLegacyLast};
    PacketPath path(contents, o.iperf_seconds, o.wireguard);
    std::vector<std::vector<PathRun>> runs(std::size(modes));
    for (int r = 0; r < o.iperf_runs; ++r) {
      for (std::size_t m = 0; m < std::size(modes); ++m) {
        std::fprintf(stderr, "packet path run %d/%d: %s...\n", r + 1, o.iperf_runs,
                     mode_name(modes[m]));
        runs[m].push_back(path.measure(modes[m]));
      }
    }
    std::printf(
        "packet path: iperf3 TCP, operator -> gateway -> agent over %s, %d s x %d runs "
        "(median), Gbit/s:\n",
        o.wireguard ? "wireguard-go" : "veth", o.iperf_seconds, o.iperf_runs);
    std::printf("  %-28s | %8s | %6s | %s\n", "mode", "Gbit/s", "ratio", "checks");
    double base = 0;
    for (std::size_t m = 0; m < std::size(modes); ++m) {
      std::vector<double> g;
      bool blocked = true, failed = false;
      std::uint64_t packets = 0;
      for (const auto& r : runs[m]) {
        g.push_back(r.gbps);
        blocked = blocked && r.blocked_ok;
        failed = failed || r.gbps == 0;
        packets += r.bpf_packets;
      }
      double gbps = median(g);
      if (modes[m] == PathMode::kNone) base = gbps;
      std::string checks =
          modes[m] == PathMode::kNone
              ? std::string(blocked ? "tcp/5201 reachable" : "tcp/5201 NOT reached")
              : std::string(blocked ? "tcp/5201 dropped" : "tcp/5201 NOT DROPPED");
      if (failed) checks += ", an iperf3 run FAILED";
      if (is_iptables(modes[m])) {
        checks += ", flow at rule " + std::to_string(path.rule_of(modes[m])) + " of " +
                  std::to_string(path.rule_count());
      }
      if (modes[m] == PathMode::kBpf || modes[m] == PathMode::kBoth) {
        checks += ", eBPF counted " + std::to_string(packets) + " allowed packets";
      }
      std::string runs_text;
      for (double x : g) {
        char b[16];
        std::snprintf(b, sizeof b, "%s%.2f", runs_text.empty() ? "" : " ", x);
        runs_text += b;
      }
      std::printf("  %-28s | %8.2f | %5.3f | runs %s; %s\n", mode_name(modes[m]), gbps,
                  base > 0 ? gbps / base : 0.0, runs_text.c_str(), checks.c_str());
    }
    std::printf("  target flow: %s tcp/%u (%s); middle: %s tcp/%u; goal >= 0.95 for ours\n\n",
                path.target(PathMode::kNone).agent.to_string().c_str(),
                path.target(PathMode::kNone).port, path.target(PathMode::kNone).device.c_str(),
                path.target(PathMode::kIptablesMiddle).agent.to_string().c_str(),
                path.target(PathMode::kIptablesMiddle).port);
  }
  std::printf("load average at end: %s\n", load_line().c_str());
  sh("rm -rf " + scratch_dir(::getpid()));
  return 0;
}

// ---- the parent: signal forwarding and cleanup whatever the child did

volatile sig_atomic_t g_child = 0;

void forward_signal(int sig) {
  if (g_child > 0) ::kill(g_child, sig);
}

// Deletes pcl-*-<pid> namespaces, killing what runs in them, and the scratch directory.
int remove_leftovers(pid_t pid) {
  const std::string suffix = "-" + std::to_string(pid);
  std::vector<std::string> names;
  if (DIR* d = ::opendir("/run/netns")) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.starts_with("pcl-") && name.ends_with(suffix)) names.push_back(name);
    }
    ::closedir(d);
  }
  for (const auto& name : names) {
    for (int round = 0; round < 50; ++round) {
      std::istringstream pids(run("ip netns pids " + name + " 2>/dev/null").out);
      bool any = false;
      for (pid_t p; pids >> p; any = true) ::kill(p, SIGKILL);
      if (!any) break;
      ::usleep(20000);
    }
    run("ip netns del " + name + " 2>/dev/null");
  }
  run("rm -rf " + scratch_dir(pid));
  // wireguard-go's UAPI sockets (--link wireguard), if it was killed.
  for (const char* prefix : {"pclf", "pclg"}) {
    ::unlink(("/var/run/wireguard/" + std::string(prefix) + std::to_string(pid) + ".sock").c_str());
  }
  return static_cast<int>(names.size());
}

int supervise(const Options& o) {
  pid_t child = ::fork();
  if (child < 0) die("fork failed");
  if (child == 0) {
    // The child dies of these signals; the parent cleans up after it.
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGHUP, SIG_DFL);
    std::exit(bench_main(o));
  }
  g_child = child;
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) die("waitpid failed");
  }
  if (int n = remove_leftovers(child); n > 0) {
    std::fprintf(stderr, "filter_bench: removed %d namespace(s) the measuring process left\n", n);
  }
  if (WIFSIGNALED(status)) {
    std::fprintf(stderr, "filter_bench: measuring process killed by signal %d\n", WTERMSIG(status));
    return 128 + WTERMSIG(status);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  for (std::string n; std::getline(ss, n, ',');) out.push_back(std::stoi(n));
  return out;
}

}  // namespace
}  // namespace portcullis::bench

int main(int argc, char** argv) {
  using namespace portcullis::bench;
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--devices") {
      o.devices = std::stoi(next());
    } else if (a == "--ports") {
      o.ports = std::stoi(next());
    } else if (a == "--rounds") {
      o.rounds = std::stoi(next());
    } else if (a == "--changes") {
      o.changes = std::stoi(next());
    } else if (a == "--cli-changes") {
      o.cli_changes = std::stoi(next());
    } else if (a == "--sizes") {
      o.sizes = parse_list(next());
    } else if (a == "--iperf-seconds") {
      o.iperf_seconds = std::stoi(next());
    } else if (a == "--iperf-runs") {
      o.iperf_runs = std::stoi(next());
    } else if (a == "--link") {
      std::string link = next();
      if (link != "veth" && link != "wireguard") die("--link is veth or wireguard");
      o.wireguard = link == "wireguard";
    } else if (a == "--sections") {
      std::string s = "," + next() + ",";
      o.cold = s.find(",cold,") != std::string::npos;
      o.change = s.find(",change,") != std::string::npos;
      o.path = s.find(",path,") != std::string::npos;
    } else {
      die("unknown argument " + a + " (see the header of bench/filter_bench.cpp)");
    }
  }
  if (o.devices < 2 || o.ports < 1 || o.ports > 64 || o.rounds < 1 || o.iperf_runs < 1 ||
      o.sizes.empty()) {
    die("--devices >= 2, --ports 1..64, --rounds, --iperf-runs >= 1, --sizes not empty");
  }
  if (::geteuid() != 0) die("needs root (network namespaces, nftables, tc, iptables)");
  return supervise(o);
}
