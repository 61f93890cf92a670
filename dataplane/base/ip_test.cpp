#include "dataplane/base/ip.h"

#include <gtest/gtest.h>

namespace portcullis {
namespace {

TEST(IpPrefix, ParsesBothFamilies) {
  auto p = IpPrefix::parse("10.255.0.7/32");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->is_host());
  EXPECT_EQ(p->to_string(), "10.255.0.7/32");
  auto q = IpPrefix::parse("fd00::1/64");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->family(), AF_INET6);
  EXPECT_EQ(q->masked().to_string(), "fd00::/64");
  EXPECT_EQ(IpPrefix::parse("10.0.0.1")->cidr(), 32);
}

TEST(IpPrefix, RejectsBadInput) {
  for (const char* bad : {"10.0.0.1/33", "10.0.0.1/", "10.0.0.1/3x", "10.0.0/8", "::1/129", "",
                          "10.0.0.1/-1", "hello/8"}) {
    EXPECT_FALSE(IpPrefix::parse(bad)) << bad;
  }
}

TEST(IpPrefix, MasksAndContains) {
  auto p = *IpPrefix::parse("10.255.13.7/16");
  EXPECT_EQ(p.masked().to_string(), "10.255.0.0/16");
  EXPECT_TRUE(p.contains(*IpAddress::parse("10.255.200.1")));
  EXPECT_FALSE(p.contains(*IpAddress::parse("10.254.0.1")));
  EXPECT_FALSE(p.contains(*IpAddress::parse("::1")));
  auto odd = *IpPrefix::parse("10.0.0.255/25");
  EXPECT_EQ(odd.masked().to_string(), "10.0.0.128/25");
  EXPECT_EQ(IpPrefix::parse("1.2.3.4/0")->masked().to_string(), "0.0.0.0/0");
}

TEST(Endpoint, ParsesAndFormats) {
  auto e = Endpoint::parse("192.0.2.1:30000");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->port(), 30000);
  EXPECT_EQ(e->to_string(), "192.0.2.1:30000");
  auto e6 = Endpoint::parse("[2001:db8::1]:51820");
  ASSERT_TRUE(e6);
  EXPECT_EQ(e6->to_string(), "[2001:db8::1]:51820");
  sockaddr_storage ss;
  auto len = e6->to_sockaddr(&ss);
  auto back = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, *e6);
}

TEST(Endpoint, RejectsBadInput) {
  for (const char* bad : {"192.0.2.1", "192.0.2.1:0", "192.0.2.1:65536", "2001:db8::1:80",
                          "[2001:db8::1]", "host.example:80", ":80", "1.2.3.4:8a"}) {
    EXPECT_FALSE(Endpoint::parse(bad)) << bad;
  }
  EXPECT_FALSE(Endpoint::from_sockaddr(nullptr, 0));
}

}  // namespace
}  // namespace portcullis
