#include "dataplane/nftables/ruleset.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <net/if.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace portcullis::nftables {

namespace {

using filter::AgentEntry;
using filter::AllowEntry;
using filter::FilterContents;
using filter::FilterDelta;
using filter::FilterSettings;
using filter::Protocol;

// Set ids tie rules and elements to sets created in the same batch.
constexpr std::uint32_t kAgentsSetId = 1;
constexpr std::uint32_t kAgentPortsSetId = 2;
constexpr std::uint32_t kOperatorNetworksSetId = 3;

// Elements of one set-element message stop here: NftBatch::kMaxMessageBytes less room for the
// headers, table and set names.
constexpr std::size_t kMaxElementBytesPerMessage = 60 * 1024;

std::string truncate_comment(const std::string& s) {
  return s.size() <= kMaxCommentBytes ? s : s.substr(0, kMaxCommentBytes);
}

// Copies a NUL-terminated comment of udata type `type` into `obj` via `set`.
template <class Setter>
void set_comment(std::uint8_t type, const std::string& comment, Setter set) {
  if (comment.empty()) return;
  NftUdataPtr buf(nftnl_udata_buf_alloc(NFTNL_UDATA_COMMENT_MAXLEN + 8));
  nftnl_udata_put_strz(buf.get(), type, truncate_comment(comment).c_str());
  set(nftnl_udata_buf_data(buf.get()), nftnl_udata_buf_len(buf.get()));
}

std::string comment_of(const void* udata, std::uint32_t len, std::uint8_t type) {
  struct Found {
    std::uint8_t type;
    std::string text;
  } found{type, {}};
  nftnl_udata_parse(
      udata, len,
      [](const nftnl_udata* attr, void* data) -> int {
        auto* f = static_cast<Found*>(data);
        if (nftnl_udata_type(attr) == f->type && nftnl_udata_len(attr) > 0) {
          const char* s = static_cast<const char*>(nftnl_udata_get(attr));
          f->text.assign(s, strnlen(s, nftnl_udata_len(attr)));
        }
        return 0;
      },
      &found);
  return found.text;
}

// ---- expressions: one builder each ------------------------------------------------------------

void add_expr(nftnl_rule* r, NftExprPtr e) { nftnl_rule_add_expr(r, e.release()); }

// meta load <key> => reg <dreg>
void meta_load(nftnl_rule* r, std::uint32_t key, std::uint32_t dreg) {
  NftExprPtr e(nftnl_expr_alloc("meta"));
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_KEY, key);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_DREG, dreg);
  add_expr(r, std::move(e));
}

// cmp <op> reg <sreg> <data>
void cmp(nftnl_rule* r, std::uint32_t op, std::uint32_t sreg, const void* data, std::uint32_t len) {
  NftExprPtr e(nftnl_expr_alloc("cmp"));
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_SREG, sreg);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_OP, op);
  nftnl_expr_set(e.get(), NFTNL_EXPR_CMP_DATA, data, len);
  add_expr(r, std::move(e));
}

// payload load <len>b @ <base> header + <offset> => reg <dreg>
void payload_load(nftnl_rule* r, std::uint32_t base, std::uint32_t offset, std::uint32_t len,
                  std::uint32_t dreg) {
  NftExprPtr e(nftnl_expr_alloc("payload"));
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_DREG, dreg);
  add_expr(r, std::move(e));
}

// lookup reg <sreg> set <name> [inverted]
void lookup(nftnl_rule* r, std::uint32_t sreg, const char* set, std::uint32_t set_id, bool invert) {
  NftExprPtr e(nftnl_expr_alloc("lookup"));
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SREG, sreg);
  nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOOKUP_SET, set);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SET_ID, set_id);
  // The kernel always reports the flags; set them always so built and dumped rules compare.
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_FLAGS, invert ? NFT_LOOKUP_F_INV : 0);
  add_expr(r, std::move(e));
}

// ct load <key> => reg <dreg>
void ct_load(nftnl_rule* r, std::uint32_t key, std::uint32_t dreg) {
  NftExprPtr e(nftnl_expr_alloc("ct"));
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_KEY, key);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_DREG, dreg);
  add_expr(r, std::move(e));
}

// bitwise reg <reg> = (reg <reg> & <mask>) ^ 0   (4 bytes, host order)
void bitwise_and(nftnl_rule* r, std::uint32_t reg, std::uint32_t mask) {
  const std::uint32_t zero = 0;
  NftExprPtr e(nftnl_expr_alloc("bitwise"));
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_SREG, reg);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_DREG, reg);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_LEN, sizeof(mask));
  nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_MASK, &mask, sizeof(mask));
  nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_XOR, &zero, sizeof(zero));
  add_expr(r, std::move(e));
}

// counter
void counter(nftnl_rule* r) { add_expr(r, NftExprPtr(nftnl_expr_alloc("counter"))); }

// accept | drop
void verdict(nftnl_rule* r, std::uint32_t v) {
  NftExprPtr e(nftnl_expr_alloc("immediate"));
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, v);
  add_expr(r, std::move(e));
}

// ---- matches: the nft words, each a few expressions --------------------------------------------

// iifname "<ifname>" / oifname "<ifname>"
void match_ifname(nftnl_rule* r, std::uint32_t meta_key, const std::string& ifname) {
  char name[IFNAMSIZ] = {};
  std::memcpy(name, ifname.data(), std::min(ifname.size(), sizeof(name) - 1));
  meta_load(r, meta_key, NFT_REG_1);
  cmp(r, NFT_CMP_EQ, NFT_REG_1, name, sizeof(name));
}

// meta nfproto ipv4 (the dependency nft adds before any `ip` match in an inet table)
void match_ipv4(nftnl_rule* r) {
  const std::uint8_t proto = NFPROTO_IPV4;
  meta_load(r, NFT_META_NFPROTO, NFT_REG_1);
  cmp(r, NFT_CMP_EQ, NFT_REG_1, &proto, sizeof(proto));
}

// ct state <bits>  (any of them)
void match_ct_state(nftnl_rule* r, std::uint32_t bits) {
  const std::uint32_t zero = 0;
  ct_load(r, NFT_CT_STATE, NFT_REG_1);
  bitwise_and(r, NFT_REG_1, bits);
  cmp(r, NFT_CMP_NEQ, NFT_REG_1, &zero, sizeof(zero));
}

constexpr std::uint32_t kIpv4SaddrOffset = 12;
constexpr std::uint32_t kIpv4DaddrOffset = 16;
constexpr std::uint32_t kThSportOffset = 0;
constexpr std::uint32_t kThDportOffset = 2;

// ip saddr|daddr [!=] @<set>
void match_addr_in(nftnl_rule* r, std::uint32_t offset, const char* set, std::uint32_t set_id,
                   bool invert) {
  match_ipv4(r);
  payload_load(r, NFT_PAYLOAD_NETWORK_HEADER, offset, 4, NFT_REG_1);
  lookup(r, NFT_REG_1, set, set_id, invert);
}

// ip daddr . meta l4proto . th dport @agent-ports   (toward the agent)
// ip saddr . meta l4proto . th sport @agent-ports   (from the agent: replies leave its port)
// The concatenation fills 32-bit registers 1 (= reg32 00), 9 and 10, as nft does.
void match_agent_port(nftnl_rule* r, bool from_agent) {
  match_ipv4(r);
  payload_load(r, NFT_PAYLOAD_NETWORK_HEADER, from_agent ? kIpv4SaddrOffset : kIpv4DaddrOffset, 4,
               NFT_REG_1);
  meta_load(r, NFT_META_L4PROTO, NFT_REG32_01);
  payload_load(r, NFT_PAYLOAD_TRANSPORT_HEADER, from_agent ? kThSportOffset : kThDportOffset, 2,
               NFT_REG32_02);
  lookup(r, NFT_REG_1, kAgentPortsSet, kAgentPortsSetId, false);
}

// meta l4proto icmp
void match_icmp(nftnl_rule* r) {
  const std::uint8_t proto = IPPROTO_ICMP;
  meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
  cmp(r, NFT_CMP_EQ, NFT_REG_1, &proto, sizeof(proto));
}

void rule_comment(nftnl_rule* r, const std::string& comment) {
  set_comment(NFTNL_UDATA_RULE_COMMENT, comment, [r](const void* data, std::uint32_t len) {
    nftnl_rule_set_data(r, NFTNL_RULE_USERDATA, data, len);
  });
}

constexpr std::uint32_t kEstablishedRelated =
    NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED);
constexpr std::uint32_t kNew = NF_CT_STATE_BIT(IP_CT_NEW);
constexpr std::uint32_t kRelated = NF_CT_STATE_BIT(IP_CT_RELATED);

NftRulePtr new_rule(const char* chain) {
  NftRulePtr r(nftnl_rule_alloc());
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTable);
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain);
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, kFamily);
  return r;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

// ---- set elements
// --------------------------------------------------------------------------------

std::size_t element_bytes(const NftElement& e) {
  // element nest, key nest + value, flags, userdata: generous per-attribute overhead.
  return 48 + NLMSG_ALIGN(e.key.size()) + NLMSG_ALIGN(e.comment.size() + 3);
}

NftSetPtr set_ref(const char* name, std::uint32_t set_id) {
  NftSetPtr s(nftnl_set_alloc());
  nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, kTable);
  nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, kFamily);
  if (set_id != 0) nftnl_set_set_u32(s.get(), NFTNL_SET_ID, set_id);
  return s;
}

// Byte offsets (from the nlmsghdr) of each element nest in a set-element message.
std::vector<std::uint32_t> element_offsets(const nlmsghdr* nlh) {
  std::vector<std::uint32_t> out;
  for_each_attr(nlh, sizeof(nfgenmsg), [&](const nlattr* attr) {
    if (mnl_attr_get_type(attr) != NFTA_SET_ELEM_LIST_ELEMENTS) return;
    for_each_nested(attr, [&](const nlattr* elem) {
      out.push_back(static_cast<std::uint32_t>(reinterpret_cast<const std::uint8_t*>(elem) -
                                               reinterpret_cast<const std::uint8_t*>(nlh)));
    });
  });
  return out;
}

// NEWSETELEM / DELSETELEM for `elements`, as many messages as needed, all in `batch`.
void add_element_messages(NftBatch& batch, std::uint16_t msg_type, std::uint16_t flags,
                          const char* set, std::uint32_t set_id,
                          const std::vector<NftElement>& elements) {
  const char* verb = msg_type == NFT_MSG_NEWSETELEM ? "add" : "delete";
  const char* prep = msg_type == NFT_MSG_NEWSETELEM ? "to" : "from";
  std::size_t i = 0;
  while (i < elements.size()) {
    std::size_t end = i;
    std::size_t bytes = 0;
    while (end < elements.size() &&
           bytes + element_bytes(elements[end]) <= kMaxElementBytesPerMessage) {
      bytes += element_bytes(elements[end]);
      ++end;
    }
    NftSetPtr s = set_ref(set, set_id);
    std::vector<std::string> names;
    for (std::size_t k = i; k < end; ++k) {
      const NftElement& el = elements[k];
      NftSetElemPtr e(nftnl_set_elem_alloc());
      nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_KEY, el.key.data(), el.key.size());
      if (el.flags != 0) nftnl_set_elem_set_u32(e.get(), NFTNL_SET_ELEM_FLAGS, el.flags);
      set_comment(NFTNL_UDATA_SET_ELEM_COMMENT, el.comment,
                  [&e](const void* data, std::uint32_t len) {
                    nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_USERDATA, data, len);
                  });
      nftnl_set_elem_add(s.get(), e.release());
      std::string name = std::string(verb) + " element " + el.text;
      if (!el.comment.empty()) name += " (device " + quoted(el.comment) + ")";
      names.push_back(std::move(name));
    }
    std::vector<std::uint32_t> offsets;
    batch.add(msg_type, kFamily, flags,
              std::string(verb) + " " + std::to_string(end - i) + " element(s) " + prep + " set '" +
                  set + "'",
              [&](nlmsghdr* nlh) {
                nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
                offsets = element_offsets(nlh);
              });
    std::vector<std::pair<std::uint32_t, std::string>> parts;
    for (std::size_t k = 0; k < offsets.size() && k < names.size(); ++k) {
      parts.emplace_back(offsets[k], std::move(names[k]));
    }
    batch.name_parts(std::move(parts));
    i = end;
  }
}

template <class T>
std::vector<T> sorted_unique(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::vector<NftElement> agent_elements(const std::vector<AgentEntry>& agents) {
  std::vector<NftElement> out;
  out.reserve(agents.size());
  for (const auto& a : agents) out.push_back(agent_element(a));
  return out;
}

std::vector<NftElement> allow_elements(const std::vector<AllowEntry>& allowed) {
  std::vector<NftElement> out;
  out.reserve(allowed.size());
  for (const auto& a : allowed) out.push_back(allow_element(a));
  return out;
}

void add_table_message(NftBatch& batch, std::uint16_t msg_type, std::uint16_t flags,
                       bool with_comment) {
  NftTablePtr t(nftnl_table_alloc());
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, kTable);
  nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, kFamily);
  if (with_comment) {
    set_comment(NFTNL_UDATA_TABLE_COMMENT, kTableComment, [&t](const void* d, std::uint32_t len) {
      nftnl_table_set_data(t.get(), NFTNL_TABLE_USERDATA, d, len);
    });
  }
  const char* verb = msg_type == NFT_MSG_NEWTABLE ? "add" : "delete";
  batch.add(msg_type, kFamily, flags, std::string(verb) + " table inet " + kTable,
            [&](nlmsghdr* nlh) { nftnl_table_nlmsg_build_payload(nlh, t.get()); });
}

void add_set_message(NftBatch& batch, const char* name, std::uint32_t set_id,
                     std::uint32_t key_type, std::uint32_t key_len, std::uint32_t flags,
                     const char* comment) {
  NftSetPtr s = set_ref(name, set_id);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, key_type);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, key_len);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, flags);
  set_comment(NFTNL_UDATA_SET_COMMENT, comment, [&s](const void* d, std::uint32_t len) {
    nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, d, len);
  });
  batch.add(NFT_MSG_NEWSET, kFamily, NLM_F_CREATE | NLM_F_EXCL,
            std::string("add set '") + name + "'",
            [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, s.get()); });
}

const char* hook_name(std::uint32_t hook) {
  switch (hook) {
    case NF_INET_LOCAL_IN:
      return "input";
    case NF_INET_FORWARD:
      return "forward";
    default:
      return "output";
  }
}

}  // namespace

// ---- elements
// -------------------------------------------------------------------------------------

NftElement agent_element(const AgentEntry& agent) {
  NftElement e;
  e.key.assign(agent.address.data(), agent.address.data() + 4);
  e.comment = truncate_comment(agent.device);
  e.text = agent.address.to_string();
  return e;
}

NftElement allow_element(const AllowEntry& entry) {
  NftElement e;
  e.key.assign(kAgentPortsKeyLen, 0);
  std::memcpy(e.key.data(), entry.agent.data(), 4);
  e.key[4] = static_cast<std::uint8_t>(entry.protocol);
  const std::uint16_t port_be = htons(entry.port);
  std::memcpy(e.key.data() + 8, &port_be, sizeof(port_be));
  e.comment = truncate_comment(entry.device);
  e.text = entry.agent.to_string() + " . " + filter::protocol_name(entry.protocol) + " . " +
           std::to_string(entry.port);
  return e;
}

Result<IpAddress> parse_agent_key(const void* data, std::uint32_t len) {
  if (len != 4)
    return fail_errno(EPROTO, "set '" + std::string(kAgentsSet) + "': key of " +
                                  std::to_string(len) + " bytes, want 4");
  in_addr a;
  std::memcpy(&a, data, 4);
  return IpAddress::v4(a);
}

Result<AllowEntry> parse_allow_key(const void* data, std::uint32_t len) {
  if (len != kAgentPortsKeyLen) {
    return fail_errno(EPROTO, "set '" + std::string(kAgentPortsSet) + "': key of " +
                                  std::to_string(len) + " bytes, want 12");
  }
  const auto* p = static_cast<const std::uint8_t*>(data);
  in_addr a;
  std::memcpy(&a, p, 4);
  if (p[4] != IPPROTO_TCP && p[4] != IPPROTO_UDP) {
    return fail_errno(EPROTO, "set '" + std::string(kAgentPortsSet) + "': protocol " +
                                  std::to_string(p[4]) + " is neither tcp nor udp");
  }
  std::uint16_t port_be;
  std::memcpy(&port_be, p + 8, sizeof(port_be));
  AllowEntry e;
  e.agent = IpAddress::v4(a);
  e.protocol = static_cast<Protocol>(p[4]);
  e.port = ntohs(port_be);
  return e;
}

Result<std::vector<NftElement>> operator_network_elements(const std::vector<IpPrefix>& networks) {
  // [start, end) in host order, 64 bits so 2^32 can stand for "to the last address".
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& n : networks) {
    if (!n.address().is_v4()) {
      return fail_invalid("operator network " + n.to_string() +
                          " is not IPv4: the tunnel carries IPv4 only; remove it");
    }
    const IpPrefix m = n.masked();
    const std::uint64_t start = m.address().v4_host_order();
    ranges.emplace_back(start, start + (std::uint64_t{1} << (32 - m.cidr())));
  }
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<std::uint64_t, std::uint64_t>> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  auto key = [](std::uint64_t host) {
    const std::uint32_t be = htonl(static_cast<std::uint32_t>(host));
    std::vector<std::uint8_t> k(4);
    std::memcpy(k.data(), &be, 4);
    return k;
  };
  std::vector<NftElement> out;
  for (const auto& [start, end] : merged) {
    NftElement s;
    s.key = key(start);
    s.text = IpAddress::v4_host_order(static_cast<std::uint32_t>(start)).to_string() + "-" +
             IpAddress::v4_host_order(static_cast<std::uint32_t>(end - 1)).to_string();
    out.push_back(s);
    if (end <= 0xffffffffULL) {
      NftElement e;
      e.key = key(end);
      e.flags = NFT_SET_ELEM_INTERVAL_END;
      e.text = s.text + " (end)";
      out.push_back(std::move(e));
    }
  }
  return out;
}

// ---- validation
// -----------------------------------------------------------------------------------

Status validate(const FilterSettings& settings) {
  const auto& ifname = settings.tunnel_ifname;
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) {
    return fail_invalid("tunnel interface name '" + ifname + "' must have 1 to " +
                        std::to_string(IFNAMSIZ - 1) + " characters");
  }
  for (const auto& n : settings.operator_networks) {
    if (!n.address().is_v4()) {
      return fail_invalid("operator network " + n.to_string() +
                          " is not IPv4: the tunnel carries IPv4 only; remove it");
    }
  }
  return {};
}

Status validate(const FilterContents& contents) {
  for (const auto& a : contents.agents) {
    if (!a.address.is_v4()) {
      return fail_invalid("agent address " + a.address.to_string() + " of device '" + a.device +
                          "' is not IPv4");
    }
  }
  for (const auto& a : contents.allowed) {
    if (!a.agent.is_v4()) {
      return fail_invalid("allowed entry for " + a.agent.to_string() + " of device '" + a.device +
                          "' is not IPv4");
    }
    if (a.port == 0) {
      return fail_invalid("allowed entry " + a.agent.to_string() + " port 0 of device '" +
                          a.device + "': ports run from 1 to 65535");
    }
  }
  return {};
}

// ---- chains
// ---------------------------------------------------------------------------------------

std::vector<ChainSpec> chain_specs(const FilterSettings& settings) {
  const std::string& tun = settings.tunnel_ifname;
  const std::string iif = "iifname " + quoted(tun) + " ";
  const std::string oif = "oifname " + quoted(tun) + " ";

  // <dir>name "<tun>" ip saddr|daddr != @agents counter drop comment "<why>"
  auto not_an_agent = [&](const char* chain, bool inbound) {
    NftRulePtr r = new_rule(chain);
    match_ifname(r.get(), inbound ? NFT_META_IIFNAME : NFT_META_OIFNAME, tun);
    match_addr_in(r.get(), inbound ? kIpv4SaddrOffset : kIpv4DaddrOffset, kAgentsSet, kAgentsSetId,
                  true);
    counter(r.get());
    verdict(r.get(), NF_DROP);
    const char* why =
        inbound ? "from an address that is not an agent" : "to an address that is not an agent";
    rule_comment(r.get(), why);
    return RuleSpec{(inbound ? iif + "ip saddr" : oif + "ip daddr") +
                        " != @agents counter drop comment " + quoted(why),
                    std::move(r)};
  };
  // iifname "<tun>" ct state established,related
  //   ip saddr . meta l4proto . th sport @agent-ports accept
  // oifname "<tun>" ct state established,related
  //   ip daddr . meta l4proto . th dport @agent-ports accept
  // A flow passes only while its port is still in agent-ports: removing the element stops it in
  // the same commit, before its conntrack entry is deleted (which can take tens of ms).
  auto established = [&](const char* chain, bool inbound) {
    NftRulePtr r = new_rule(chain);
    match_ifname(r.get(), inbound ? NFT_META_IIFNAME : NFT_META_OIFNAME, tun);
    match_ct_state(r.get(), kEstablishedRelated);
    match_agent_port(r.get(), inbound);
    verdict(r.get(), NF_ACCEPT);
    return RuleSpec{(inbound ? iif : oif) + "ct state established,related " +
                        (inbound ? "ip saddr . meta l4proto . th sport"
                                 : "ip daddr . meta l4proto . th dport") +
                        " @agent-ports accept",
                    std::move(r)};
  };
  // <dir>name "<tun>" ct state related meta l4proto icmp accept
  // ICMP errors (unreachable, fragmentation needed) of tracked flows: they carry no ports of
  // their own and no data, and a flow of a removed port is already stopped by the rule above.
  auto related_icmp = [&](const char* chain, bool inbound) {
    NftRulePtr r = new_rule(chain);
    match_ifname(r.get(), inbound ? NFT_META_IIFNAME : NFT_META_OIFNAME, tun);
    match_ct_state(r.get(), kRelated);
    match_icmp(r.get());
    verdict(r.get(), NF_ACCEPT);
    return RuleSpec{(inbound ? iif : oif) + "ct state related meta l4proto icmp accept",
                    std::move(r)};
  };
  // <dir>name "<tun>" counter drop comment "<why>"
  auto drop_rest = [&](const char* chain, bool inbound, const char* why) {
    NftRulePtr r = new_rule(chain);
    match_ifname(r.get(), inbound ? NFT_META_IIFNAME : NFT_META_OIFNAME, tun);
    counter(r.get());
    verdict(r.get(), NF_DROP);
    rule_comment(r.get(), why);
    return RuleSpec{(inbound ? iif : oif) + "counter drop comment " + quoted(why), std::move(r)};
  };
  // oifname "<tun>" ct state new [ip saddr @operator-networks]
  //   ip daddr . meta l4proto . th dport @agent-ports accept
  auto allowed_port = [&](const char* chain, bool from_operators) {
    NftRulePtr r = new_rule(chain);
    match_ifname(r.get(), NFT_META_OIFNAME, tun);
    match_ct_state(r.get(), kNew);
    if (from_operators) {
      match_addr_in(r.get(), kIpv4SaddrOffset, kOperatorNetworksSet, kOperatorNetworksSetId, false);
    }
    match_agent_port(r.get(), false);
    verdict(r.get(), NF_ACCEPT);
    return RuleSpec{oif + "ct state new " + (from_operators ? "ip saddr @operator-networks " : "") +
                        "ip daddr . meta l4proto . th dport @agent-ports accept",
                    std::move(r)};
  };

  std::vector<ChainSpec> chains;
  {
    ChainSpec c{kInputChain, NF_INET_LOCAL_IN, {}};
    c.rules.push_back(not_an_agent(kInputChain, true));
    c.rules.push_back(established(kInputChain, true));
    c.rules.push_back(related_icmp(kInputChain, true));
    c.rules.push_back(drop_rest(kInputChain, true, "agent to gateway"));
    chains.push_back(std::move(c));
  }
  {
    ChainSpec c{kForwardChain, NF_INET_FORWARD, {}};
    // iifname "<tun>" oifname "<tun>" counter drop comment "agent to agent"
    NftRulePtr r = new_rule(kForwardChain);
    match_ifname(r.get(), NFT_META_IIFNAME, tun);
    match_ifname(r.get(), NFT_META_OIFNAME, tun);
    counter(r.get());
    verdict(r.get(), NF_DROP);
    rule_comment(r.get(), "agent to agent");
    c.rules.push_back(
        RuleSpec{iif + oif + "counter drop comment \"agent to agent\"", std::move(r)});
    c.rules.push_back(not_an_agent(kForwardChain, true));
    c.rules.push_back(established(kForwardChain, true));
    c.rules.push_back(related_icmp(kForwardChain, true));
    c.rules.push_back(drop_rest(kForwardChain, true, "agent-initiated"));
    c.rules.push_back(not_an_agent(kForwardChain, false));
    c.rules.push_back(established(kForwardChain, false));
    c.rules.push_back(related_icmp(kForwardChain, false));
    c.rules.push_back(allowed_port(kForwardChain, true));
    c.rules.push_back(drop_rest(kForwardChain, false, "port not allowed"));
    chains.push_back(std::move(c));
  }
  {
    ChainSpec c{kOutputChain, NF_INET_LOCAL_OUT, {}};
    c.rules.push_back(not_an_agent(kOutputChain, false));
    c.rules.push_back(established(kOutputChain, false));
    c.rules.push_back(related_icmp(kOutputChain, false));
    c.rules.push_back(allowed_port(kOutputChain, false));
    c.rules.push_back(drop_rest(kOutputChain, false, "port not allowed"));
    chains.push_back(std::move(c));
  }
  return chains;
}

// ---- batches
// --------------------------------------------------------------------------------------

Result<NftBatch> build_cold_batch(const FilterSettings& settings, const FilterContents& contents,
                                  std::uint32_t seq) {
  if (auto ok = validate(settings); !ok) return fail(ok.error());
  if (auto ok = validate(contents); !ok) return fail(ok.error());
  auto networks = operator_network_elements(settings.operator_networks);
  if (!networks) return fail(networks.error());

  NftBatch batch(seq);
  // add table inet portcullis; delete table inet portcullis; table inet portcullis { ... }
  add_table_message(batch, NFT_MSG_NEWTABLE, NLM_F_CREATE, false);
  add_table_message(batch, NFT_MSG_DELTABLE, 0, false);
  add_table_message(batch, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, true);

  // set agents { type ipv4_addr; }
  add_set_message(batch, kAgentsSet, kAgentsSetId, kTypeIpv4Addr, 4, 0,
                  "tunnel addresses of enrolled agents");
  // set agent-ports { type ipv4_addr . inet_proto . inet_service; }
  add_set_message(batch, kAgentPortsSet, kAgentPortsSetId, kTypeAgentPorts, kAgentPortsKeyLen, 0,
                  "what operators may open on each agent");
  // set operator-networks { type ipv4_addr; flags interval; }
  add_set_message(batch, kOperatorNetworksSet, kOperatorNetworksSetId, kTypeIpv4Addr, 4,
                  NFT_SET_INTERVAL, "sources forwarded to agents");

  add_element_messages(batch, NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, kAgentsSet,
                       kAgentsSetId, agent_elements(sorted_unique(contents.agents)));
  add_element_messages(batch, NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, kAgentPortsSet,
                       kAgentPortsSetId, allow_elements(sorted_unique(contents.allowed)));
  add_element_messages(batch, NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, kOperatorNetworksSet,
                       kOperatorNetworksSetId, *networks);

  for (auto& chain : chain_specs(settings)) {
    // chain <name> { type filter hook <hook> priority filter - 10; policy accept; }
    NftChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.name);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, kFamily);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, chain.hook);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, kChainPriority);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
    batch.add(NFT_MSG_NEWCHAIN, kFamily, NLM_F_CREATE | NLM_F_EXCL,
              std::string("add chain '") + chain.name + "' (hook " + hook_name(chain.hook) + ")",
              [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, c.get()); });
    for (auto& rule : chain.rules) {
      batch.add(NFT_MSG_NEWRULE, kFamily, NLM_F_CREATE | NLM_F_APPEND,
                std::string("add rule to chain '") + chain.name + "': " + rule.text,
                [&](nlmsghdr* nlh) { nftnl_rule_nlmsg_build_payload(nlh, rule.rule.get()); });
    }
  }
  batch.finish();
  return batch;
}

Result<NftBatch> build_delta_batch(const FilterDelta& delta, std::uint32_t seq) {
  FilterContents added{delta.add_agents, delta.add_allowed};
  if (auto ok = validate(added); !ok) return fail(ok.error());
  FilterContents removed{delta.remove_agents, delta.remove_allowed};
  if (auto ok = validate(removed); !ok) return fail(ok.error());

  NftBatch batch(seq);
  // delete element inet portcullis agent-ports { ... }; delete element ... agents { ... }
  add_element_messages(batch, NFT_MSG_DELSETELEM, 0, kAgentPortsSet, 0,
                       allow_elements(sorted_unique(delta.remove_allowed)));
  add_element_messages(batch, NFT_MSG_DELSETELEM, 0, kAgentsSet, 0,
                       agent_elements(sorted_unique(delta.remove_agents)));
  // add element inet portcullis agents { ... }; add element ... agent-ports { ... }
  // (no NLM_F_EXCL: adding an element that is already there is a no-op)
  add_element_messages(batch, NFT_MSG_NEWSETELEM, NLM_F_CREATE, kAgentsSet, 0,
                       agent_elements(sorted_unique(delta.add_agents)));
  add_element_messages(batch, NFT_MSG_NEWSETELEM, NLM_F_CREATE, kAgentPortsSet, 0,
                       allow_elements(sorted_unique(delta.add_allowed)));
  batch.finish();
  return batch;
}

NftBatch build_remove_batch(std::uint32_t seq) {
  NftBatch batch(seq);
  add_table_message(batch, NFT_MSG_NEWTABLE, NLM_F_CREATE, false);
  add_table_message(batch, NFT_MSG_DELTABLE, 0, false);
  batch.finish();
  return batch;
}

std::string rule_fingerprint(nftnl_rule* rule) {
  std::string out;
  nftnl_expr_foreach(
      rule,
      [](nftnl_expr* e, void* data) -> int {
        auto* s = static_cast<std::string*>(data);
        const char* name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
        *s += "[";
        *s += name;
        if (std::strcmp(name, "counter") != 0) {
          char buf[512];
          nftnl_expr_snprintf(buf, sizeof(buf), e, NFTNL_OUTPUT_DEFAULT, 0);
          *s += " ";
          *s += buf;
        }
        *s += "]";
        return 0;
      },
      &out);
  if (nftnl_rule_is_set(rule, NFTNL_RULE_USERDATA)) {
    std::uint32_t len = 0;
    const void* udata = nftnl_rule_get_data(rule, NFTNL_RULE_USERDATA, &len);
    out += " comment '" + comment_of(udata, len, NFTNL_UDATA_RULE_COMMENT) + "'";
  }
  return out;
}

}  // namespace portcullis::nftables
