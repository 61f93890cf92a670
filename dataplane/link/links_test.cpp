#include "dataplane/link/links.h"

#include <gtest/gtest.h>

namespace portcullis::link {
namespace {

IpPrefix prefix(const char* s) { return *IpPrefix::parse(s); }

LinkSpec agent_spec() {
  LinkSpec s;
  s.ifname = "pcl0";
  s.mtu = 1420;
  s.addresses = {prefix("10.255.0.7/32")};
  s.routes = {prefix("10.255.0.1/32")};
  return s;
}

LinkState as_specified(const LinkSpec& spec) {
  LinkState st;
  st.ifname = spec.ifname;
  st.ifindex = 12;
  st.kind = spec.kind;
  st.mtu = spec.mtu.value_or(1420);
  st.up = spec.up;
  st.addresses = spec.addresses;
  for (const auto& r : spec.routes) st.routes.push_back({r.masked(), kRouteProtocol});
  return st;
}

TEST(ValidateIfname, KernelRules) {
  EXPECT_TRUE(validate_ifname("pcl0"));
  EXPECT_TRUE(validate_ifname("portcullis-0123"));  // 15 bytes
  auto too_long = validate_ifname("portcullis-01234");
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().errno_value(), EINVAL);
  EXPECT_EQ(too_long.error().context(),
            "interface name 'portcullis-01234' is 16 bytes long; the kernel allows at most 15");
  EXPECT_FALSE(validate_ifname(""));
  EXPECT_FALSE(validate_ifname("."));
  EXPECT_FALSE(validate_ifname(".."));
  EXPECT_FALSE(validate_ifname("a/b"));
  EXPECT_FALSE(validate_ifname("a:b"));
  EXPECT_FALSE(validate_ifname("a b"));
  EXPECT_FALSE(validate_ifname("a\tb"));
  EXPECT_FALSE(validate_ifname(std::string_view("a\0b", 3)));
}

TEST(ValidateSpec, KindMtuAndPrefixes) {
  EXPECT_TRUE(validate_spec(agent_spec()));
  auto s = agent_spec();
  s.kind = "";
  EXPECT_FALSE(validate_spec(s));
  s = agent_spec();
  s.mtu = 67;
  EXPECT_FALSE(validate_spec(s));
  s.mtu = 68;
  EXPECT_TRUE(validate_spec(s));
  s = agent_spec();
  s.addresses.push_back(IpPrefix());
  EXPECT_FALSE(validate_spec(s));
  s = agent_spec();
  s.routes.push_back(IpPrefix());
  EXPECT_FALSE(validate_spec(s));
}

TEST(PlanLinkChanges, MissingLinkIsCreatedWithEverything) {
  auto spec = agent_spec();
  auto c = plan_link_changes(spec, std::nullopt);
  EXPECT_TRUE(c.created);
  EXPECT_EQ(c.mtu, 1420u);
  EXPECT_EQ(c.addresses_added, spec.addresses);
  EXPECT_EQ(c.up, true);
  EXPECT_EQ(c.routes_added, spec.routes);
  EXPECT_TRUE(c.addresses_removed.empty());
  EXPECT_EQ(c.to_string(), "created, mtu 1420, +address 10.255.0.7/32, up, +route 10.255.0.1/32");
}

TEST(PlanLinkChanges, CreatedDownWithoutMtu) {
  auto spec = agent_spec();
  spec.mtu.reset();
  spec.up = false;
  spec.routes.clear();
  auto c = plan_link_changes(spec, std::nullopt);
  EXPECT_TRUE(c.created);
  EXPECT_FALSE(c.mtu);
  EXPECT_FALSE(c.up);
}

TEST(PlanLinkChanges, ConvergedLinkNeedsNothing) {
  auto spec = agent_spec();
  auto c = plan_link_changes(spec, as_specified(spec));
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(c.to_string(), "unchanged");
}

TEST(PlanLinkChanges, OnlyTheDifferencesArePlanned) {
  auto spec = agent_spec();
  spec.addresses.push_back(prefix("fd00::7/128"));
  auto have = as_specified(agent_spec());
  have.mtu = 1500;
  have.up = false;
  have.addresses.push_back(prefix("192.0.2.1/24"));  // foreign: kept
  have.routes.clear();
  auto c = plan_link_changes(spec, have);
  EXPECT_FALSE(c.created);
  EXPECT_EQ(c.mtu, 1420u);
  EXPECT_TRUE(c.addresses_removed.empty());
  EXPECT_EQ(c.addresses_added, std::vector<IpPrefix>{prefix("fd00::7/128")});
  EXPECT_EQ(c.up, true);
  EXPECT_EQ(c.routes_added, std::vector<IpPrefix>{prefix("10.255.0.1/32")});
  EXPECT_EQ(c.to_string(), "mtu 1420, +address fd00::7/128, up, +route 10.255.0.1/32");
}

TEST(PlanLinkChanges, AbsentMtuIsLeftAlone) {
  auto spec = agent_spec();
  spec.mtu.reset();
  auto have = as_specified(agent_spec());
  have.mtu = 9000;
  EXPECT_TRUE(plan_link_changes(spec, have).empty());
}

TEST(PlanLinkChanges, UpFalseBringsItDown) {
  auto spec = agent_spec();
  spec.up = false;
  spec.routes.clear();
  auto have = as_specified(agent_spec());
  have.up = true;
  auto c = plan_link_changes(spec, have);
  EXPECT_EQ(c.up, false);
  EXPECT_TRUE(c.routes_removed.empty());  // not unless asked
}

TEST(PlanLinkChanges, AddressesCompareWithTheirPrefixLength) {
  LinkSpec spec;
  spec.ifname = "pcl0";
  spec.addresses = {prefix("10.255.0.1/16")};
  LinkState have = as_specified(spec);
  have.addresses = {prefix("10.255.0.1/24")};
  auto c = plan_link_changes(spec, have);
  EXPECT_EQ(c.addresses_added, spec.addresses);
  EXPECT_TRUE(c.addresses_removed.empty());
  spec.remove_unlisted = true;
  c = plan_link_changes(spec, have);
  EXPECT_EQ(c.addresses_removed, std::vector<IpPrefix>{prefix("10.255.0.1/24")});
  EXPECT_EQ(c.to_string(), "-address 10.255.0.1/24, +address 10.255.0.1/16");
}

TEST(PlanLinkChanges, RoutesCompareMaskedAndWhateverTheirProtocol) {
  LinkSpec spec;
  spec.ifname = "pcl0";
  spec.addresses = {prefix("10.255.0.1/16")};
  spec.routes = {prefix("10.255.7.7/16")};  // the same as the kernel's prefix route
  LinkState have = as_specified(spec);
  have.routes = {{prefix("10.255.0.0/16"), kKernelRouteProtocol}};
  EXPECT_TRUE(plan_link_changes(spec, have).empty());
}

TEST(PlanLinkChanges, RemoveUnlistedKeepsLinkLocalAndForeignRoutes) {
  auto spec = agent_spec();
  spec.remove_unlisted = true;
  auto have = as_specified(agent_spec());
  have.addresses.push_back(prefix("fe80::1/64"));
  have.addresses.push_back(prefix("10.9.9.9/32"));
  have.routes.push_back({prefix("10.255.0.2/32"), kRouteProtocol});  // ours, unlisted
  have.routes.push_back({prefix("10.1.0.0/16"), 4});                 // static: not ours
  have.routes.push_back({prefix("fe80::/64"), kKernelRouteProtocol});
  auto c = plan_link_changes(spec, have);
  EXPECT_EQ(c.addresses_removed, std::vector<IpPrefix>{prefix("10.9.9.9/32")});
  EXPECT_EQ(c.routes_removed, std::vector<IpPrefix>{prefix("10.255.0.2/32")});
  EXPECT_TRUE(c.addresses_added.empty());
  EXPECT_TRUE(c.routes_added.empty());
}

TEST(PlanLinkChanges, RepeatedSpecEntriesArePlannedOnce) {
  auto spec = agent_spec();
  spec.addresses.push_back(spec.addresses[0]);
  spec.routes.push_back(prefix("10.255.0.1"));
  auto c = plan_link_changes(spec, std::nullopt);
  EXPECT_EQ(c.addresses_added.size(), 1u);
  EXPECT_EQ(c.routes_added.size(), 1u);
}

TEST(IsIpv6LinkLocal, OnlyFe80Slash10) {
  EXPECT_TRUE(is_ipv6_link_local(prefix("fe80::1/64")));
  EXPECT_TRUE(is_ipv6_link_local(prefix("febf::1/64")));
  EXPECT_FALSE(is_ipv6_link_local(prefix("fec0::1/64")));
  EXPECT_FALSE(is_ipv6_link_local(prefix("fd00::1/64")));
  EXPECT_FALSE(is_ipv6_link_local(prefix("10.0.0.1/8")));
}

}  // namespace
}  // namespace portcullis::link
