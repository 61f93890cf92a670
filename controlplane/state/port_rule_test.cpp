#include "controlplane/state/port_rule.h"

#include <gtest/gtest.h>

namespace portcullis::state {
namespace {

using filter::Protocol;

TEST(ParsePortRule, BarePortMeansTcpAndUdp) {
  auto r = parse_port_rule("5985");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, (std::vector<PortRule>{{Protocol::kTcp, 5985}, {Protocol::kUdp, 5985}}));
}

TEST(ParsePortRule, WithProtocol) {
  EXPECT_EQ(*parse_port_rule("5985/tcp"), (std::vector<PortRule>{{Protocol::kTcp, 5985}}));
  EXPECT_EQ(*parse_port_rule("3478/udp"), (std::vector<PortRule>{{Protocol::kUdp, 3478}}));
  EXPECT_EQ(*parse_port_rule("1/tcp"), (std::vector<PortRule>{{Protocol::kTcp, 1}}));
  EXPECT_EQ(*parse_port_rule("65535/udp"), (std::vector<PortRule>{{Protocol::kUdp, 65535}}));
}

TEST(ParsePortRule, Rejections) {
  for (const char* bad :
       {"", "0", "65536", "99999", "123456", "-1", "+22", " 22", "22 ", "22/", "/tcp", "22/TCP",
        "22/sctp", "22/tcp/udp", "0x16", "022", "ssh", "22/tcp ", "2 2"}) {
    auto r = parse_port_rule(bad);
    ASSERT_FALSE(r) << "'" << bad << "'";
    EXPECT_EQ(r.error().errno_value(), EINVAL);
    EXPECT_NE(r.error().message().find("'" + std::string(bad) + "'"), std::string::npos)
        << r.error().message();
  }
  EXPECT_NE(parse_port_rule("22/sctp").error().message().find("tcp or udp"), std::string::npos);
  EXPECT_NE(parse_port_rule("0").error().message().find("out of range"), std::string::npos);
}

TEST(ParsePortRules, SortsAndRejectsDuplicates) {
  auto r = parse_port_rules({"5985", "3478/udp", "22/tcp"});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, (std::vector<PortRule>{{Protocol::kTcp, 22},
                                       {Protocol::kTcp, 5985},
                                       {Protocol::kUdp, 3478},
                                       {Protocol::kUdp, 5985}}));
  auto dup = parse_port_rules({"5985", "5985/tcp"});
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().context(), "port rule '5985/tcp' repeats 5985/tcp from '5985'");
  EXPECT_FALSE(parse_port_rules({"22/tcp", "22/tcp"}));
  EXPECT_TRUE(parse_port_rules({"22/tcp", "22/udp"}));
  EXPECT_TRUE(parse_port_rules({})->empty());
  EXPECT_FALSE(parse_port_rules({"22", "x"}));
}

TEST(FormatPortRule, Text) {
  EXPECT_EQ(format_port_rule({Protocol::kUdp, 3478}), "3478/udp");
  EXPECT_EQ(format_port_rule({Protocol::kTcp, 5985}), "5985/tcp");
}

}  // namespace
}  // namespace portcullis::state
