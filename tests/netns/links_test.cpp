// NetlinkLinks against the real kernel, in a namespace of its own:
//
//   pcl-links-<pid>:  lo
//                     pcl0   the link under test (kind "dummy", or "ifb" where the kernel has
//                            no dummy module; "wireguard" is covered by tests/vm)
//                     pclbr  a bridge, made with `ip`, to collide with
//
// Each step is checked with `ip -d link`, `ip addr` and `ip route` in the namespace; the namespace
// and every link in it go away with the fixture, even when a check fails.

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "dataplane/link/netlink_links.h"
#include "tests/support/netns.h"

namespace portcullis::link {
namespace {

using portcullis::testing::NetnsGuard;
using portcullis::testing::TestNetns;

IpPrefix prefix(const char* s) { return *IpPrefix::parse(s); }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    while (!l.empty() && l.back() == ' ') l.pop_back();
    if (!l.empty()) out.push_back(l);
  }
  std::sort(out.begin(), out.end());
  return out;
}

class LinksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ns_.ok()) << "cannot create namespace " << ns_.name() << " (root needed)";
    {
      NetnsGuard in(ns_);
      ASSERT_TRUE(in.ok());
      auto links = NetlinkLinks::open();  // the socket stays in the namespace
      ASSERT_TRUE(links) << links.error().message();
      links_ = std::move(*links);
    }
    kind_ = ns_.run("ip link add pclprobe type dummy 2>/dev/null && ip link del pclprobe").ok()
                ? "dummy"
                : "ifb";
  }

  // `ip -o -4 addr` / `-6` of a link, as "inet 10.255.0.1/16" lines, sorted.
  std::vector<std::string> addresses(const std::string& ifname, const char* family = "-4") {
    auto r = ns_.run(std::string("ip -o ") + family + " addr show dev " + ifname +
                     " | awk '{print $3, $4}'");
    EXPECT_TRUE(r.ok());
    return lines(r.out);
  }
  std::vector<std::string> routes(const std::string& ifname) {
    auto r = ns_.run("ip -4 route show table main dev " + ifname);
    EXPECT_TRUE(r.ok());
    return lines(r.out);
  }
  bool kernel_has_wireguard() {
    return ns_.run("ip link add pclwg type wireguard 2>/dev/null && ip link del pclwg").ok();
  }
  std::string link_details(const std::string& ifname) {
    return ns_.run("ip -d link show dev " + ifname).out;
  }

  LinkSpec gateway_spec() const {
    LinkSpec s;
    s.ifname = "pcl0";
    s.kind = kind_;
    s.mtu = 1420;
    s.addresses = {prefix("10.255.0.1/16")};
    return s;
  }
  LinkSpec agent_spec() const {
    LinkSpec s;
    s.ifname = "pcl0";
    s.kind = kind_;
    s.mtu = 1420;
    s.addresses = {prefix("10.255.0.7/32")};
    s.routes = {prefix("10.255.0.1/32")};
    return s;
  }

  TestNetns ns_{"links"};
  std::unique_ptr<NetlinkLinks> links_;
  std::string kind_;
};

TEST_F(LinksTest, GatewayLinkIsCreatedExactlyAsAskedAndASecondEnsureSendsNothing) {
  auto changes = links_->ensure(gateway_spec());
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_EQ(changes->to_string(), "created, mtu 1420, +address 10.255.0.1/16, up");

  auto details = link_details("pcl0");
  EXPECT_NE(details.find(" mtu 1420 "), std::string::npos) << details;
  EXPECT_NE(details.find("<BROADCAST,NOARP,UP,LOWER_UP>"), std::string::npos) << details;
  EXPECT_NE(details.find("\n    " + kind_ + " "), std::string::npos) << details;
  EXPECT_EQ(addresses("pcl0"), std::vector<std::string>{"inet 10.255.0.1/16"});
  // The kernel's own prefix route for the address, nothing else.
  EXPECT_EQ(routes("pcl0"),
            std::vector<std::string>{"10.255.0.0/16 proto kernel scope link src 10.255.0.1"});

  auto st = links_->read("pcl0");
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(st->kind, kind_);
  EXPECT_EQ(st->mtu, 1420u);
  EXPECT_TRUE(st->up);
  EXPECT_GT(st->ifindex, 0u);
  std::vector<IpPrefix> v4;
  for (const auto& a : st->addresses) {
    if (a.family() == AF_INET) v4.push_back(a);
  }
  EXPECT_EQ(v4, std::vector<IpPrefix>{prefix("10.255.0.1/16")});
  EXPECT_NE(std::find(st->routes.begin(), st->routes.end(),
                      RouteState{prefix("10.255.0.0/16"), kKernelRouteProtocol}),
            st->routes.end());

  auto before = links_->changing_requests();
  auto again = links_->ensure(gateway_spec());
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE(again->empty()) << again->to_string();
  EXPECT_EQ(links_->changing_requests(), before);
  EXPECT_EQ(*links_->read("pcl0"), *st);
}

TEST_F(LinksTest, AgentLinkGetsItsHostAddressAndRouteToTheGateway) {
  auto changes = links_->ensure(agent_spec());
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_EQ(changes->to_string(),
            "created, mtu 1420, +address 10.255.0.7/32, up, +route 10.255.0.1/32");
  EXPECT_EQ(addresses("pcl0"), std::vector<std::string>{"inet 10.255.0.7/32"});
  EXPECT_EQ(routes("pcl0"), std::vector<std::string>{"10.255.0.1 proto 120 scope link"});
  EXPECT_TRUE(ns_.run("ip route get 10.255.0.1 | grep -q 'dev pcl0'").ok());

  auto before = links_->changing_requests();
  auto again = links_->ensure(agent_spec());
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE(again->empty()) << again->to_string();
  EXPECT_EQ(links_->changing_requests(), before);
}

TEST_F(LinksTest, DriftIsRepairedStepByStepAndForeignAddressesStay) {
  ASSERT_TRUE(links_->ensure(agent_spec()));
  ASSERT_TRUE(ns_.run("ip link set pcl0 down && ip link set pcl0 mtu 1500 && "
                      "ip addr del 10.255.0.7/32 dev pcl0 && ip addr add 192.0.2.1/24 dev pcl0")
                  .ok());
  // Down took our route with it.
  EXPECT_EQ(routes("pcl0"), std::vector<std::string>{});

  auto before = links_->changing_requests();
  auto changes = links_->ensure(agent_spec());
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_EQ(changes->to_string(), "mtu 1420, +address 10.255.0.7/32, up, +route 10.255.0.1/32");
  EXPECT_EQ(links_->changing_requests(), before + 4);
  EXPECT_EQ(addresses("pcl0"),
            (std::vector<std::string>{"inet 10.255.0.7/32", "inet 192.0.2.1/24"}));
  EXPECT_NE(link_details("pcl0").find(",UP,"), std::string::npos);

  // Asked to, it removes what is not listed, and only that.
  auto spec = agent_spec();
  spec.remove_unlisted = true;
  changes = links_->ensure(spec);
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_EQ(changes->to_string(), "-address 192.0.2.1/24");
  EXPECT_EQ(addresses("pcl0"), std::vector<std::string>{"inet 10.255.0.7/32"});
  EXPECT_EQ(routes("pcl0"), std::vector<std::string>{"10.255.0.1 proto 120 scope link"});

  // Our own route that the spec no longer lists goes too; the kernel's stay.
  spec.routes = {prefix("10.255.0.2/32")};
  changes = links_->ensure(spec);
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_EQ(changes->to_string(), "-route 10.255.0.1/32, +route 10.255.0.2/32");
  EXPECT_EQ(routes("pcl0"), std::vector<std::string>{"10.255.0.2 proto 120 scope link"});
}

TEST_F(LinksTest, DownSpecBringsTheLinkDown) {
  ASSERT_TRUE(links_->ensure(gateway_spec()));
  auto spec = gateway_spec();
  spec.up = false;
  auto changes = links_->ensure(spec);
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_EQ(changes->to_string(), "down");
  EXPECT_EQ(link_details("pcl0").find(",UP"), std::string::npos);
  EXPECT_FALSE(links_->read("pcl0")->up);
}

TEST_F(LinksTest, BadInputGivesClearErrors) {
  auto spec = gateway_spec();
  spec.ifname = "portcullis-link0";  // 16 bytes
  auto too_long = links_->ensure(spec);
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().errno_value(), EINVAL);
  EXPECT_EQ(too_long.error().message(),
            "interface name 'portcullis-link0' is 16 bytes long; the kernel allows at most 15: "
            "Invalid argument");
  EXPECT_EQ(links_->changing_requests(), 0u);

  ASSERT_TRUE(ns_.run("ip link add pclbr type bridge").ok());
  spec = gateway_spec();
  spec.ifname = "pclbr";
  auto other_kind = links_->ensure(spec);
  ASSERT_FALSE(other_kind);
  EXPECT_EQ(other_kind.error().errno_value(), EEXIST);
  EXPECT_EQ(other_kind.error().context(),
            "ensure link 'pclbr': a link of that name exists with kind 'bridge', not '" + kind_ +
                "'; remove it or choose another name");
  EXPECT_NE(link_details("pclbr").find("bridge"), std::string::npos);  // untouched
  EXPECT_EQ(addresses("pclbr"), std::vector<std::string>{});

  spec.ifname = "lo";
  auto loopback = links_->ensure(spec);
  ASSERT_FALSE(loopback);
  EXPECT_EQ(loopback.error().errno_value(), EEXIST);
  EXPECT_NE(loopback.error().context().find("no link kind"), std::string::npos);

  spec = gateway_spec();
  spec.kind = "nosuchkind";
  auto no_kind = links_->ensure(spec);
  ASSERT_FALSE(no_kind);
  EXPECT_EQ(no_kind.error().errno_value(), EOPNOTSUPP);
  EXPECT_NE(no_kind.error().context().find("create link 'pcl0' of kind 'nosuchkind'"),
            std::string::npos)
      << no_kind.error().message();
  EXPECT_NE(no_kind.error().context().find("kernel has no 'nosuchkind' link type"),
            std::string::npos)
      << no_kind.error().message();
  EXPECT_FALSE(ns_.run("ip link show pcl0 2>/dev/null").ok());

  auto absent = links_->read("pcl9");
  ASSERT_FALSE(absent);
  EXPECT_EQ(absent.error().errno_value(), ENODEV);
  EXPECT_EQ(absent.error().message(), "read link 'pcl9': no such link: No such device");
}

TEST_F(LinksTest, WireguardKindWithoutTheModuleSaysSo) {
  if (kernel_has_wireguard()) GTEST_SKIP() << "this kernel has wireguard; see tests/vm";
  auto spec = gateway_spec();
  spec.kind = "wireguard";
  auto r = links_->ensure(spec);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EOPNOTSUPP);
  EXPECT_NE(r.error().context().find("kernel has no 'wireguard' link type; load the wireguard "
                                     "module"),
            std::string::npos)
      << r.error().message();
}

TEST_F(LinksTest, AddressOfAnotherLinkAndRouteCollisionsAreReported) {
  ASSERT_TRUE(links_->ensure(agent_spec()));
  // Someone else's route to the same destination in the main table.
  ASSERT_TRUE(ns_.run("ip link add pcl1 type " + kind_ +
                      " && ip link set pcl1 up && "
                      "ip route add 10.255.0.9/32 dev pcl1")
                  .ok());
  auto spec = agent_spec();
  spec.routes.push_back(prefix("10.255.0.9/32"));
  auto r = links_->ensure(spec);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EEXIST);
  EXPECT_NE(r.error().context().find("add route 10.255.0.9/32 via link 'pcl0'"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().context().find("another route to 10.255.0.9/32 is in the main table"),
            std::string::npos)
      << r.error().message();
}

TEST_F(LinksTest, RemoveDeletesAndToleratesAbsence) {
  ASSERT_TRUE(links_->ensure(agent_spec()));
  ASSERT_TRUE(links_->remove("pcl0")) << "remove";
  EXPECT_FALSE(ns_.run("ip link show pcl0 2>/dev/null").ok());
  EXPECT_EQ(routes("lo"), std::vector<std::string>{});
  auto again = links_->remove("pcl0");
  EXPECT_TRUE(again) << again.error().message();
  auto bad = links_->remove("a/b");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().errno_value(), EINVAL);

  // And ensure() after remove() creates it afresh.
  auto changes = links_->ensure(agent_spec());
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_TRUE(changes->created);
}

}  // namespace
}  // namespace portcullis::link
