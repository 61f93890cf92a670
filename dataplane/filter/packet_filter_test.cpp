#include "dataplane/filter/packet_filter.h"

#include <gtest/gtest.h>

namespace portcullis::filter {
namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

TEST(DiffContents, AddsAndRemovesOnlyWhatDiffers) {
  FilterContents have{{{ip("10.255.0.2"), "a"}, {ip("10.255.0.3"), "b"}},
                      {{ip("10.255.0.2"), Protocol::kTcp, 5985, "a"},
                       {ip("10.255.0.3"), Protocol::kUdp, 3478, "b"}}};
  FilterContents want{{{ip("10.255.0.3"), "b"}, {ip("10.255.0.4"), "c"}},
                      {{ip("10.255.0.3"), Protocol::kUdp, 3478, "b"},
                       {ip("10.255.0.4"), Protocol::kTcp, 5900, "c"}}};
  auto d = diff_contents(want, have);
  ASSERT_EQ(d.add_agents.size(), 1u);
  EXPECT_EQ(d.add_agents[0].address, ip("10.255.0.4"));
  ASSERT_EQ(d.remove_agents.size(), 1u);
  EXPECT_EQ(d.remove_agents[0].address, ip("10.255.0.2"));
  ASSERT_EQ(d.add_allowed.size(), 1u);
  EXPECT_EQ(d.add_allowed[0].port, 5900);
  ASSERT_EQ(d.remove_allowed.size(), 1u);
  EXPECT_EQ(d.remove_allowed[0].port, 5985);
}

TEST(DiffContents, EqualSetsInAnyOrderGiveEmptyDelta) {
  FilterContents a{
      {}, {{ip("10.255.0.2"), Protocol::kTcp, 1, "x"}, {ip("10.255.0.2"), Protocol::kUdp, 1, "x"}}};
  FilterContents b{{}, {a.allowed[1], a.allowed[0], a.allowed[0]}};
  EXPECT_TRUE(diff_contents(a, b).empty());
}

TEST(DiffContents, CommentOnlyDifferenceIsNotAChange) {
  FilterContents a{{{ip("10.255.0.2"), "new"}}, {{ip("10.255.0.2"), Protocol::kTcp, 1, "new"}}};
  FilterContents b{{{ip("10.255.0.2"), "old"}}, {{ip("10.255.0.2"), Protocol::kTcp, 1, "old"}}};
  EXPECT_TRUE(diff_contents(a, b).empty());
}

TEST(DiffContents, ProtocolIsPartOfIdentity) {
  FilterContents want{{}, {{ip("10.255.0.2"), Protocol::kUdp, 5985, "a"}}};
  FilterContents have{{}, {{ip("10.255.0.2"), Protocol::kTcp, 5985, "a"}}};
  auto d = diff_contents(want, have);
  ASSERT_EQ(d.add_allowed.size(), 1u);
  EXPECT_EQ(d.add_allowed[0].protocol, Protocol::kUdp);
  ASSERT_EQ(d.remove_allowed.size(), 1u);
  EXPECT_EQ(d.remove_allowed[0].protocol, Protocol::kTcp);
}

}  // namespace
}  // namespace portcullis::filter
