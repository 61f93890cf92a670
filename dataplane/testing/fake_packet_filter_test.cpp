#include "dataplane/testing/fake_packet_filter.h"

#include <gtest/gtest.h>

namespace portcullis::testing {
namespace {

using filter::AgentEntry;
using filter::AllowEntry;
using filter::FilterContents;
using filter::FilterDelta;
using filter::FilterSettings;
using filter::Protocol;

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

FilterContents contents(std::vector<AgentEntry> agents, std::vector<AllowEntry> allowed) {
  FilterContents c;
  c.agents = std::move(agents);
  c.allowed = std::move(allowed);
  return c;
}

FilterSettings settings() {
  return {.tunnel_ifname = "portcullis0",
          .gateway_address = ip("10.255.0.1"),
          .agent_pool = *IpPrefix::parse("10.255.0.0/16"),
          .operator_networks = {*IpPrefix::parse("192.0.2.0/24")}};
}

AllowEntry allow(const char* agent, Protocol p, std::uint16_t port, const char* dev = "7f3c") {
  return {.agent = ip(agent), .protocol = p, .port = port, .device = dev};
}

TEST(FakePacketFilter, NotInstalledUntilBuilt) {
  FakePacketFilter f;
  EXPECT_EQ(f.to_text(), "filter (not installed)\n");
  auto r = f.read();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ENOENT);
  auto a = f.apply(FilterDelta{});
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().errno_value(), ENOENT);
  EXPECT_FALSE(f.installed());
}

TEST(FakePacketFilter, BuildAndApplyPrintStableText) {
  FakePacketFilter f;
  FilterContents c;
  c.agents = {{ip("10.255.0.8"), "a8"}, {ip("10.255.0.7"), "7f3c"}, {ip("10.255.0.7"), "dup"}};
  c.allowed = {allow("10.255.0.7", Protocol::kUdp, 53), allow("10.255.0.7", Protocol::kTcp, 22)};
  ASSERT_TRUE(f.build(settings(), c));
  EXPECT_EQ(f.to_text(),
            "filter tunnel=portcullis0 gateway=10.255.0.1 pool=10.255.0.0/16 "
            "operators=192.0.2.0/24\n"
            "agent 10.255.0.7 device=7f3c\n"
            "agent 10.255.0.8 device=a8\n"
            "allow 10.255.0.7 tcp 22 device=7f3c\n"
            "allow 10.255.0.7 udp 53 device=7f3c\n");

  FilterDelta d;
  d.remove_allowed = {allow("10.255.0.7", Protocol::kUdp, 53, "")};  // identity ignores device
  d.add_allowed = {allow("10.255.0.8", Protocol::kTcp, 443, "a8")};
  ASSERT_TRUE(f.apply(d));
  auto r = f.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->allowed, (std::vector<AllowEntry>{allow("10.255.0.7", Protocol::kTcp, 22),
                                                 allow("10.255.0.8", Protocol::kTcp, 443, "a8")}));
  EXPECT_EQ(r->allowed[1].device, "a8");
  EXPECT_EQ(f.apply_calls(), 1u);
  EXPECT_EQ(f.build_calls(), 1u);
}

TEST(FakePacketFilter, StrictRefusesPresentAddsAndMissingRemovesAtomically) {
  FakePacketFilter f;
  ASSERT_TRUE(f.build(settings(), contents({{ip("10.255.0.7"), "x"}}, {})));
  FilterDelta d;
  d.add_allowed = {allow("10.255.0.7", Protocol::kTcp, 22)};
  d.add_agents = {{ip("10.255.0.7"), "x"}};  // present
  auto r = f.apply(d);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EEXIST);
  EXPECT_EQ(r.error().message(),
            "apply packet filter change: add agent 10.255.0.7: already in the filter: File exists");
  EXPECT_TRUE(f.contents().allowed.empty());  // nothing of it applied

  FilterDelta rm;
  rm.remove_allowed = {allow("10.255.0.9", Protocol::kTcp, 22)};
  r = f.apply(rm);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ENOENT);

  f.set_strict(false);
  EXPECT_TRUE(f.apply(d));
  EXPECT_TRUE(f.apply(rm));
  EXPECT_EQ(f.contents().allowed.size(), 1u);
  EXPECT_EQ(f.contents().agents.size(), 1u);
}

TEST(FakePacketFilter, ReAddingInOneDeltaChangesTheComment) {
  FakePacketFilter f;
  ASSERT_TRUE(f.build(settings(), contents({}, {allow("10.255.0.7", Protocol::kTcp, 22, "old")})));
  FilterDelta d;
  d.remove_allowed = {allow("10.255.0.7", Protocol::kTcp, 22, "old")};
  d.add_allowed = {allow("10.255.0.7", Protocol::kTcp, 22, "new")};
  ASSERT_TRUE(f.apply(d));
  EXPECT_EQ(f.contents().allowed[0].device, "new");
}

TEST(FakePacketFilter, ScheduledFailures) {
  FakePacketFilter f;
  f.fail_build(1, Error::from_errno(EPERM, "build"));
  EXPECT_FALSE(f.build(settings(), {}));
  EXPECT_FALSE(f.installed());  // a failed build leaves the previous state
  ASSERT_TRUE(f.build(settings(), {}));
  f.fail_apply(2, Error::from_errno(ENOBUFS, "apply"));
  FilterDelta d;
  d.add_agents = {{ip("10.255.0.7"), "x"}};
  EXPECT_TRUE(f.apply(d));
  d.add_agents = {{ip("10.255.0.8"), "y"}};
  auto r = f.apply(d);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ENOBUFS);
  EXPECT_EQ(f.contents().agents.size(), 1u);
  f.fail_read(1, Error::from_errno(EIO, "read"));
  EXPECT_FALSE(f.read());
  EXPECT_TRUE(f.read());
}

TEST(FakePacketFilter, DiffThenApplyConverges) {
  FakePacketFilter f;
  ASSERT_TRUE(f.build(settings(), {}));
  FilterContents want;
  want.agents = {{ip("10.255.0.7"), "a"}, {ip("10.255.0.8"), "b"}};
  want.allowed = {allow("10.255.0.7", Protocol::kTcp, 22),
                  allow("10.255.0.8", Protocol::kUdp, 161)};
  ASSERT_TRUE(f.apply(filter::diff_contents(want, *f.read())));
  EXPECT_TRUE(filter::diff_contents(want, *f.read()).empty());
  want.allowed.pop_back();
  want.agents.pop_back();
  ASSERT_TRUE(f.apply(filter::diff_contents(want, *f.read())));
  EXPECT_EQ(f.read()->allowed, want.allowed);
  EXPECT_EQ(f.read()->agents, want.agents);
}

}  // namespace
}  // namespace portcullis::testing
