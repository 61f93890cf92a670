#include "controlplane/operator/flow_explainer.h"

#include <gtest/gtest.h>

#include "dataplane/testing/fake_packet_filter.h"

namespace portcullis::operator_api {
namespace {

IpAddress ip(const char* text) { return *IpAddress::parse(text); }

TEST(PacketFilterExplainer, LooksUpEachLayerUnderTheExclusiveSection) {
  testing::FakePacketFilter nft, ebpf;
  filter::FilterSettings settings{
      "portcullis0", ip("10.255.0.1"), *IpPrefix::parse("10.255.0.0/16"), {}};
  filter::FilterContents contents;
  contents.agents = {{ip("10.255.0.2"), "dev"}};
  contents.allowed = {{ip("10.255.0.2"), filter::Protocol::kTcp, 5985, "dev"}};
  ASSERT_TRUE(nft.build(settings, contents));
  contents.allowed.clear();
  ASSERT_TRUE(ebpf.build(settings, contents));
  int sections = 0;
  PacketFilterExplainer explainer({{"nftables", nft}, {"ebpf", ebpf}},
                                  [&](const std::function<void()>& fn) {
                                    ++sections;
                                    fn();
                                  });
  auto found = explainer.lookup({ip("10.255.0.2"), filter::Protocol::kTcp, 5985, ""});
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].name, "nftables");
  EXPECT_EQ(found[0].allowed, true);
  EXPECT_EQ(found[1].allowed, false);
  EXPECT_EQ(found[1].agent_known, true);
  auto udp = explainer.lookup({ip("10.255.0.2"), filter::Protocol::kUdp, 5985, ""});
  EXPECT_EQ(udp[0].allowed, false);
  auto summary = explainer.summarize();
  ASSERT_EQ(summary.size(), 2u);
  EXPECT_TRUE(summary[0].installed);
  EXPECT_EQ(summary[0].allowed, 1u);
  EXPECT_EQ(summary[1].allowed, 0u);
  EXPECT_EQ(sections, 3);
}

TEST(PacketFilterExplainer, DeviceEntriesAreThatAddressOnlyPerLayer) {
  testing::FakePacketFilter nft, ebpf;
  filter::FilterSettings settings{
      "portcullis0", ip("10.255.0.1"), *IpPrefix::parse("10.255.0.0/16"), {}};
  filter::FilterContents contents;
  contents.agents = {{ip("10.255.0.2"), "dev-a"}, {ip("10.255.0.3"), "dev-b"}};
  contents.allowed = {{ip("10.255.0.2"), filter::Protocol::kTcp, 5985, "dev-a"},
                      {ip("10.255.0.2"), filter::Protocol::kUdp, 3478, "dev-a"},
                      {ip("10.255.0.3"), filter::Protocol::kTcp, 5900, "dev-b"}};
  ASSERT_TRUE(nft.build(settings, contents));
  contents.agents.pop_back();
  contents.allowed = {contents.allowed[1]};
  ASSERT_TRUE(ebpf.build(settings, contents));
  PacketFilterExplainer explainer({{"nftables", nft}, {"ebpf", ebpf}}, {});

  auto a = explainer.device_entries(ip("10.255.0.2"));
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].name, "nftables");
  EXPECT_EQ(a[0].agent_known, true);
  EXPECT_EQ(a[0].allowed, (std::vector<filter::AllowEntry>{
                              {ip("10.255.0.2"), filter::Protocol::kTcp, 5985, ""},
                              {ip("10.255.0.2"), filter::Protocol::kUdp, 3478, ""}}));
  EXPECT_EQ(
      a[1].allowed,
      (std::vector<filter::AllowEntry>{{ip("10.255.0.2"), filter::Protocol::kUdp, 3478, ""}}));
  auto b = explainer.device_entries(ip("10.255.0.3"));
  EXPECT_EQ(b[0].allowed.size(), 1u);
  EXPECT_EQ(b[1].agent_known, false);
  EXPECT_TRUE(b[1].allowed.empty());
}

TEST(PacketFilterExplainer, UnreadableLayerSaysSoWithoutDetails) {
  testing::FakePacketFilter nft;  // never built: read() answers ENOENT
  PacketFilterExplainer explainer({{"nftables", nft}}, {});
  auto found = explainer.lookup({ip("10.255.0.2"), filter::Protocol::kTcp, 5985, ""});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_FALSE(found[0].allowed.has_value());
  EXPECT_EQ(found[0].error, "not installed");
  auto summary = explainer.summarize();
  EXPECT_FALSE(summary[0].installed);
  auto entries = explainer.device_entries(ip("10.255.0.2"));
  EXPECT_FALSE(entries[0].agent_known.has_value());
  EXPECT_EQ(entries[0].error, "not installed");
}

}  // namespace
}  // namespace portcullis::operator_api
