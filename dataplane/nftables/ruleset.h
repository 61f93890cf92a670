#pragma once
// What Portcullis puts into nftables, built as libnftnl objects and batches without a socket.
//
// The table, as `nft list table inet portcullis` shows it (tunnel "portcullis0"):
//
// table inet portcullis {
//   comment "Portcullis: operators reach allowed agent ports through the tunnel; managed by ..."
//   set agents { type ipv4_addr; elements = { 10.255.0.2 comment "dev-a" } }
//   set agent-ports { type ipv4_addr . inet_proto . inet_service;
//                     elements = { 10.255.0.2 . tcp . 5985 comment "dev-a" } }
//   set operator-networks { type ipv4_addr; flags interval; elements = { 192.168.50.0/24 } }
//   chain filter-input   { type filter hook input priority filter - 10; ... }
//   chain filter-forward { type filter hook forward priority filter - 10; ... }
//   chain filter-output  { type filter hook output priority filter - 10; ... }
// }
//
// Hooks and priorities (why this coexists with Docker, firewalld and the admin's tables):
// - A packet must be accepted by EVERY base chain on a hook: an accept ends only the chain it is
//   in, a drop is final. So our drops hold whatever other tables say, and our accepts open
//   nothing in theirs (Docker's FORWARD policy drop still applies: allow the tunnel there).
// - Every rule matches the tunnel interface only (iifname/oifname); all other traffic passes our
//   chains untouched (policy accept).
// - Priority filter - 10 (-10): after conntrack (-200) and DNAT (-100), so `ct state` and the
//   final destination are known; before the filter chains of iptables-nft/Docker (0) and
//   firewalld (filter + 10), so our counters see every tunnel packet before anyone drops it.
// - The table is ours alone: a cold build replaces only `inet portcullis`, nothing is flushed.

// glibc's netinet/in.h must come before linux/netfilter.h (which pulls linux/in.h).
#include <netinet/in.h>

#include <linux/netfilter.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/base/result.h"
#include "dataplane/filter/packet_filter.h"
#include "dataplane/nftables/nft_batch.h"
#include "dataplane/nftables/nft_handles.h"

namespace portcullis::nftables {

inline constexpr std::uint16_t kFamily = NFPROTO_INET;
inline constexpr char kTable[] = "portcullis";
inline constexpr char kTableComment[] =
    "Portcullis: operators reach allowed agent ports through the tunnel; managed by portcullisd, "
    "changes here are reverted";
inline constexpr char kAgentsSet[] = "agents";
inline constexpr char kAgentPortsSet[] = "agent-ports";
inline constexpr char kOperatorNetworksSet[] = "operator-networks";
inline constexpr char kInputChain[] = "filter-input";
inline constexpr char kForwardChain[] = "filter-forward";
inline constexpr char kOutputChain[] = "filter-output";
inline constexpr std::int32_t kChainPriority = -10;  // NF_IP_PRI_FILTER - 10
// Element comments longer than this are cut (NFTNL_UDATA_COMMENT_MAXLEN minus the NUL).
inline constexpr std::size_t kMaxCommentBytes = 127;

// nft's datatype ids (nftables include/datatype.h); a concatenation packs them 6 bits apart,
// first field highest. They let `nft list` print addresses, "tcp" and port numbers.
inline constexpr std::uint32_t kTypeIpv4Addr = 7;
inline constexpr std::uint32_t kTypeInetProto = 12;
inline constexpr std::uint32_t kTypeInetService = 13;
inline constexpr std::uint32_t kTypeAgentPorts =
    (((kTypeIpv4Addr << 6) | kTypeInetProto) << 6) | kTypeInetService;
// Concatenated keys: each field padded to 4 bytes (address, protocol + 3, port + 2).
inline constexpr std::uint32_t kAgentPortsKeyLen = 12;

// One set element as sent: key bytes, NFT_SET_ELEM_* flags, comment, and its nft text.
struct NftElement {
  std::vector<std::uint8_t> key;
  std::uint32_t flags = 0;
  std::string comment;
  std::string text;  // "10.255.0.2 . tcp . 5985"
};

NftElement agent_element(const filter::AgentEntry& agent);
NftElement allow_element(const filter::AllowEntry& entry);
// Decoders for dumped keys; the device comes from the element comment.
Result<IpAddress> parse_agent_key(const void* data, std::uint32_t len);
Result<filter::AllowEntry> parse_allow_key(const void* data, std::uint32_t len);
// An interval set holds ranges as start element + end element (NFT_SET_ELEM_INTERVAL_END, the
// first address after the range). Overlapping or adjacent prefixes are merged; a range reaching
// 255.255.255.255 has no end element.
Result<std::vector<NftElement>> operator_network_elements(const std::vector<IpPrefix>& networks);

Status validate(const filter::FilterSettings& settings);
Status validate(const filter::FilterContents& contents);

// A rule of one of our base chains, with the nft text it stands for.
struct RuleSpec {
  std::string text;
  NftRulePtr rule;
};

struct ChainSpec {
  const char* name;
  std::uint32_t hook;  // NF_INET_*
  std::vector<RuleSpec> rules;
};

// The three base chains and their rules for this tunnel.
std::vector<ChainSpec> chain_specs(const filter::FilterSettings& settings);

// The whole table in one batch: add table (a no-op if present), delete it, create it again with
// sets, elements and chains. One transaction, so there is no moment without a filter, and a
// first build needs no special case.
Result<NftBatch> build_cold_batch(const filter::FilterSettings& settings,
                                  const filter::FilterContents& contents, std::uint32_t seq);
// Only the delta's elements: removals first, then additions, each list split to fit messages.
Result<NftBatch> build_delta_batch(const filter::FilterDelta& delta, std::uint32_t seq);
// Add table (no-op if present), delete table: removes it whether it exists or not.
NftBatch build_remove_batch(std::uint32_t seq);

// A rule as text that ignores counter values and kernel handles: used to compare built rules
// with dumped ones ("[meta load oifname => reg 1 ][cmp eq reg 1 ...]... comment 'x'").
std::string rule_fingerprint(nftnl_rule* rule);

}  // namespace portcullis::nftables
