#pragma once
// The gateway's kernel state as the tools show it (wg, nft, bpftool), in plain text that tests
// compare with what they expect. Independent of the daemon's own code on purpose.
//
//   wg_peers(gw, "pcld123")["<base64 key>"].handshake    `wg show pcld123 dump`
//   nft_set(gw, "agent-ports")      {"10.255.0.2 . tcp . 5985", ...}   (table inet portcullis)
//   bpf_map_keys("/sys/fs/bpf/portcullis/pcld123/pcl_agents", &ok)    {"10.255.0.2", ...}

#include <map>
#include <set>
#include <string>

#include "tests/support/netns.h"

namespace portcullis::testing {

struct WgPeerRow {
  std::string allowed_ips;  // as `wg show dump` prints them
  std::string handshake;    // Unix seconds, "0" = never
  std::string rx, tx;       // bytes
};

// `wg show <if> dump` in `ns`: peers by public key. Empty map and *ok false when the command
// failed.
std::map<std::string, WgPeerRow> wg_peers(const TestNetns& ns, const std::string& ifname,
                                          bool* ok = nullptr);

// The elements of a set of `table inet portcullis` in `ns` as text: "10.255.0.2 . tcp . 5985" or
// "10.255.0.2". Empty and *ok false when nft failed (no table, no set).
std::set<std::string> nft_set(const TestNetns& ns, const std::string& set, bool* ok = nullptr);

// The keys of a pinned BPF map, via `bpftool -j map dump pinned`: pcl_agents keys (an IPv4
// address, network order) as "10.255.0.2", pcl_agent_ports keys (struct pcl_port_key: address,
// port in host order, proto, pad) as "10.255.0.2 . tcp . 5985", like the nft sets. Empty and
// *ok false when bpftool failed.
std::set<std::string> bpf_map_keys(const std::string& pinned, bool* ok);

}  // namespace portcullis::testing
