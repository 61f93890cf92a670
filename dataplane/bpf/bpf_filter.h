#pragma once
// The eBPF layer of the packet filter: tc programs pcl_tc_egress / pcl_tc_ingress on the tunnel
// interface (bpf/portcullis_filter.bpf.c), driven by the maps of bpf/portcullis_filter.h.
//
// Programs and maps are pinned under <pin_root>/<ifname>/. A new BpfFilter (a restarted daemon)
// adopts what a previous process left there without a single changing call, when the pinned maps
// have this build's definitions and the programs attached to the interface are the pinned ones
// and current. "Current" means their .rodata holds exactly what this process would load:
// pcl_l2_len of the interface and pcl_build_id, a hash of the BPF object embedded in this
// binary. (The kernel's program tag could not tell: it is known only after a load, and it leaves
// map references, so .rodata, out.) Anything else (a new daemon version, a detached filter, a
// changed map) is replaced by build(): maps that still fit are re-used (flows and counters
// survive) and the programs are swapped in place, so enforcement never has a gap. Destroying a
// BpfFilter leaves everything attached; remove() takes it all down.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/base/ip.h"
#include "dataplane/base/result.h"
#include "dataplane/filter/packet_filter.h"

namespace portcullis::bpf {

// Same numbers as enum pcl_reason in bpf/portcullis_filter.h.
enum class VerdictReason : std::uint8_t {
  kAllowed = 0,
  kPortNotAllowed = 1,
  kAgentInitiated = 2,
  kAgentToAgent = 3,
  kNoFlow = 4,
  kSourceNotAllowed = 5,
  kNotIpv4 = 6,
  kFragment = 7,
  kMalformed = 8,
  kProtocol = 9,
  kUnknownAgent = 10,
};
const char* verdict_reason_name(VerdictReason r);  // "allowed", "port-not-allowed", ...

enum class Direction : std::uint8_t { kToAgent = 0, kFromAgent = 1 };
const char* direction_name(Direction d);  // "to-agent", "from-agent"

// One counter row, summed over CPUs. Allowed when reason == kAllowed, dropped otherwise.
// Packets that do not parse (reason kNotIpv4, kFragment, kMalformed, kProtocol) have an empty
// agent, protocol 0 and port 0.
struct PortCounters {
  IpAddress agent;
  std::string device;         // from the agent set; empty if the agent is unknown
  std::uint8_t protocol = 0;  // IPPROTO_TCP, IPPROTO_UDP, or 0
  std::uint16_t port = 0;
  Direction direction = Direction::kToAgent;
  VerdictReason reason = VerdictReason::kAllowed;
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
};

struct BpfFilterOptions {
  // Pins go to <pin_root>/<ifname>/; empty: nothing is pinned (tests).
  std::string pin_root = "/sys/fs/bpf/portcullis";
  // false: load and fill the maps but attach nothing (BPF_PROG_TEST_RUN tests).
  bool attach = true;
  // Bytes before the IP header. Unset: 0 for L3 devices (WireGuard, TUN), 14 for Ethernet,
  // read from the interface. Must be set when attach is false.
  std::optional<std::uint32_t> l2_header_len;
  // The interface whose pins read(), apply() and read_counters() adopt when this object has not
  // built or checked anything yet. Empty: they answer ENOENT until build() or check() names it.
  std::string tunnel_ifname;
};

// What the kernel holds compared with (settings, contents); see BpfFilter::check().
struct BpfCheck {
  // build() must run: nothing adoptable is installed, the programs are outdated or not attached,
  // or the sources (operator networks, gateway) differ. Then `why` says which, in a few words.
  bool rebuild = false;
  std::string why;
  filter::FilterDelta elements;  // otherwise: map entries to add and remove
};

// Not thread-safe: one caller at a time (the reconciler serialises its passes and scrapes).
class BpfFilter final : public filter::PacketFilter {
 public:
  explicit BpfFilter(BpfFilterOptions options = {});
  ~BpfFilter() override;
  BpfFilter(const BpfFilter&) = delete;
  BpfFilter& operator=(const BpfFilter&) = delete;

  // Makes settings.tunnel_ifname run the current programs over maps holding exactly `contents`
  // and the sources (operator networks, gateway), with as few changes as it can: it adopts
  // current pins, re-uses pinned maps that fit, loads and swaps programs only when they are
  // outdated, re-attaches only when they are not attached, and writes only differing entries.
  Status build(const filter::FilterSettings& settings,
               const filter::FilterContents& contents) override;
  // ENOENT when nothing current is attached (nothing pinned, outdated, detached).
  Result<filter::FilterContents> read() override;
  // Touches only the delta's keys. A removed allowed entry also loses its flows in pcl_flows.
  Status apply(const filter::FilterDelta& delta) override;

  // read() plus what read() cannot see: the sources and the interface's link type. Adopts
  // current pins (settings name the interface). Makes no changing call.
  Result<BpfCheck> check(const filter::FilterSettings& settings,
                         const filter::FilterContents& contents);

  Result<std::vector<PortCounters>> read_counters();

  // Detaches both programs, removes the clsact qdisc if this object created it, and deletes
  // the pins (also those of a previous process). The object can build() again afterwards.
  Status remove();

  // What build() and check() did about existing pins ("adopted ...", "replaced stale pin ..."),
  // for the caller to log.
  const std::vector<std::string>& notices() const { return notices_; }

  // Calls that change kernel state (map writes, program loads, pins, tc changes) since this
  // object was made: a restart over unchanged state must leave this at 0.
  std::uint64_t changing_calls() const { return changing_calls_; }

  // For BPF_PROG_TEST_RUN; -1 before build() or adoption.
  int egress_prog_fd() const;
  int ingress_prog_fd() const;
  // Number of entries in pcl_flows (tests).
  Result<std::size_t> flow_count();

  struct Objects;  // the maps and programs in use: a libbpf skeleton, or adopted pins

 private:
  Result<std::unique_ptr<Objects>> load(std::uint32_t l2_len);
  Result<std::string> adopt(const std::string& ifname);
  Status hold(const std::string& doing);
  Result<std::string> attachment_mismatch(const Objects& objects);
  Status attach(const Objects& objects);
  Status pin_programs(const Objects& objects);
  Result<std::uint32_t> wanted_l2_len();
  Result<std::string> sources_mismatch(const filter::FilterSettings& settings);
  Status set_sources(const filter::FilterSettings& settings);
  Result<filter::FilterContents> read_contents();
  Status cut_flows(const std::vector<filter::AllowEntry>& removed);
  std::string pin_dir() const;

  BpfFilterOptions options_;
  std::unique_ptr<Objects> objects_;
  std::string ifname_;
  int ifindex_ = 0;
  bool created_clsact_ = false;
  std::vector<std::string> notices_;
  std::uint64_t changing_calls_ = 0;
};

}  // namespace portcullis::bpf
