#include "dataplane/link/rtnl_message.h"

#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>

#include <cassert>
#include <cstring>

namespace portcullis::link::rtnl {

namespace {

// Requests here carry at most a name, a kind and two addresses: far below this.
constexpr std::size_t kRequestBufferSize = 512;

class Builder {
 public:
  Builder(std::uint16_t type, std::uint16_t flags, std::uint32_t seq) : buf_(kRequestBufferSize) {
    nlh_ = mnl_nlmsg_put_header(buf_.data());
    nlh_->nlmsg_type = type;
    nlh_->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    nlh_->nlmsg_seq = seq;
  }

  template <class Header>
  Header* header() {
    return static_cast<Header*>(mnl_nlmsg_put_extra_header(nlh_, sizeof(Header)));
  }
  void put(std::uint16_t type, std::size_t len, const void* data) {
    [[maybe_unused]] bool ok = mnl_attr_put_check(nlh_, buf_.size(), type, len, data);
    assert(ok);
  }
  void put_u32(std::uint16_t type, std::uint32_t v) { put(type, sizeof v, &v); }
  void put_strz(std::uint16_t type, std::string_view s) {
    std::string z(s);  // with its NUL
    put(type, z.size() + 1, z.c_str());
  }
  nlattr* nest_start(std::uint16_t type) {
    nlattr* a = mnl_attr_nest_start_check(nlh_, buf_.size(), type);
    assert(a);
    return a;
  }
  void nest_end(nlattr* a) { mnl_attr_nest_end(nlh_, a); }

  Message finish() && {
    buf_.resize(nlh_->nlmsg_len);
    return std::move(buf_);
  }

 private:
  Message buf_;  // zeroed: padding bytes are zero
  nlmsghdr* nlh_;
};

Builder link_request(std::uint16_t type, std::uint16_t flags, std::uint32_t seq,
                     std::uint32_t ifindex, ifinfomsg** out = nullptr) {
  Builder b(type, flags, seq);
  auto* ifi = b.header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = static_cast<int>(ifindex);
  if (out) *out = ifi;
  return b;
}

Message address_request(std::uint16_t type, std::uint16_t flags, std::uint32_t seq,
                        std::uint32_t ifindex, const IpPrefix& p) {
  Builder b(type, flags, seq);
  auto* ifa = b.header<ifaddrmsg>();
  ifa->ifa_family = static_cast<std::uint8_t>(p.family());
  ifa->ifa_prefixlen = static_cast<std::uint8_t>(p.cidr());
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = ifindex;
  b.put(IFA_LOCAL, p.address().size(), p.address().data());
  b.put(IFA_ADDRESS, p.address().size(), p.address().data());
  return std::move(b).finish();
}

Message route_request(std::uint16_t type, std::uint16_t flags, std::uint32_t seq,
                      std::uint32_t ifindex, const IpPrefix& destination, std::uint8_t protocol) {
  IpPrefix dst = destination.masked();
  Builder b(type, flags, seq);
  auto* rtm = b.header<rtmsg>();
  rtm->rtm_family = static_cast<std::uint8_t>(dst.family());
  rtm->rtm_dst_len = static_cast<std::uint8_t>(dst.cidr());
  rtm->rtm_table = RT_TABLE_MAIN;
  rtm->rtm_protocol = protocol;
  rtm->rtm_scope = RT_SCOPE_LINK;
  rtm->rtm_type = RTN_UNICAST;
  b.put(RTA_DST, dst.address().size(), dst.address().data());
  b.put_u32(RTA_OIF, ifindex);
  return std::move(b).finish();
}

// ---- parsing ----

Error malformed(const char* what, const std::string& detail) {
  return Error::protocol(std::string("malformed ") + what + " message: " + detail);
}

// The nlmsghdr of a message and its fixed header, checked against the bytes available.
template <class Header>
Result<const nlmsghdr*> checked_message(std::span<const std::uint8_t> m, std::uint16_t type,
                                        const char* what) {
  if (m.size() < sizeof(nlmsghdr)) return fail(malformed(what, "shorter than a netlink header"));
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(m.data());
  if (nlh->nlmsg_len > m.size() || nlh->nlmsg_len < sizeof(nlmsghdr)) {
    return fail(malformed(what, "length " + std::to_string(nlh->nlmsg_len) + " but " +
                                    std::to_string(m.size()) + " bytes received"));
  }
  if (nlh->nlmsg_type != type) {
    return fail(malformed(what, "unexpected type " + std::to_string(nlh->nlmsg_type)));
  }
  if (nlh->nlmsg_len < NLMSG_SPACE(sizeof(Header))) {
    return fail(malformed(what, "truncated before its attributes"));
  }
  return nlh;
}

// Calls f(attr) for each attribute in [begin, end). An attribute shorter than its header or longer
// than what is left is an error (libmnl's iterator would silently stop there).
template <class F>
Status for_each_attr(const std::uint8_t* begin, const std::uint8_t* end, const char* what, F&& f) {
  const std::uint8_t* p = begin;
  while (p < end) {
    std::size_t left = static_cast<std::size_t>(end - p);
    if (left < sizeof(nlattr)) return fail(malformed(what, "truncated attribute header"));
    const auto* a = reinterpret_cast<const nlattr*>(p);
    if (a->nla_len < sizeof(nlattr) || a->nla_len > left) {
      return fail(malformed(what, "attribute " + std::to_string(a->nla_type & NLA_TYPE_MASK) +
                                      " has length " + std::to_string(a->nla_len) + " with " +
                                      std::to_string(left) + " bytes left"));
    }
    if (auto s = f(a); !s) return s;
    std::size_t step = MNL_ALIGN(a->nla_len);
    if (step >= left) break;
    p += step;
  }
  return {};
}

template <class F>
Status for_each_attr(const nlmsghdr* nlh, std::size_t header_len, const char* what, F&& f) {
  const auto* base = reinterpret_cast<const std::uint8_t*>(nlh);
  return for_each_attr(base + NLMSG_SPACE(header_len), base + nlh->nlmsg_len, what,
                       std::forward<F>(f));
}

std::size_t payload_len(const nlattr* a) { return a->nla_len - sizeof(nlattr); }
const std::uint8_t* payload(const nlattr* a) {
  return reinterpret_cast<const std::uint8_t*>(a) + MNL_ATTR_HDRLEN;
}

Result<std::uint32_t> attr_u32(const nlattr* a, const char* what) {
  if (payload_len(a) != sizeof(std::uint32_t)) {
    return fail(malformed(what, "attribute " + std::to_string(a->nla_type & NLA_TYPE_MASK) +
                                    " is not a 32-bit value"));
  }
  std::uint32_t v;
  std::memcpy(&v, payload(a), sizeof v);
  return v;
}

Result<std::string> attr_string(const nlattr* a, const char* what) {
  const auto* s = reinterpret_cast<const char*>(payload(a));
  std::size_t n = strnlen(s, payload_len(a));
  if (n == payload_len(a)) {
    return fail(malformed(what, "attribute " + std::to_string(a->nla_type & NLA_TYPE_MASK) +
                                    " is not NUL-terminated"));
  }
  return std::string(s, n);
}

Result<IpAddress> attr_address(const nlattr* a, int family, const char* what) {
  std::size_t want = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
  if (want == 0 || payload_len(a) != want) {
    return fail(malformed(what, "address attribute of " + std::to_string(payload_len(a)) +
                                    " bytes for family " + std::to_string(family)));
  }
  if (family == AF_INET) {
    in_addr v4;
    std::memcpy(&v4, payload(a), 4);
    return IpAddress::v4(v4);
  }
  in6_addr v6;
  std::memcpy(&v6, payload(a), 16);
  return IpAddress::v6(v6);
}

// Finds NLMSGERR_ATTR_MSG among the extended ACK attributes in [begin, end); empty if none or if
// they are malformed (the errno is what matters then).
std::string ext_ack_message(const std::uint8_t* begin, const std::uint8_t* end) {
  std::string msg;
  (void)for_each_attr(begin, end, "extended ACK", [&](const nlattr* a) -> Status {
    if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      if (auto s = attr_string(a, "extended ACK")) msg = *s;
    }
    return {};
  });
  return msg;
}

}  // namespace

Message get_link(std::uint32_t seq, std::string_view ifname) {
  Builder b = link_request(RTM_GETLINK, 0, seq, 0);
  b.put_strz(IFLA_IFNAME, ifname);
  return std::move(b).finish();
}

Message new_link(std::uint32_t seq, std::string_view ifname, std::string_view kind,
                 std::optional<std::uint32_t> mtu) {
  Builder b = link_request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq, 0);
  b.put_strz(IFLA_IFNAME, ifname);
  if (mtu) b.put_u32(IFLA_MTU, *mtu);
  nlattr* info = b.nest_start(IFLA_LINKINFO);
  b.put_strz(IFLA_INFO_KIND, kind);
  b.nest_end(info);
  return std::move(b).finish();
}

Message set_link_mtu(std::uint32_t seq, std::uint32_t ifindex, std::uint32_t mtu) {
  Builder b = link_request(RTM_NEWLINK, 0, seq, ifindex);
  b.put_u32(IFLA_MTU, mtu);
  return std::move(b).finish();
}

Message set_link_up(std::uint32_t seq, std::uint32_t ifindex, bool up) {
  ifinfomsg* ifi = nullptr;
  Builder b = link_request(RTM_NEWLINK, 0, seq, ifindex, &ifi);
  ifi->ifi_change = IFF_UP;
  ifi->ifi_flags = up ? IFF_UP : 0;
  return std::move(b).finish();
}

Message del_link(std::uint32_t seq, std::string_view ifname) {
  Builder b = link_request(RTM_DELLINK, 0, seq, 0);
  b.put_strz(IFLA_IFNAME, ifname);
  return std::move(b).finish();
}

Message dump_addresses(std::uint32_t seq) {
  Builder b(RTM_GETADDR, NLM_F_DUMP, seq);
  b.header<ifaddrmsg>()->ifa_family = AF_UNSPEC;
  return std::move(b).finish();
}

Message new_address(std::uint32_t seq, std::uint32_t ifindex, const IpPrefix& prefix) {
  return address_request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, ifindex, prefix);
}

Message del_address(std::uint32_t seq, std::uint32_t ifindex, const IpPrefix& prefix) {
  return address_request(RTM_DELADDR, 0, seq, ifindex, prefix);
}

Message dump_routes(std::uint32_t seq) {
  Builder b(RTM_GETROUTE, NLM_F_DUMP, seq);
  b.header<rtmsg>()->rtm_family = AF_UNSPEC;
  return std::move(b).finish();
}

Message new_route(std::uint32_t seq, std::uint32_t ifindex, const IpPrefix& destination,
                  std::uint8_t protocol) {
  return route_request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq, ifindex, destination,
                       protocol);
}

Message del_route(std::uint32_t seq, std::uint32_t ifindex, const IpPrefix& destination,
                  std::uint8_t protocol) {
  return route_request(RTM_DELROUTE, 0, seq, ifindex, destination, protocol);
}

Result<LinkMessage> parse_link(std::span<const std::uint8_t> m) {
  constexpr const char* kWhat = "RTM_NEWLINK";
  auto nlh = checked_message<ifinfomsg>(m, RTM_NEWLINK, kWhat);
  if (!nlh) return fail(std::move(nlh.error()));
  ifinfomsg ifi;
  std::memcpy(&ifi, NLMSG_DATA(*nlh), sizeof ifi);
  LinkMessage out;
  out.ifindex = static_cast<std::uint32_t>(ifi.ifi_index);
  out.flags = ifi.ifi_flags;
  bool have_name = false;
  auto s = for_each_attr(*nlh, sizeof(ifinfomsg), kWhat, [&](const nlattr* a) -> Status {
    switch (a->nla_type & NLA_TYPE_MASK) {
      case IFLA_IFNAME: {
        auto name = attr_string(a, kWhat);
        if (!name) return fail(std::move(name.error()));
        out.ifname = std::move(*name);
        have_name = true;
        return {};
      }
      case IFLA_MTU: {
        auto mtu = attr_u32(a, kWhat);
        if (!mtu) return fail(std::move(mtu.error()));
        out.mtu = *mtu;
        return {};
      }
      case IFLA_LINKINFO:
        return for_each_attr(payload(a), payload(a) + payload_len(a), kWhat,
                             [&](const nlattr* n) -> Status {
                               if ((n->nla_type & NLA_TYPE_MASK) != IFLA_INFO_KIND) return {};
                               auto kind = attr_string(n, kWhat);
                               if (!kind) return fail(std::move(kind.error()));
                               out.kind = std::move(*kind);
                               return {};
                             });
      default:
        return {};
    }
  });
  if (!s) return fail(std::move(s.error()));
  if (!have_name) return fail(malformed(kWhat, "no IFLA_IFNAME"));
  return out;
}

Result<AddressMessage> parse_address(std::span<const std::uint8_t> m) {
  constexpr const char* kWhat = "RTM_NEWADDR";
  auto nlh = checked_message<ifaddrmsg>(m, RTM_NEWADDR, kWhat);
  if (!nlh) return fail(std::move(nlh.error()));
  ifaddrmsg ifa;
  std::memcpy(&ifa, NLMSG_DATA(*nlh), sizeof ifa);
  std::optional<IpAddress> local, address;
  auto s = for_each_attr(*nlh, sizeof(ifaddrmsg), kWhat, [&](const nlattr* a) -> Status {
    auto type = a->nla_type & NLA_TYPE_MASK;
    if (type != IFA_LOCAL && type != IFA_ADDRESS) return {};
    auto ip = attr_address(a, ifa.ifa_family, kWhat);
    if (!ip) return fail(std::move(ip.error()));
    (type == IFA_LOCAL ? local : address) = *ip;
    return {};
  });
  if (!s) return fail(std::move(s.error()));
  if (!local && !address) return fail(malformed(kWhat, "no IFA_LOCAL or IFA_ADDRESS"));
  auto prefix = IpPrefix::make(local ? *local : *address, ifa.ifa_prefixlen);
  if (!prefix) return fail(malformed(kWhat, prefix.error().context()));
  AddressMessage out;
  out.ifindex = ifa.ifa_index;
  out.prefix = *prefix;
  out.scope = ifa.ifa_scope;
  return out;
}

Result<RouteMessage> parse_route(std::span<const std::uint8_t> m) {
  constexpr const char* kWhat = "RTM_NEWROUTE";
  auto nlh = checked_message<rtmsg>(m, RTM_NEWROUTE, kWhat);
  if (!nlh) return fail(std::move(nlh.error()));
  rtmsg rtm;
  std::memcpy(&rtm, NLMSG_DATA(*nlh), sizeof rtm);
  RouteMessage out;
  out.table = rtm.rtm_table;
  out.type = rtm.rtm_type;
  out.protocol = rtm.rtm_protocol;
  out.scope = rtm.rtm_scope;
  std::optional<IpAddress> dst;
  auto s = for_each_attr(*nlh, sizeof(rtmsg), kWhat, [&](const nlattr* a) -> Status {
    switch (a->nla_type & NLA_TYPE_MASK) {
      case RTA_DST: {
        auto ip = attr_address(a, rtm.rtm_family, kWhat);
        if (!ip) return fail(std::move(ip.error()));
        dst = *ip;
        return {};
      }
      case RTA_OIF: {
        auto v = attr_u32(a, kWhat);
        if (!v) return fail(std::move(v.error()));
        out.oif = *v;
        return {};
      }
      case RTA_TABLE: {
        auto v = attr_u32(a, kWhat);
        if (!v) return fail(std::move(v.error()));
        out.table = *v;
        return {};
      }
      default:
        return {};
    }
  });
  if (!s) return fail(std::move(s.error()));
  if (!dst) {
    if (rtm.rtm_family == AF_INET) {
      dst = IpAddress::v4_host_order(0);
    } else if (rtm.rtm_family == AF_INET6) {
      dst = IpAddress::v6(in6_addr{});
    } else {
      return fail(malformed(kWhat, "family " + std::to_string(rtm.rtm_family)));
    }
  }
  auto prefix = IpPrefix::make(*dst, rtm.rtm_dst_len);
  if (!prefix) return fail(malformed(kWhat, prefix.error().context()));
  out.destination = *prefix;
  return out;
}

Result<bool> ReplyReader::feed(std::span<const std::uint8_t> datagram,
                               const OnMessage& on_message) {
  std::size_t off = 0;
  while (off < datagram.size()) {
    std::size_t left = datagram.size() - off;
    if (left < sizeof(nlmsghdr)) return fail(Error::protocol("truncated netlink header in reply"));
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(datagram.data() + off);
    if (nlh->nlmsg_len < sizeof(nlmsghdr) || nlh->nlmsg_len > left) {
      return fail(Error::protocol("netlink message of length " + std::to_string(nlh->nlmsg_len) +
                                  " with " + std::to_string(left) + " bytes left in reply"));
    }
    std::span<const std::uint8_t> msg = datagram.subspan(off, nlh->nlmsg_len);
    off += std::min<std::size_t>(NLMSG_ALIGN(nlh->nlmsg_len), left);
    if (nlh->nlmsg_seq != seq_ || (portid_ != 0 && nlh->nlmsg_pid != portid_)) continue;
    if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) interrupted_ = true;

    const auto* end = msg.data() + msg.size();
    switch (nlh->nlmsg_type) {
      case NLMSG_NOOP:
        continue;
      case NLMSG_OVERRUN:
        return fail_errno(ENOBUFS, "netlink reply overrun");
      case NLMSG_ERROR:
      case NLMSG_DONE: {
        int error = 0;
        const std::uint8_t* tlvs = nullptr;
        if (nlh->nlmsg_type == NLMSG_ERROR) {
          if (msg.size() < NLMSG_SPACE(sizeof(nlmsgerr))) {
            return fail(Error::protocol("truncated netlink error message"));
          }
          nlmsgerr err;
          std::memcpy(&err, NLMSG_DATA(nlh), sizeof err);
          error = err.error;
          // The request is echoed after the error unless capped (NETLINK_CAP_ACK, or on success).
          std::size_t echoed =
              (nlh->nlmsg_flags & NLM_F_CAPPED) || err.msg.nlmsg_len < sizeof(nlmsghdr)
                  ? 0
                  : err.msg.nlmsg_len - sizeof(nlmsghdr);
          std::size_t tlv_off = NLMSG_HDRLEN + sizeof(nlmsgerr) + NLMSG_ALIGN(echoed);
          if (tlv_off <= msg.size()) tlvs = msg.data() + tlv_off;
        } else if (msg.size() >= NLMSG_SPACE(sizeof(int))) {
          std::memcpy(&error, NLMSG_DATA(nlh), sizeof error);
          tlvs = msg.data() + NLMSG_SPACE(sizeof(int));
        }
        if (error > 0) return fail(Error::protocol("netlink error " + std::to_string(error)));
        if (error < 0) {
          std::string ext;
          if (tlvs && (nlh->nlmsg_flags & NLM_F_ACK_TLVS)) ext = ext_ack_message(tlvs, end);
          return fail(Error::from_errno(-error, ext));
        }
        if (message_error_) return fail(std::move(*message_error_));
        return true;
      }
      default:
        if (!message_error_) {
          if (auto s = on_message(msg); !s) message_error_ = std::move(s.error());
        }
    }
  }
  return false;
}

}  // namespace portcullis::link::rtnl
