#include "dataplane/testing/fake_links.h"

#include <gtest/gtest.h>

namespace portcullis::testing {
namespace {

using link::LinkSpec;

IpPrefix prefix(const char* s) { return *IpPrefix::parse(s); }

LinkSpec gateway() {
  LinkSpec s;
  s.ifname = "pcl0";
  s.mtu = 1420;
  s.addresses = {prefix("10.255.0.1/16")};
  return s;
}

LinkSpec agent() {
  LinkSpec s;
  s.ifname = "pcl0";
  s.addresses = {prefix("10.255.0.7/32")};
  s.routes = {prefix("10.255.0.1/32")};
  return s;
}

TEST(FakeLinks, CreatesLikeTheKernelAndASecondEnsureSendsNothing) {
  FakeLinks links;
  auto c = links.ensure(gateway());
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->to_string(), "created, mtu 1420, +address 10.255.0.1/16, up");
  EXPECT_EQ(links.changing_requests(), 3u);  // create (with MTU), address, up
  EXPECT_EQ(links.to_text(),
            "link pcl0 kind wireguard mtu 1420 up\n"
            "  address 10.255.0.1/16\n"
            "  route 10.255.0.0/16 proto 2\n");
  auto again = links.ensure(gateway());
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->empty());
  EXPECT_EQ(links.changing_requests(), 3u);

  auto st = links.read("pcl0");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->ifindex, 2u);
  EXPECT_EQ(st->kind, "wireguard");
}

TEST(FakeLinks, AgentRouteAndDriftRepair) {
  FakeLinks links;
  ASSERT_TRUE(links.ensure(agent()));
  EXPECT_EQ(links.to_text(),
            "link pcl0 kind wireguard mtu 1420 up\n"
            "  address 10.255.0.7/32\n"
            "  route 10.255.0.1/32 proto 120\n");
  // Someone brings it down: the kernel drops its IPv4 routes with it.
  auto* l = links.find("pcl0");
  ASSERT_NE(l, nullptr);
  l->up = false;
  l->routes.clear();
  l->mtu = 1500;
  auto c = links.ensure(agent());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->to_string(), "up, +route 10.255.0.1/32");  // no MTU in the spec: left alone
  EXPECT_EQ(links.read("pcl0")->routes.size(), 1u);
}

TEST(FakeLinks, DownDropsRoutesAndUpRestoresOnlyKernelPrefixRoutes) {
  FakeLinks links;
  auto spec = gateway();
  spec.routes = {prefix("10.9.0.0/16")};
  ASSERT_TRUE(links.ensure(spec));
  EXPECT_EQ(links.read("pcl0")->routes.size(), 2u);
  spec.up = false;
  spec.routes.clear();
  auto c = links.ensure(spec);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->to_string(), "down");
  EXPECT_TRUE(links.read("pcl0")->routes.empty());
  spec.up = true;
  ASSERT_TRUE(links.ensure(spec));
  EXPECT_EQ(links.to_text(),
            "link pcl0 kind wireguard mtu 1420 up\n"
            "  address 10.255.0.1/16\n"
            "  route 10.255.0.0/16 proto 2\n");
}

TEST(FakeLinks, ErrorsMatchTheNetlinkImplementation) {
  FakeLinks links;
  auto spec = gateway();
  spec.ifname = "portcullis-link0";
  auto r = links.ensure(spec);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EINVAL);

  link::LinkState bridge;
  bridge.ifname = "br0";
  bridge.kind = "bridge";
  bridge.mtu = 1500;
  links.add_link(bridge);
  spec = gateway();
  spec.ifname = "br0";
  r = links.ensure(spec);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EEXIST);
  EXPECT_EQ(r.error().context(),
            "ensure link 'br0': a link of that name exists with kind 'bridge', not 'wireguard'; "
            "remove it or choose another name");

  links.set_kinds({"dummy"});
  r = links.ensure(gateway());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EOPNOTSUPP);
  EXPECT_NE(r.error().context().find("kernel has no 'wireguard' link type"), std::string::npos);
  EXPECT_EQ(links.find("pcl0"), nullptr);

  auto absent = links.read("pcl9");
  ASSERT_FALSE(absent);
  EXPECT_EQ(absent.error().message(), "read link 'pcl9': no such link: No such device");
}

TEST(FakeLinks, RoutesNeedTheLinkUpAndAFreeDestination) {
  FakeLinks links;
  auto spec = agent();
  spec.up = false;
  auto r = links.ensure(spec);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ENETDOWN);

  ASSERT_TRUE(links.ensure(agent()));
  auto other = agent();
  other.ifname = "pcl1";
  other.addresses.clear();
  r = links.ensure(other);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EEXIST);
  EXPECT_NE(r.error().context().find("add route 10.255.0.1/32 via link 'pcl1'"), std::string::npos);
}

TEST(FakeLinks, FailedRequestLeavesEarlierStepsAndTheNextEnsureResumes) {
  FakeLinks links;
  links.fail_request(3, Error::from_errno(EBUSY, ""));  // create, address, >up<
  auto r = links.ensure(agent());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "bring link 'pcl0' up: Device or resource busy");
  EXPECT_EQ(links.to_text(),
            "link pcl0 kind wireguard mtu 1420 down\n"
            "  address 10.255.0.7/32\n");
  auto c = links.ensure(agent());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->to_string(), "up, +route 10.255.0.1/32");

  links.fail_read(1, Error::from_errno(EIO, "read link 'pcl0'"));
  EXPECT_FALSE(links.ensure(agent()));
  EXPECT_TRUE(links.read("pcl0"));
}

TEST(FakeLinks, RemoveToleratesAbsence) {
  FakeLinks links;
  ASSERT_TRUE(links.ensure(agent()));
  EXPECT_TRUE(links.remove("pcl0"));
  EXPECT_EQ(links.to_text(), "");
  EXPECT_TRUE(links.remove("pcl0"));
  EXPECT_FALSE(links.remove("a/b"));
}

}  // namespace
}  // namespace portcullis::testing
