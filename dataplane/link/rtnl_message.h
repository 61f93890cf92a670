#pragma once
// rtnetlink messages, without a socket: builders return the bytes of one request, parsers read one
// reply message, and ReplyReader follows the reply to one request through the datagrams that carry
// it. Every request asks for an ACK (NLM_F_ACK), so every reply ends in NLMSG_ERROR (a GET or a
// change) or NLMSG_DONE (a dump). All of it is pure and unit-tested against hand-built bytes.

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/base/ip.h"
#include "dataplane/base/result.h"

namespace portcullis::link::rtnl {

using Message = std::vector<std::uint8_t>;

// RTM_GETLINK for one link by name (IFLA_IFNAME). Reply: one RTM_NEWLINK, or ENODEV.
Message get_link(std::uint32_t seq, std::string_view ifname);
// RTM_NEWLINK, NLM_F_CREATE|NLM_F_EXCL: IFLA_IFNAME, IFLA_MTU if given,
// IFLA_LINKINFO{IFLA_INFO_KIND}.
Message new_link(std::uint32_t seq, std::string_view ifname, std::string_view kind,
                 std::optional<std::uint32_t> mtu);
// RTM_NEWLINK on an existing link (by index): IFLA_MTU.
Message set_link_mtu(std::uint32_t seq, std::uint32_t ifindex, std::uint32_t mtu);
// RTM_NEWLINK on an existing link (by index): ifi_change = IFF_UP, ifi_flags = IFF_UP or 0.
Message set_link_up(std::uint32_t seq, std::uint32_t ifindex, bool up);
// RTM_DELLINK by name.
Message del_link(std::uint32_t seq, std::string_view ifname);

// RTM_GETADDR dump, both families.
Message dump_addresses(std::uint32_t seq);
// RTM_NEWADDR (NLM_F_CREATE|NLM_F_EXCL) / RTM_DELADDR: IFA_LOCAL and IFA_ADDRESS both the address
// (no peer), scope global, as `ip addr add 10.255.0.1/16 dev pcl0` sends it.
Message new_address(std::uint32_t seq, std::uint32_t ifindex, const IpPrefix& prefix);
Message del_address(std::uint32_t seq, std::uint32_t ifindex, const IpPrefix& prefix);

// RTM_GETROUTE dump, both families, every table.
Message dump_routes(std::uint32_t seq);
// RTM_NEWROUTE (NLM_F_CREATE|NLM_F_EXCL) / RTM_DELROUTE in the main table: unicast, scope link,
// RTA_DST (the masked prefix), RTA_OIF. `ip route add 10.255.0.1/32 dev pcl0 proto 120`.
Message new_route(std::uint32_t seq, std::uint32_t ifindex, const IpPrefix& destination,
                  std::uint8_t protocol);
Message del_route(std::uint32_t seq, std::uint32_t ifindex, const IpPrefix& destination,
                  std::uint8_t protocol);

struct LinkMessage {
  std::uint32_t ifindex = 0;
  std::string ifname;
  std::string kind;  // empty without IFLA_LINKINFO / IFLA_INFO_KIND
  std::uint32_t mtu = 0;
  std::uint32_t flags = 0;  // IFF_*
};

struct AddressMessage {
  std::uint32_t ifindex = 0;
  IpPrefix prefix;  // IFA_LOCAL (IFA_ADDRESS when absent, as IPv6 sends it) and ifa_prefixlen
  std::uint8_t scope = 0;
};

struct RouteMessage {
  std::uint32_t table = 0;  // RTA_TABLE, else rtm_table
  std::uint8_t type = 0;    // RTN_*
  std::uint8_t protocol = 0;
  std::uint8_t scope = 0;
  std::uint32_t oif = 0;  // 0: none (multipath, blackhole)
  IpPrefix destination;   // 0.0.0.0/0 or ::/0 without RTA_DST
};

// Each parser takes exactly one message (its nlmsg_len bytes); a short header, an attribute that
// overruns the message or has the wrong size, or a missing required attribute is EPROTO.
Result<LinkMessage> parse_link(std::span<const std::uint8_t> message);
Result<AddressMessage> parse_address(std::span<const std::uint8_t> message);
Result<RouteMessage> parse_route(std::span<const std::uint8_t> message);

// Follows the reply to the request with `seq`, sent from netlink port `portid`.
class ReplyReader {
 public:
  // Called with each message of the reply that is not NLMSG_ERROR / NLMSG_DONE / NLMSG_NOOP.
  using OnMessage = std::function<Status(std::span<const std::uint8_t> message)>;

  ReplyReader(std::uint32_t seq, std::uint32_t portid) : seq_(seq), portid_(portid) {}

  // One received datagram. True once the reply is complete. The kernel's error comes back with
  // its errno, and with the extended ACK message (NETLINK_EXT_ACK) as context when there is one.
  // An error from on_message is kept and returned at the end of the reply, so the rest of the
  // reply is still consumed and the socket stays in step. Messages of other sequence numbers
  // (late replies to an abandoned request) are skipped.
  Result<bool> feed(std::span<const std::uint8_t> datagram, const OnMessage& on_message);

  // A dump saw NLM_F_DUMP_INTR: the table changed while it was dumped; read it again.
  bool interrupted() const { return interrupted_; }

 private:
  std::uint32_t seq_;
  std::uint32_t portid_;
  bool interrupted_ = false;
  std::optional<Error> message_error_;
};

}  // namespace portcullis::link::rtnl
