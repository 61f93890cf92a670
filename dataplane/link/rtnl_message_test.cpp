#include "dataplane/link/rtnl_message.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>

#include <cstring>

namespace portcullis::link::rtnl {
namespace {

// Builds netlink bytes by hand, independently of the code under test: little-endian host, 4-byte
// alignment, lengths written last.
class Raw {
 public:
  template <class T>
  Raw& put(const T& v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof v);
    return *this;
  }
  Raw& put_bytes(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    bytes_.insert(bytes_.end(), p, p + n);
    return *this;
  }
  Raw& pad() {
    while (bytes_.size() % 4) bytes_.push_back(0);
    return *this;
  }
  Raw& attr(std::uint16_t type, const void* data, std::size_t n) {
    std::uint16_t len = static_cast<std::uint16_t>(4 + n);
    put(len).put(type).put_bytes(data, n).pad();
    return *this;
  }
  Raw& attr_u32(std::uint16_t type, std::uint32_t v) { return attr(type, &v, 4); }
  Raw& attr_str(std::uint16_t type, const char* s) { return attr(type, s, std::strlen(s) + 1); }
  // Nested attributes carry NLA_F_NESTED, as libmnl and the kernel's own builders set it.
  Raw& nest(std::uint16_t type, const Raw& inner) {
    return attr(type | NLA_F_NESTED, inner.bytes_.data(), inner.bytes_.size());
  }
  // Fills in nlmsg_len of a message that starts at `at`.
  Raw& close_message(std::size_t at = 0) {
    std::uint32_t len = static_cast<std::uint32_t>(bytes_.size() - at);
    std::memcpy(bytes_.data() + at, &len, 4);
    return *this;
  }
  std::size_t size() const { return bytes_.size(); }
  const std::vector<std::uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
};

nlmsghdr header(std::uint16_t type, std::uint16_t flags, std::uint32_t seq, std::uint32_t pid = 0) {
  nlmsghdr h{};
  h.nlmsg_type = type;
  h.nlmsg_flags = flags;
  h.nlmsg_seq = seq;
  h.nlmsg_pid = pid;
  return h;
}

ifinfomsg ifinfo(int index, unsigned flags = 0, unsigned change = 0) {
  ifinfomsg i{};
  i.ifi_family = AF_UNSPEC;
  i.ifi_index = index;
  i.ifi_flags = flags;
  i.ifi_change = change;
  return i;
}

constexpr std::uint16_t kReq = NLM_F_REQUEST | NLM_F_ACK;

IpPrefix prefix(const char* s) { return *IpPrefix::parse(s); }

// ---- builders ----

TEST(RtnlBuild, GetLinkByName) {
  Raw want;
  want.put(header(RTM_GETLINK, kReq, 7))
      .put(ifinfo(0))
      .attr_str(IFLA_IFNAME, "pcl0")
      .close_message();
  EXPECT_EQ(get_link(7, "pcl0"), want.bytes());
}

TEST(RtnlBuild, NewLinkWithKindAndMtu) {
  Raw info;
  info.attr_str(IFLA_INFO_KIND, "wireguard");
  Raw want;
  want.put(header(RTM_NEWLINK, kReq | NLM_F_CREATE | NLM_F_EXCL, 8))
      .put(ifinfo(0))
      .attr_str(IFLA_IFNAME, "pcl0")
      .attr_u32(IFLA_MTU, 1420)
      .nest(IFLA_LINKINFO, info)
      .close_message();
  EXPECT_EQ(new_link(8, "pcl0", "wireguard", 1420), want.bytes());
}

TEST(RtnlBuild, NewLinkWithoutMtu) {
  Raw info;
  info.attr_str(IFLA_INFO_KIND, "dummy");
  Raw want;
  want.put(header(RTM_NEWLINK, kReq | NLM_F_CREATE | NLM_F_EXCL, 9))
      .put(ifinfo(0))
      .attr_str(IFLA_IFNAME, "pcl-a-1234567")
      .nest(IFLA_LINKINFO, info)
      .close_message();
  EXPECT_EQ(new_link(9, "pcl-a-1234567", "dummy", std::nullopt), want.bytes());
}

TEST(RtnlBuild, SetMtuUpDownAndDelete) {
  Raw mtu;
  mtu.put(header(RTM_NEWLINK, kReq, 1)).put(ifinfo(42)).attr_u32(IFLA_MTU, 1380).close_message();
  EXPECT_EQ(set_link_mtu(1, 42, 1380), mtu.bytes());

  Raw up;
  up.put(header(RTM_NEWLINK, kReq, 2)).put(ifinfo(42, IFF_UP, IFF_UP)).close_message();
  EXPECT_EQ(set_link_up(2, 42, true), up.bytes());

  Raw down;
  down.put(header(RTM_NEWLINK, kReq, 3)).put(ifinfo(42, 0, IFF_UP)).close_message();
  EXPECT_EQ(set_link_up(3, 42, false), down.bytes());

  Raw del;
  del.put(header(RTM_DELLINK, kReq, 4))
      .put(ifinfo(0))
      .attr_str(IFLA_IFNAME, "pcl0")
      .close_message();
  EXPECT_EQ(del_link(4, "pcl0"), del.bytes());
}

TEST(RtnlBuild, AddAndRemoveIpv4Address) {
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  ifa.ifa_prefixlen = 16;
  ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  ifa.ifa_index = 5;
  std::uint8_t addr[4] = {10, 255, 0, 1};
  Raw add;
  add.put(header(RTM_NEWADDR, kReq | NLM_F_CREATE | NLM_F_EXCL, 11))
      .put(ifa)
      .attr(IFA_LOCAL, addr, 4)
      .attr(IFA_ADDRESS, addr, 4)
      .close_message();
  EXPECT_EQ(new_address(11, 5, prefix("10.255.0.1/16")), add.bytes());

  Raw del;
  del.put(header(RTM_DELADDR, kReq, 12))
      .put(ifa)
      .attr(IFA_LOCAL, addr, 4)
      .attr(IFA_ADDRESS, addr, 4)
      .close_message();
  EXPECT_EQ(del_address(12, 5, prefix("10.255.0.1/16")), del.bytes());
}

TEST(RtnlBuild, AddIpv6Address) {
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET6;
  ifa.ifa_prefixlen = 64;
  ifa.ifa_index = 3;
  in6_addr a;
  inet_pton(AF_INET6, "fd00::7", &a);
  Raw want;
  want.put(header(RTM_NEWADDR, kReq | NLM_F_CREATE | NLM_F_EXCL, 1))
      .put(ifa)
      .attr(IFA_LOCAL, &a, 16)
      .attr(IFA_ADDRESS, &a, 16)
      .close_message();
  EXPECT_EQ(new_address(1, 3, prefix("fd00::7/64")), want.bytes());
}

TEST(RtnlBuild, RouteIsMaskedScopeLinkInMainTable) {
  rtmsg rtm{};
  rtm.rtm_family = AF_INET;
  rtm.rtm_dst_len = 24;
  rtm.rtm_table = RT_TABLE_MAIN;
  rtm.rtm_protocol = 120;
  rtm.rtm_scope = RT_SCOPE_LINK;
  rtm.rtm_type = RTN_UNICAST;
  std::uint8_t dst[4] = {10, 255, 1, 0};
  Raw add;
  add.put(header(RTM_NEWROUTE, kReq | NLM_F_CREATE | NLM_F_EXCL, 21))
      .put(rtm)
      .attr(RTA_DST, dst, 4)
      .attr_u32(RTA_OIF, 9)
      .close_message();
  EXPECT_EQ(new_route(21, 9, prefix("10.255.1.77/24"), 120), add.bytes());

  Raw del;
  del.put(header(RTM_DELROUTE, kReq, 22))
      .put(rtm)
      .attr(RTA_DST, dst, 4)
      .attr_u32(RTA_OIF, 9)
      .close_message();
  EXPECT_EQ(del_route(22, 9, prefix("10.255.1.0/24"), 120), del.bytes());
}

TEST(RtnlBuild, Dumps) {
  Raw addrs;
  addrs.put(header(RTM_GETADDR, kReq | NLM_F_DUMP, 5)).put(ifaddrmsg{}).close_message();
  EXPECT_EQ(dump_addresses(5), addrs.bytes());
  Raw routes;
  routes.put(header(RTM_GETROUTE, kReq | NLM_F_DUMP, 6)).put(rtmsg{}).close_message();
  EXPECT_EQ(dump_routes(6), routes.bytes());
}

// ---- parsers ----

Raw link_reply(const char* name, const char* kind, std::uint32_t mtu, unsigned flags = IFF_UP) {
  Raw r;
  r.put(header(RTM_NEWLINK, 0, 1, 99)).put(ifinfo(17, flags)).attr_str(IFLA_IFNAME, name);
  r.attr_u32(IFLA_MTU, mtu);
  if (kind) {
    Raw info;
    info.attr_str(IFLA_INFO_KIND, kind);
    r.nest(IFLA_LINKINFO, info);
  }
  r.close_message();
  return r;
}

TEST(RtnlParse, Link) {
  auto l = parse_link(link_reply("pcl0", "wireguard", 1420).bytes());
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->ifindex, 17u);
  EXPECT_EQ(l->ifname, "pcl0");
  EXPECT_EQ(l->kind, "wireguard");
  EXPECT_EQ(l->mtu, 1420u);
  EXPECT_TRUE(l->flags & IFF_UP);

  auto lo = parse_link(link_reply("lo", nullptr, 65536, 0).bytes());
  ASSERT_TRUE(lo);
  EXPECT_EQ(lo->kind, "");
  EXPECT_FALSE(lo->flags & IFF_UP);
}

TEST(RtnlParse, LinkSkipsUnknownAttributes) {
  Raw r;
  std::uint8_t junk[7] = {1, 2, 3, 4, 5, 6, 7};
  r.put(header(RTM_NEWLINK, 0, 1)).put(ifinfo(3)).attr(999, junk, 7).attr_str(IFLA_IFNAME, "x");
  r.close_message();
  auto l = parse_link(r.bytes());
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->ifname, "x");
}

TEST(RtnlParse, TruncatedLinkIsAnErrorAtEveryLength) {
  auto full = link_reply("pcl0", "wireguard", 1420).bytes();
  // Cut the message at every length, keeping nlmsg_len as sent: the claimed length overruns.
  for (std::size_t n = 0; n < full.size(); ++n) {
    std::vector<std::uint8_t> cut(full.begin(), full.begin() + n);
    auto l = parse_link(cut);
    EXPECT_FALSE(l) << "cut at " << n;
    if (!l) {
      EXPECT_EQ(l.error().errno_value(), EPROTO);
    }
  }
  // Cut with nlmsg_len rewritten to match: attributes overrun or go missing.
  for (std::size_t n = sizeof(nlmsghdr); n < full.size(); ++n) {
    std::vector<std::uint8_t> cut(full.begin(), full.begin() + n);
    std::uint32_t len = static_cast<std::uint32_t>(n);
    std::memcpy(cut.data(), &len, 4);
    auto l = parse_link(cut);
    if (l) {
      // Only cuts between whole attributes after the name can parse, and then say less.
      EXPECT_EQ(l->ifname, "pcl0") << "cut at " << n;
    }
  }
}

TEST(RtnlParse, CorruptedLinkAttributes) {
  {
    Raw r;  // attribute length larger than the message
    r.put(header(RTM_NEWLINK, 0, 1)).put(ifinfo(3)).put(std::uint16_t{200}).put(std::uint16_t{3});
    r.close_message();
    auto l = parse_link(r.bytes());
    ASSERT_FALSE(l);
    EXPECT_NE(l.error().context().find("attribute 3 has length 200"), std::string::npos)
        << l.error().context();
  }
  {
    Raw r;  // attribute length below its own header
    r.put(header(RTM_NEWLINK, 0, 1)).put(ifinfo(3)).put(std::uint16_t{2}).put(std::uint16_t{3});
    r.close_message();
    EXPECT_FALSE(parse_link(r.bytes()));
  }
  {
    Raw r;  // name without its NUL
    r.put(header(RTM_NEWLINK, 0, 1)).put(ifinfo(3)).attr(IFLA_IFNAME, "pcl0", 4).close_message();
    auto l = parse_link(r.bytes());
    ASSERT_FALSE(l);
    EXPECT_NE(l.error().context().find("NUL"), std::string::npos);
  }
  {
    Raw r;  // MTU of 2 bytes
    std::uint16_t small = 1420;
    r.put(header(RTM_NEWLINK, 0, 1)).put(ifinfo(3)).attr_str(IFLA_IFNAME, "a");
    r.attr(IFLA_MTU, &small, 2).close_message();
    EXPECT_FALSE(parse_link(r.bytes()));
  }
  {
    Raw info;  // nested kind overruns the nest
    info.put(std::uint16_t{40}).put(std::uint16_t{IFLA_INFO_KIND}).put_bytes("wg\0\0", 4);
    Raw r;
    r.put(header(RTM_NEWLINK, 0, 1)).put(ifinfo(3)).attr_str(IFLA_IFNAME, "a");
    r.nest(IFLA_LINKINFO, info).close_message();
    EXPECT_FALSE(parse_link(r.bytes()));
  }
  {
    Raw r;  // no name at all
    r.put(header(RTM_NEWLINK, 0, 1)).put(ifinfo(3)).attr_u32(IFLA_MTU, 1500).close_message();
    EXPECT_FALSE(parse_link(r.bytes()));
  }
  {
    Raw r;  // wrong message type
    r.put(header(RTM_NEWADDR, 0, 1)).put(ifinfo(3)).attr_str(IFLA_IFNAME, "a").close_message();
    EXPECT_FALSE(parse_link(r.bytes()));
  }
}

Raw address_reply(int family, const void* addr, std::uint8_t prefixlen, std::uint32_t index,
                  bool with_local = true) {
  ifaddrmsg ifa{};
  ifa.ifa_family = static_cast<std::uint8_t>(family);
  ifa.ifa_prefixlen = prefixlen;
  ifa.ifa_index = index;
  std::size_t n = family == AF_INET ? 4 : 16;
  Raw r;
  r.put(header(RTM_NEWADDR, NLM_F_MULTI, 1)).put(ifa).attr(IFA_ADDRESS, addr, n);
  if (with_local) r.attr(IFA_LOCAL, addr, n);
  r.attr_str(IFA_LABEL, "pcl0").close_message();
  return r;
}

TEST(RtnlParse, Addresses) {
  std::uint8_t v4[4] = {10, 255, 0, 7};
  auto a = parse_address(address_reply(AF_INET, v4, 32, 4).bytes());
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->ifindex, 4u);
  EXPECT_EQ(a->prefix, prefix("10.255.0.7/32"));

  in6_addr v6;
  inet_pton(AF_INET6, "fe80::1", &v6);
  auto b = parse_address(address_reply(AF_INET6, &v6, 64, 4, false).bytes());
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->prefix, prefix("fe80::1/64"));
}

TEST(RtnlParse, CorruptedAddresses) {
  std::uint8_t v4[4] = {10, 255, 0, 7};
  // IPv4 family with a 16-byte address.
  {
    in6_addr v6{};
    ifaddrmsg ifa{};
    ifa.ifa_family = AF_INET;
    ifa.ifa_prefixlen = 32;
    Raw r;
    r.put(header(RTM_NEWADDR, 0, 1)).put(ifa).attr(IFA_LOCAL, &v6, 16).close_message();
    EXPECT_FALSE(parse_address(r.bytes()));
  }
  // Prefix length beyond the family's width.
  EXPECT_FALSE(parse_address(address_reply(AF_INET, v4, 33, 1).bytes()));
  // Unknown family.
  std::uint8_t sixteen[16] = {};
  EXPECT_FALSE(parse_address(address_reply(AF_PACKET, sixteen, 8, 1).bytes()));
  // No address attribute.
  {
    ifaddrmsg ifa{};
    ifa.ifa_family = AF_INET;
    Raw r;
    r.put(header(RTM_NEWADDR, 0, 1)).put(ifa).close_message();
    EXPECT_FALSE(parse_address(r.bytes()));
  }
  // Every truncation.
  auto full = address_reply(AF_INET, v4, 16, 1).bytes();
  for (std::size_t n = 0; n < full.size(); ++n) {
    std::vector<std::uint8_t> cut(full.begin(), full.begin() + n);
    EXPECT_FALSE(parse_address(cut)) << n;
  }
}

TEST(RtnlParse, Routes) {
  rtmsg rtm{};
  rtm.rtm_family = AF_INET;
  rtm.rtm_dst_len = 32;
  rtm.rtm_table = RT_TABLE_MAIN;
  rtm.rtm_protocol = 120;
  rtm.rtm_scope = RT_SCOPE_LINK;
  rtm.rtm_type = RTN_UNICAST;
  std::uint8_t dst[4] = {10, 255, 0, 1};
  Raw r;
  r.put(header(RTM_NEWROUTE, NLM_F_MULTI, 1))
      .put(rtm)
      .attr_u32(RTA_TABLE, RT_TABLE_MAIN)
      .attr(RTA_DST, dst, 4)
      .attr_u32(RTA_OIF, 6)
      .close_message();
  auto route = parse_route(r.bytes());
  ASSERT_TRUE(route) << route.error().message();
  EXPECT_EQ(route->destination, prefix("10.255.0.1/32"));
  EXPECT_EQ(route->oif, 6u);
  EXPECT_EQ(route->table, static_cast<std::uint32_t>(RT_TABLE_MAIN));
  EXPECT_EQ(route->protocol, 120);
  EXPECT_EQ(route->type, RTN_UNICAST);

  // A default route has no RTA_DST.
  rtm.rtm_dst_len = 0;
  Raw def;
  def.put(header(RTM_NEWROUTE, NLM_F_MULTI, 1)).put(rtm).attr_u32(RTA_OIF, 2).close_message();
  auto d = parse_route(def.bytes());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->destination, prefix("0.0.0.0/0"));

  // Table ids above 255 come only in RTA_TABLE.
  rtm.rtm_table = RT_TABLE_COMPAT;
  Raw big;
  big.put(header(RTM_NEWROUTE, 0, 1)).put(rtm).attr_u32(RTA_TABLE, 1000).close_message();
  ASSERT_TRUE(parse_route(big.bytes()));
  EXPECT_EQ(parse_route(big.bytes())->table, 1000u);

  // Corrupted: RTA_OIF of 1 byte, and every truncation of the first reply.
  Raw bad;
  std::uint8_t one = 1;
  bad.put(header(RTM_NEWROUTE, 0, 1)).put(rtm).attr(RTA_OIF, &one, 1).close_message();
  EXPECT_FALSE(parse_route(bad.bytes()));
  for (std::size_t n = 0; n < r.size(); ++n) {
    std::vector<std::uint8_t> cut(r.bytes().begin(), r.bytes().begin() + n);
    EXPECT_FALSE(parse_route(cut)) << n;
  }
}

// ---- reply reader ----

Raw ack(std::uint32_t seq, int error, std::uint32_t pid = 99, const char* ext = nullptr) {
  Raw r;
  std::uint16_t flags = NLM_F_CAPPED | (ext ? NLM_F_ACK_TLVS : 0);
  r.put(header(NLMSG_ERROR, flags, seq, pid));
  nlmsgerr e{};
  e.error = error;
  e.msg = header(RTM_NEWLINK, kReq, seq, pid);
  e.msg.nlmsg_len = 64;  // the original request's length; its body is not echoed (capped)
  r.put(e);
  if (ext) r.attr_str(NLMSGERR_ATTR_MSG, ext);
  r.close_message();
  return r;
}

Raw done(std::uint32_t seq, int error = 0, std::uint32_t pid = 99) {
  Raw r;
  r.put(header(NLMSG_DONE, NLM_F_MULTI, seq, pid)).put(error).close_message();
  return r;
}

ReplyReader::OnMessage collect(std::vector<std::size_t>* sizes) {
  return [sizes](std::span<const std::uint8_t> m) -> Status {
    sizes->push_back(m.size());
    return {};
  };
}

TEST(RtnlReply, AckEndsTheReply) {
  ReplyReader reader(5, 99);
  std::vector<std::size_t> seen;
  auto r = reader.feed(ack(5, 0).bytes(), collect(&seen));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(*r);
  EXPECT_TRUE(seen.empty());
}

TEST(RtnlReply, ErrorCarriesErrnoAndExtendedAck) {
  ReplyReader reader(5, 99);
  std::vector<std::size_t> seen;
  auto r = reader.feed(ack(5, -EOPNOTSUPP, 99, "Unknown device type").bytes(), collect(&seen));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EOPNOTSUPP);
  EXPECT_EQ(r.error().context(), "Unknown device type");

  ReplyReader plain(6, 99);
  auto p = plain.feed(ack(6, -ENODEV).bytes(), collect(&seen));
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().errno_value(), ENODEV);
  EXPECT_EQ(p.error().context(), "");
}

TEST(RtnlReply, UncappedErrorSkipsTheEchoedRequest) {
  Raw r;
  r.put(header(NLMSG_ERROR, NLM_F_ACK_TLVS, 3, 99));
  nlmsgerr e{};
  e.error = -EEXIST;
  e.msg = header(RTM_NEWADDR, kReq, 3);
  e.msg.nlmsg_len = sizeof(nlmsghdr) + 8;
  r.put(e).put(std::uint64_t{0x1111111111111111});  // the echoed request body
  r.attr_str(NLMSGERR_ATTR_MSG, "address exists").close_message();
  ReplyReader reader(3, 99);
  std::vector<std::size_t> seen;
  auto res = reader.feed(r.bytes(), collect(&seen));
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().errno_value(), EEXIST);
  EXPECT_EQ(res.error().context(), "address exists");
}

TEST(RtnlReply, DumpAcrossDatagramsSkipsOtherSequences) {
  ReplyReader reader(10, 99);
  std::vector<std::size_t> seen;
  // First datagram: a stale ACK of an earlier request, then two messages of ours.
  Raw d1;
  auto stale = ack(9, -EEXIST);
  auto first = link_reply("a", "dummy", 1500);
  auto second = link_reply("bb", "dummy", 1500);
  for (const Raw* part : {&stale, &first, &second}) {
    d1.put_bytes(part->bytes().data(), part->size());
  }
  // Give them our sequence number and port.
  std::vector<std::uint8_t> bytes = d1.bytes();
  std::size_t off = stale.size();
  while (off < bytes.size()) {
    auto* h = reinterpret_cast<nlmsghdr*>(bytes.data() + off);
    h->nlmsg_seq = 10;
    h->nlmsg_pid = 99;
    h->nlmsg_flags |= NLM_F_MULTI;
    off += NLMSG_ALIGN(h->nlmsg_len);
  }
  auto r1 = reader.feed(bytes, collect(&seen));
  ASSERT_TRUE(r1) << r1.error().message();
  EXPECT_FALSE(*r1);
  EXPECT_EQ(seen.size(), 2u);
  auto r2 = reader.feed(done(10).bytes(), collect(&seen));
  ASSERT_TRUE(r2);
  EXPECT_TRUE(*r2);
  EXPECT_FALSE(reader.interrupted());
}

TEST(RtnlReply, InterruptedDumpIsReported) {
  ReplyReader reader(4, 99);
  std::vector<std::size_t> seen;
  auto d = done(4).bytes();
  reinterpret_cast<nlmsghdr*>(d.data())->nlmsg_flags |= NLM_F_DUMP_INTR;
  ASSERT_TRUE(reader.feed(d, collect(&seen)));
  EXPECT_TRUE(reader.interrupted());
}

TEST(RtnlReply, DumpErrorInDone) {
  ReplyReader reader(4, 99);
  std::vector<std::size_t> seen;
  auto r = reader.feed(done(4, -EMSGSIZE).bytes(), collect(&seen));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EMSGSIZE);
}

TEST(RtnlReply, CallbackErrorIsReturnedAfterTheWholeReply) {
  ReplyReader reader(1, 99);
  int calls = 0;
  auto failing = [&](std::span<const std::uint8_t>) -> Status {
    ++calls;
    return fail_errno(EPROTO, "bad message");
  };
  auto msg = link_reply("a", "dummy", 1500);
  auto r1 = reader.feed(msg.bytes(), failing);
  ASSERT_TRUE(r1);
  EXPECT_FALSE(*r1);
  auto r2 = reader.feed(msg.bytes(), failing);
  ASSERT_TRUE(r2);
  auto r3 = reader.feed(done(1).bytes(), failing);
  ASSERT_FALSE(r3);
  EXPECT_EQ(r3.error().context(), "bad message");
  EXPECT_EQ(calls, 1);  // later messages are drained, not handed on
}

TEST(RtnlReply, TruncatedDatagramsAreErrors) {
  auto full = ack(1, -EINVAL, 99, "some message").bytes();
  for (std::size_t n = 1; n < full.size(); ++n) {
    ReplyReader reader(1, 99);
    std::vector<std::uint8_t> cut(full.begin(), full.begin() + n);
    auto r = reader.feed(cut, [](std::span<const std::uint8_t>) -> Status { return {}; });
    EXPECT_FALSE(r && *r) << "cut at " << n;
  }
  // A header whose length is below the header size.
  Raw tiny;
  tiny.put(header(RTM_NEWLINK, 0, 1, 99));
  std::vector<std::uint8_t> b = tiny.bytes();
  std::uint32_t len = 4;
  std::memcpy(b.data(), &len, 4);
  ReplyReader reader(1, 99);
  EXPECT_FALSE(reader.feed(b, [](std::span<const std::uint8_t>) -> Status { return {}; }));
}

TEST(RtnlReply, ErrorWithTruncatedExtAckStillGivesErrno) {
  auto full = ack(1, -EINVAL, 99, "some message").bytes();
  // Cut the ext-ack string's attribute in half but keep nlmsg_len consistent.
  std::vector<std::uint8_t> cut(full.begin(), full.end() - 8);
  std::uint32_t len = static_cast<std::uint32_t>(cut.size());
  std::memcpy(cut.data(), &len, 4);
  ReplyReader reader(1, 99);
  auto r = reader.feed(cut, [](std::span<const std::uint8_t>) -> Status { return {}; });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EINVAL);
}

}  // namespace
}  // namespace portcullis::link::rtnl
