#pragma once
// The eBPF layer of the packet filter: tc programs pcl_tc_egress / pcl_tc_ingress on the tunnel
// interface (bpf/portcullis_filter.bpf.c), driven by the maps of bpf/portcullis_filter.h.
//
// Programs and maps are pinned under <pin_root>/<ifname>/ so that a restarted daemon re-uses
// the maps (and their flows and counters) and swaps the programs in place: enforcement never
// has a gap. Destroying a BpfFilter leaves everything attached; remove() takes it all down.

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
};

class BpfFilter final : public filter::PacketFilter {
 public:
  explicit BpfFilter(BpfFilterOptions options = {});
  ~BpfFilter() override;
  BpfFilter(const BpfFilter&) = delete;
  BpfFilter& operator=(const BpfFilter&) = delete;

  // Loads the programs (re-using valid pins), attaches them to settings.tunnel_ifname, and
  // makes the maps hold exactly `contents` and the sources (operator networks, gateway).
  Status build(const filter::FilterSettings& settings,
               const filter::FilterContents& contents) override;
  Result<filter::FilterContents> read() override;
  // Touches only the delta's keys. A removed allowed entry also loses its flows in pcl_flows.
  Status apply(const filter::FilterDelta& delta) override;

  Result<std::vector<PortCounters>> read_counters();

  // Detaches both programs, removes the clsact qdisc if this object created it, and deletes
  // the pins. The object can build() again afterwards.
  Status remove();

  // What build() had to do about existing pins ("replaced stale pin ..."), for the caller to log.
  const std::vector<std::string>& notices() const { return notices_; }

  // For BPF_PROG_TEST_RUN; -1 before build().
  int egress_prog_fd() const;
  int ingress_prog_fd() const;
  // Number of entries in pcl_flows (tests).
  Result<std::size_t> flow_count();

  struct Skeleton;  // owns the libbpf skeleton

 private:
  Status load(const std::string& ifname);
  Status attach(const std::string& ifname);
  Status pin_programs();
  Status set_sources(const filter::FilterSettings& settings);
  Status cut_flows(const std::vector<filter::AllowEntry>& removed);
  std::string pin_dir() const;

  BpfFilterOptions options_;
  std::unique_ptr<Skeleton> skel_;
  std::string ifname_;
  int ifindex_ = 0;
  bool created_clsact_ = false;
  std::vector<std::string> notices_;
};

}  // namespace portcullis::bpf
