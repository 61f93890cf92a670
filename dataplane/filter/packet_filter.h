#pragma once
// The packet filter boundary: what operators may reach on each agent, enforced by two layers
// that each hold the whole policy alone (nftables: NftablesFilter, eBPF: BpfFilter).
//
// Policy, for traffic on the tunnel interface:
//   toward an agent (from the gateway itself or a forwarded operator network): only to an
//     allowed (agent address, protocol, port); replies of allowed flows pass;
//   from an agent: only replies of allowed flows. Agent to agent, agent-initiated connections to
//     the gateway, its LAN or anything else are dropped and counted.
// A change is a FilterDelta that touches only the named entries; nothing is rebuilt for it.

#include <netinet/in.h>

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/base/ip.h"
#include "dataplane/base/result.h"

namespace portcullis::filter {

enum class Protocol : std::uint8_t { kTcp = IPPROTO_TCP, kUdp = IPPROTO_UDP };

const char* protocol_name(Protocol p);  // "tcp", "udp"

// One allowed flow: operators may open `protocol`/`port` on the agent at `agent`.
struct AllowEntry {
  IpAddress agent;  // the agent's tunnel address (IPv4 /32)
  Protocol protocol = Protocol::kTcp;
  std::uint16_t port = 0;
  std::string device;  // device id, shown as the element comment; not part of identity

  // Identity is the triple; the comment follows it.
  bool operator==(const AllowEntry& o) const {
    return agent == o.agent && protocol == o.protocol && port == o.port;
  }
  auto operator<=>(const AllowEntry& o) const {
    if (auto c = agent <=> o.agent; c != 0) return c;
    if (auto c = protocol <=> o.protocol; c != 0) return c;
    return port <=> o.port;
  }
};

// A known agent address (member of the agent set, even with no allowed port).
struct AgentEntry {
  IpAddress address;
  std::string device;

  bool operator==(const AgentEntry& o) const { return address == o.address; }
  auto operator<=>(const AgentEntry& o) const { return address <=> o.address; }
};

// The static part: applied by a cold build, changed rarely.
struct FilterSettings {
  std::string tunnel_ifname;                // e.g. "portcullis0"
  IpAddress gateway_address;                // the gateway's tunnel address, e.g. 10.255.0.1
  IpPrefix agent_pool;                      // e.g. 10.255.0.0/16
  std::vector<IpPrefix> operator_networks;  // sources that may be forwarded to agents
};

// The dynamic part: sorted, unique.
struct FilterContents {
  std::vector<AgentEntry> agents;
  std::vector<AllowEntry> allowed;
};

struct FilterDelta {
  std::vector<AgentEntry> add_agents;
  std::vector<AgentEntry> remove_agents;
  std::vector<AllowEntry> add_allowed;
  std::vector<AllowEntry> remove_allowed;

  bool empty() const {
    return add_agents.empty() && remove_agents.empty() && add_allowed.empty() &&
           remove_allowed.empty();
  }
};

// Pure: what turns `have` into `want`.
FilterDelta diff_contents(const FilterContents& want, const FilterContents& have);

class PacketFilter {
 public:
  virtual ~PacketFilter() = default;

  // Cold build: the whole filter (settings and contents) in one atomic step, replacing only what
  // this filter owns. On failure the previous filter stays fully in place.
  virtual Status build(const FilterSettings& settings, const FilterContents& contents) = 0;

  // What the kernel holds now. An error with ENOENT means the filter is not installed at all.
  virtual Result<FilterContents> read() = 0;

  // An incremental change, atomic. Removing an entry also cuts live flows it allowed.
  virtual Status apply(const FilterDelta& delta) = 0;
};

}  // namespace portcullis::filter
