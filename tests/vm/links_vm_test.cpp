// NetlinkLinks creating a real kernel WireGuard link (the host has no wireguard module; run inside
// /work/shared/vm/run):
//
//   pcl-linkvm-<pid>:  pcl0  kind wireguard, mtu 1420, 10.255.0.1/16, up   (the gateway's link)
//                      pcl1  kind wireguard, 10.255.0.7/32, route 10.255.0.1/32   (an agent's)
//
// Checked with `ip -d link`, `ip addr`, `ip route` and `wg show` (generic netlink, so the link is
// a working WireGuard device). The namespace takes the links with it when the test ends.

#include <gtest/gtest.h>

#include <sstream>

#include "dataplane/link/netlink_links.h"
#include "tests/support/netns.h"

namespace portcullis::link {
namespace {

using portcullis::testing::NetnsGuard;
using portcullis::testing::TestNetns;

IpPrefix prefix(const char* s) { return *IpPrefix::parse(s); }

TEST(LinksVm, CreatesWireguardLinksAndConverges) {
  TestNetns ns("linkvm");
  ASSERT_TRUE(ns.ok()) << "cannot create namespace " << ns.name();
  if (!ns.run("ip link add pclwg type wireguard 2>/dev/null && ip link del pclwg").ok()) {
    GTEST_SKIP() << "this kernel has no wireguard module: run inside /work/shared/vm/run";
  }
  std::unique_ptr<NetlinkLinks> links;
  {
    NetnsGuard in(ns);
    ASSERT_TRUE(in.ok());
    auto opened = NetlinkLinks::open();
    ASSERT_TRUE(opened) << opened.error().message();
    links = std::move(*opened);
  }

  LinkSpec gw;
  gw.ifname = "pcl0";
  gw.kind = "wireguard";
  gw.mtu = 1420;
  gw.addresses = {prefix("10.255.0.1/16")};
  auto changes = links->ensure(gw);
  ASSERT_TRUE(changes) << changes.error().message()
                       << " (run this test inside /work/shared/vm/run: the kernel needs wireguard)";
  EXPECT_EQ(changes->to_string(), "created, mtu 1420, +address 10.255.0.1/16, up");

  auto details = ns.run("ip -d link show dev pcl0").out;
  EXPECT_NE(details.find("\n    wireguard "), std::string::npos) << details;
  EXPECT_NE(details.find(" mtu 1420 "), std::string::npos) << details;
  EXPECT_NE(details.find(",UP,"), std::string::npos) << details;
  EXPECT_EQ(ns.run("ip -o addr show dev pcl0 | awk '{print $3, $4}'").out, "inet 10.255.0.1/16\n");
  EXPECT_EQ(ns.run("ip route show table main dev pcl0").out,
            "10.255.0.0/16 proto kernel scope link src 10.255.0.1 \n");
  auto wg = ns.run("wg show pcl0 dump");
  EXPECT_TRUE(wg.ok()) << "wg show pcl0 failed: not a WireGuard device";

  auto st = links->read("pcl0");
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(st->kind, "wireguard");
  EXPECT_EQ(st->mtu, 1420u);
  EXPECT_TRUE(st->up);
  EXPECT_EQ(st->addresses, std::vector<IpPrefix>{prefix("10.255.0.1/16")});

  auto before = links->changing_requests();
  auto again = links->ensure(gw);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE(again->empty()) << again->to_string();
  EXPECT_EQ(links->changing_requests(), before);

  LinkSpec agent;
  agent.ifname = "pcl1";
  agent.kind = "wireguard";
  agent.addresses = {prefix("10.255.0.7/32")};
  agent.routes = {prefix("10.255.1.1/32")};  // 10.255.0.1 is pcl0's own address here
  changes = links->ensure(agent);
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_EQ(changes->to_string(), "created, +address 10.255.0.7/32, up, +route 10.255.1.1/32");
  EXPECT_EQ(ns.run("ip route show table main dev pcl1").out, "10.255.1.1 proto 120 scope link \n");
  EXPECT_NE(ns.run("ip -d link show dev pcl1").out.find(" mtu 1420 "), std::string::npos)
      << "the wireguard default MTU";

  // A kind clash with a real wireguard link.
  LinkSpec clash = gw;
  clash.kind = "dummy";
  auto r = links->ensure(clash);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EEXIST);
  EXPECT_NE(r.error().context().find("exists with kind 'wireguard'"), std::string::npos);

  ASSERT_TRUE(links->remove("pcl0"));
  ASSERT_TRUE(links->remove("pcl1"));
  EXPECT_FALSE(ns.run("ip link show pcl0 2>/dev/null").ok());
  EXPECT_TRUE(links->remove("pcl0"));
}

}  // namespace
}  // namespace portcullis::link
