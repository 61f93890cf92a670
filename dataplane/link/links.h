#pragma once
// The link boundary (rtnetlink): create the tunnel link, give it addresses and routes, bring it up.
// `ensure()` converges: it reads what is there, plans only the missing steps (plan_link_changes, a
// pure function) and sends one request per step, so a second call with the same spec sends no
// changing request at all.

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/base/ip.h"
#include "dataplane/base/result.h"

namespace portcullis::link {

// IFNAMSIZ - 1: the kernel's limit on interface names, in bytes.
inline constexpr std::size_t kMaxIfnameLen = 15;

// The routing protocol number ("proto" in `ip route`) of the routes we add, so that they can be
// told apart from the kernel's (2) and the administrator's (static, 4). Unassigned in
// /etc/iproute2/rt_protos; `echo "120 portcullis" > /etc/iproute2/rt_protos.d/portcullis.conf`
// makes `ip route` print the name.
inline constexpr std::uint8_t kRouteProtocol = 120;

// The routing protocol the kernel gives the prefix routes of addresses it adds (RTPROT_KERNEL).
inline constexpr std::uint8_t kKernelRouteProtocol = 2;

struct LinkSpec {
  std::string ifname;
  std::string kind = "wireguard";    // IFLA_INFO_KIND: "wireguard"; tests also use "dummy", "ifb"
  std::optional<std::uint32_t> mtu;  // bytes; absent: the kind's default, left alone later
  // Interface addresses with their prefix length: 10.255.0.1/16 on the gateway (the kernel then
  // adds the route to 10.255.0.0/16 itself), 10.255.0.7/32 on an agent.
  std::vector<IpPrefix> addresses;
  // Routes via this link in the main table (scope link, proto kRouteProtocol), e.g. the agent's
  // 10.255.0.1/32. IPv4 routes need the link up: with `up` false they fail with ENETDOWN.
  std::vector<IpPrefix> routes;
  bool up = true;  // true: bring it up if down; false: bring it down if up
  // Also remove addresses not listed (except IPv6 link-local ones, which the kernel manages) and
  // routes of protocol kRouteProtocol not listed. Off: foreign addresses and routes are left alone.
  bool remove_unlisted = false;
};

struct RouteState {
  IpPrefix destination;  // masked
  std::uint8_t protocol = 0;

  auto operator<=>(const RouteState&) const = default;
};

struct LinkState {
  std::string ifname;
  std::uint32_t ifindex = 0;
  std::string kind;  // empty for links without IFLA_LINKINFO (lo, most NICs)
  std::uint32_t mtu = 0;
  bool up = false;                  // IFF_UP: administratively up
  std::vector<IpPrefix> addresses;  // sorted
  std::vector<RouteState> routes;   // unicast routes out of this link in the main table, sorted

  bool operator==(const LinkState&) const = default;
};

// What ensure() changed, in the order it does it. Empty: nothing was sent.
struct LinkChanges {
  bool created = false;
  std::optional<std::uint32_t> mtu;  // set to this (on creation: sent with the create request)
  std::vector<IpPrefix> addresses_removed;
  std::vector<IpPrefix> addresses_added;
  std::optional<bool> up;  // brought up (true) or down (false)
  std::vector<IpPrefix> routes_removed;
  std::vector<IpPrefix> routes_added;

  bool empty() const;
  // One line for logs: "created, mtu 1420, +address 10.255.0.1/16, up" or "unchanged".
  std::string to_string() const;

  bool operator==(const LinkChanges&) const = default;
};

class Links {
 public:
  virtual ~Links() = default;

  // The link, its addresses and its routes. ENODEV, naming the link, when there is none.
  virtual Result<LinkState> read(const std::string& ifname) = 0;

  // Converges the link to the spec. An existing link of another kind is an EEXIST error (it is
  // never replaced). A kernel without the kind gives EOPNOTSUPP saying so. On failure the steps
  // before the failing one stay done; calling again resumes.
  virtual Result<LinkChanges> ensure(const LinkSpec& spec) = 0;

  // Deletes the link (with its addresses and routes). A link that does not exist is already gone:
  // success, not ENODEV.
  virtual Status remove(const std::string& ifname) = 0;
};

// The kernel's rules for a name (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or
// whitespace. EINVAL saying which rule broke.
Status validate_ifname(std::string_view ifname);
// The name, a non-empty kind, an MTU of at least 68 (the IPv4 minimum) and valid prefixes.
Status validate_spec(const LinkSpec& spec);

// Pure: the steps that turn `have` (nullopt: no such link) into `spec`. Assumes a valid spec whose
// kind matches `have`. Addresses compare exactly (address and prefix length); routes by masked
// destination, whatever their protocol.
LinkChanges plan_link_changes(const LinkSpec& spec, const std::optional<LinkState>& have);

// IPv6 link-local (fe80::/10): the kernel adds these by itself; remove_unlisted keeps them.
bool is_ipv6_link_local(const IpPrefix& p);

}  // namespace portcullis::link
