#include "dataplane/nftables/ruleset.h"

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <cstring>
#include <string>
#include <vector>

namespace portcullis::nftables {
namespace {

using filter::AgentEntry;
using filter::AllowEntry;
using filter::FilterContents;
using filter::FilterDelta;
using filter::FilterSettings;
using filter::Protocol;

IpAddress ip(const char* s) { return *IpAddress::parse(s); }
IpPrefix prefix(const char* s) { return *IpPrefix::parse(s); }

FilterSettings settings() {
  FilterSettings s;
  s.tunnel_ifname = "portcullis0";
  s.gateway_address = ip("10.255.0.1");
  s.agent_pool = prefix("10.255.0.0/16");
  s.operator_networks = {prefix("192.168.50.0/24")};
  return s;
}

FilterContents contents() {
  FilterContents c;
  c.agents = {{ip("10.255.0.2"), "dev-a"}, {ip("10.255.0.3"), "dev-b"}};
  c.allowed = {{ip("10.255.0.2"), Protocol::kTcp, 5985, "dev-a"},
               {ip("10.255.0.2"), Protocol::kUdp, 3478, "dev-a"},
               {ip("10.255.0.3"), Protocol::kTcp, 5900, "dev-b"}};
  return c;
}

std::uint16_t nft_type(const nlmsghdr* nlh) { return nlh->nlmsg_type & 0xff; }

// The elements of one set-element message, read attribute by attribute. (libnftnl's own parser
// wants every element nest typed NFTA_LIST_ELEM, as the kernel dumps them; its builder numbers
// them 1, 2, 3..., which the kernel accepts.)
std::vector<std::pair<std::vector<std::uint8_t>, std::string>> parse_elements(const nlmsghdr* nlh) {
  std::vector<std::pair<std::vector<std::uint8_t>, std::string>> out;
  for_each_attr(nlh, sizeof(nfgenmsg), [&](const nlattr* list) {
    if (mnl_attr_get_type(list) != NFTA_SET_ELEM_LIST_ELEMENTS) return;
    for_each_nested(list, [&](const nlattr* elem) {
      std::vector<std::uint8_t> key;
      std::string comment;
      for_each_nested(elem, [&](const nlattr* a) {
        if (mnl_attr_get_type(a) == NFTA_SET_ELEM_KEY) {
          for_each_nested(a, [&](const nlattr* v) {
            const auto* p = static_cast<const std::uint8_t*>(mnl_attr_get_payload(v));
            key.assign(p, p + mnl_attr_get_payload_len(v));
          });
        } else if (mnl_attr_get_type(a) == NFTA_SET_ELEM_USERDATA) {
          // udata TLV: type, length, NUL-terminated value
          const auto* u = static_cast<const char*>(mnl_attr_get_payload(a));
          comment.assign(u + 2, strnlen(u + 2, mnl_attr_get_payload_len(a) - 2));
        }
      });
      out.emplace_back(std::move(key), std::move(comment));
    });
  });
  return out;
}

TEST(Ruleset, ConcatenatedTypeIsNftsIpv4AddrInetProtoInetService) {
  // nft: concat_type_alloc packs 6 bits per field, first field highest.
  EXPECT_EQ(kTypeAgentPorts, 29453u);
}

TEST(Ruleset, AllowKeyIsPaddedConcatenationInNetworkOrder) {
  const AllowEntry e{ip("10.255.0.2"), Protocol::kTcp, 5985, "dev-a"};
  const NftElement el = allow_element(e);
  const std::vector<std::uint8_t> want = {10, 255, 0, 2, 6, 0, 0, 0, 0x17, 0x61, 0, 0};
  EXPECT_EQ(el.key, want);
  EXPECT_EQ(el.comment, "dev-a");
  EXPECT_EQ(el.text, "10.255.0.2 . tcp . 5985");

  auto back = parse_allow_key(el.key.data(), static_cast<std::uint32_t>(el.key.size()));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, e);
  EXPECT_FALSE(parse_allow_key(el.key.data(), 8));
  auto bad = el.key;
  bad[4] = 1;  // icmp
  EXPECT_FALSE(parse_allow_key(bad.data(), 12));
}

TEST(Ruleset, LongCommentsAreCut) {
  const AgentEntry a{ip("10.255.0.9"), std::string(300, 'x')};
  EXPECT_EQ(agent_element(a).comment.size(), kMaxCommentBytes);
}

TEST(Ruleset, OperatorNetworksBecomeMergedRanges) {
  auto els = operator_network_elements({prefix("10.0.1.0/24"), prefix("10.0.0.0/24"),
                                        prefix("10.0.0.128/25"), prefix("172.16.0.5/32")});
  ASSERT_TRUE(els) << els.error().message();
  ASSERT_EQ(els->size(), 4u);
  EXPECT_EQ((*els)[0].key, (std::vector<std::uint8_t>{10, 0, 0, 0}));
  EXPECT_EQ((*els)[0].flags, 0u);
  EXPECT_EQ((*els)[1].key, (std::vector<std::uint8_t>{10, 0, 2, 0}));
  EXPECT_EQ((*els)[1].flags, static_cast<std::uint32_t>(NFT_SET_ELEM_INTERVAL_END));
  EXPECT_EQ((*els)[2].key, (std::vector<std::uint8_t>{172, 16, 0, 5}));
  EXPECT_EQ((*els)[3].key, (std::vector<std::uint8_t>{172, 16, 0, 6}));

  auto all = operator_network_elements({prefix("0.0.0.0/0")});
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);  // no end element past 255.255.255.255

  auto v6 = operator_network_elements({prefix("fd00::/64")});
  ASSERT_FALSE(v6);
  EXPECT_EQ(v6.error().errno_value(), EINVAL);
}

TEST(Ruleset, ValidationRejectsWhatTheTableCannotHold) {
  auto s = settings();
  s.tunnel_ifname = "a-name-longer-than-15";
  EXPECT_FALSE(validate(s));
  s.tunnel_ifname = "";
  EXPECT_FALSE(validate(s));

  auto c = contents();
  c.allowed.push_back({ip("10.255.0.4"), Protocol::kTcp, 0, "dev-c"});
  auto r = validate(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().context().find("dev-c"), std::string::npos);

  c = contents();
  c.agents.push_back({ip("fd00::4"), "dev-6"});
  EXPECT_FALSE(validate(c));
  EXPECT_FALSE(build_cold_batch(settings(), c, 1));
}

TEST(Ruleset, ColdBatchReplacesTheTableInOneTransaction) {
  auto batch = build_cold_batch(settings(), contents(), 1000);
  ASSERT_TRUE(batch) << batch.error().message();
  auto cmds = batch->commands();
  ASSERT_GE(cmds.size(), 6u);

  // add table; delete table; add table (with comment)
  EXPECT_EQ(nft_type(cmds[0]), NFT_MSG_NEWTABLE);
  EXPECT_FALSE(cmds[0]->nlmsg_flags & NLM_F_EXCL);
  EXPECT_EQ(nft_type(cmds[1]), NFT_MSG_DELTABLE);
  EXPECT_EQ(nft_type(cmds[2]), NFT_MSG_NEWTABLE);
  NftTablePtr t(nftnl_table_alloc());
  ASSERT_EQ(nftnl_table_nlmsg_parse(cmds[2], t.get()), 0);
  EXPECT_STREQ(nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME), "portcullis");
  EXPECT_TRUE(nftnl_table_is_set(t.get(), NFTNL_TABLE_USERDATA));

  // three sets, with types nft can print
  std::vector<std::string> set_names;
  for (int i = 3; i < 6; ++i) {
    ASSERT_EQ(nft_type(cmds[i]), NFT_MSG_NEWSET);
    NftSetPtr s(nftnl_set_alloc());
    ASSERT_EQ(nftnl_set_nlmsg_parse(cmds[i], s.get()), 0);
    set_names.push_back(nftnl_set_get_str(s.get(), NFTNL_SET_NAME));
    if (set_names.back() == "agent-ports") {
      EXPECT_EQ(nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_TYPE), kTypeAgentPorts);
      EXPECT_EQ(nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_LEN), 12u);
    }
    if (set_names.back() == "operator-networks") {
      EXPECT_EQ(nftnl_set_get_u32(s.get(), NFTNL_SET_FLAGS),
                static_cast<std::uint32_t>(NFT_SET_INTERVAL));
    }
  }
  EXPECT_EQ(set_names, (std::vector<std::string>{"agents", "agent-ports", "operator-networks"}));

  // elements, then three base chains, each followed by its rules
  std::size_t elements = 0, chains = 0, rules = 0;
  for (const nlmsghdr* nlh : cmds) {
    EXPECT_TRUE(nlh->nlmsg_flags & NLM_F_ACK);
    if (nft_type(nlh) == NFT_MSG_NEWSETELEM) elements += parse_elements(nlh).size();
    if (nft_type(nlh) == NFT_MSG_NEWCHAIN) ++chains;
    if (nft_type(nlh) == NFT_MSG_NEWRULE) ++rules;
  }
  EXPECT_EQ(elements, 2u + 3u + 2u);  // agents, agent-ports, operator-networks start + end
  EXPECT_EQ(chains, 3u);
  std::size_t want_rules = 0;
  for (const auto& c : chain_specs(settings())) want_rules += c.rules.size();
  EXPECT_EQ(rules, want_rules);
}

TEST(Ruleset, RulesParseBackToWhatWasBuilt) {
  auto specs = chain_specs(settings());
  auto batch = build_cold_batch(settings(), contents(), 1);
  ASSERT_TRUE(batch);
  std::vector<std::string> sent;
  for (const nlmsghdr* nlh : batch->commands()) {
    if (nft_type(nlh) != NFT_MSG_NEWRULE) continue;
    NftRulePtr r(nftnl_rule_alloc());
    ASSERT_EQ(nftnl_rule_nlmsg_parse(nlh, r.get()), 0);
    sent.push_back(rule_fingerprint(r.get()));
  }
  std::vector<std::string> built;
  for (auto& c : specs) {
    for (auto& r : c.rules) built.push_back(rule_fingerprint(r.rule.get()));
  }
  EXPECT_EQ(sent, built);
}

TEST(Ruleset, AllowedPortRuleReadsLikeNft) {
  auto specs = chain_specs(settings());
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_STREQ(specs[1].name, "filter-forward");
  std::vector<std::string> texts;
  for (auto& r : specs[1].rules) texts.push_back(r.text);
  EXPECT_EQ(
      texts[0],
      "iifname \"portcullis0\" oifname \"portcullis0\" counter drop comment \"agent to agent\"");
  EXPECT_EQ(texts[2],
            "iifname \"portcullis0\" ct state established,related ip saddr . meta l4proto . th "
            "sport @agent-ports accept");
  EXPECT_EQ(texts[3], "iifname \"portcullis0\" ct state related meta l4proto icmp accept");
  EXPECT_EQ(texts[6],
            "oifname \"portcullis0\" ct state established,related ip daddr . meta l4proto . th "
            "dport @agent-ports accept");
  EXPECT_EQ(texts[8],
            "oifname \"portcullis0\" ct state new ip saddr @operator-networks ip daddr . meta "
            "l4proto . th dport @agent-ports accept");
  // Replies from the agent are matched on their source address and port.
  const std::string reply_fp = rule_fingerprint(specs[1].rules[2].rule.get());
  EXPECT_NE(reply_fp.find("[payload load 4b @ network header + 12 => reg 1 ]"), std::string::npos)
      << reply_fp;
  EXPECT_NE(reply_fp.find("[payload load 2b @ transport header + 0 => reg 10 ]"), std::string::npos)
      << reply_fp;
  // The lookup uses the concatenation's first register and the set by name.
  const std::string fp = rule_fingerprint(specs[1].rules[8].rule.get());
  EXPECT_NE(fp.find("[meta load l4proto => reg 9 ]"), std::string::npos) << fp;
  EXPECT_NE(fp.find("[payload load 2b @ transport header + 2 => reg 10 ]"), std::string::npos)
      << fp;
  EXPECT_NE(fp.find("[lookup reg 1 set agent-ports"), std::string::npos) << fp;
  EXPECT_NE(rule_fingerprint(specs[1].rules[0].rule.get()).find("comment 'agent to agent'"),
            std::string::npos);
}

TEST(Ruleset, DeltaTouchesOnlyItsElementsRemovalsFirst) {
  FilterDelta d;
  d.remove_allowed = {{ip("10.255.0.2"), Protocol::kUdp, 3478, "dev-a"}};
  d.add_allowed = {{ip("10.255.0.2"), Protocol::kTcp, 22, "dev-a"}};
  d.add_agents = {{ip("10.255.0.7"), "dev-g"}};
  auto batch = build_delta_batch(d, 50);
  ASSERT_TRUE(batch) << batch.error().message();
  auto cmds = batch->commands();
  ASSERT_EQ(cmds.size(), 3u);
  EXPECT_EQ(nft_type(cmds[0]), NFT_MSG_DELSETELEM);
  EXPECT_EQ(nft_type(cmds[1]), NFT_MSG_NEWSETELEM);
  EXPECT_EQ(nft_type(cmds[2]), NFT_MSG_NEWSETELEM);
  EXPECT_FALSE(cmds[2]->nlmsg_flags & NLM_F_EXCL);  // re-adding is a no-op, not an error
  auto removed = parse_elements(cmds[0]);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].first, allow_element(d.remove_allowed[0]).key);
  auto added = parse_elements(cmds[2]);
  ASSERT_EQ(added.size(), 1u);
  EXPECT_EQ(added[0].second, "dev-a");

  EXPECT_EQ(batch->describe(51), "delete 1 element(s) from set 'agent-ports'");
}

TEST(Ruleset, BigElementListsSplitBelow64KiBInOneBatch) {
  FilterDelta d;
  for (std::uint32_t i = 0; i < 10000; ++i) {
    const IpAddress a = IpAddress::v4_host_order(0x0aff0002 + i);
    const std::string dev = "device-" + std::to_string(i) + "-with-a-reasonably-long-name";
    for (std::uint16_t port : {5985, 5986, 5900, 3478, 47002}) {
      d.add_allowed.push_back({a, Protocol::kTcp, port, dev});
    }
  }
  auto batch = build_delta_batch(d, 1);
  ASSERT_TRUE(batch);
  std::size_t total = 0;
  std::uint32_t last_seq = 0;
  for (const nlmsghdr* nlh : batch->commands()) {
    EXPECT_LT(nlh->nlmsg_len, 64u * 1024u);
    EXPECT_EQ(nft_type(nlh), NFT_MSG_NEWSETELEM);
    total += parse_elements(nlh).size();
    last_seq = nlh->nlmsg_seq;
  }
  EXPECT_EQ(total, 50000u);
  EXPECT_GT(batch->command_count(), 10u);

  // An extended-ack offset inside the last message names the element there.
  const nlmsghdr* last = batch->commands().back();
  const std::string what = batch->describe(last_seq, last->nlmsg_len - 8);
  EXPECT_NE(what.find("10.255.39.17 . tcp . 47002"), std::string::npos) << what;
}

}  // namespace
}  // namespace portcullis::nftables
