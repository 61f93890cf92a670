#include "dataplane/link/links.h"

#include <algorithm>
#include <cctype>

namespace portcullis::link {

namespace {

// The IPv4 minimum MTU (RFC 791); the kernel refuses less on an IPv4-capable link.
constexpr std::uint32_t kMinMtu = 68;

bool contains(const std::vector<IpPrefix>& v, const IpPrefix& p) {
  return std::find(v.begin(), v.end(), p) != v.end();
}

// Spec lists may repeat entries; each step is planned once, in the spec's order.
std::vector<IpPrefix> unique_in_order(const std::vector<IpPrefix>& v) {
  std::vector<IpPrefix> out;
  for (const auto& p : v) {
    if (!contains(out, p)) out.push_back(p);
  }
  return out;
}

void append_list(std::string& out, const char* sign, const char* what,
                 const std::vector<IpPrefix>& list) {
  for (const auto& p : list) {
    if (!out.empty()) out += ", ";
    out += sign;
    out += what;
    out += ' ';
    out += p.to_string();
  }
}

}  // namespace

bool is_ipv6_link_local(const IpPrefix& p) {
  const auto* b = p.address().data();
  return p.family() == AF_INET6 && b[0] == 0xfe && (b[1] & 0xc0) == 0x80;
}

Status validate_ifname(std::string_view ifname) {
  if (ifname.empty()) return fail_invalid("interface name is empty");
  std::string q = "'" + std::string(ifname) + "'";
  if (ifname.size() > kMaxIfnameLen) {
    return fail_invalid("interface name " + q + " is " + std::to_string(ifname.size()) +
                        " bytes long; the kernel allows at most " + std::to_string(kMaxIfnameLen));
  }
  if (ifname == "." || ifname == "..") return fail_invalid("interface name " + q + " is reserved");
  for (char c : ifname) {
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) || c == '\0') {
      return fail_invalid("interface name " + q +
                          " contains a character the kernel refuses ('/', ':' or whitespace)");
    }
  }
  return {};
}

Status validate_spec(const LinkSpec& spec) {
  if (auto s = validate_ifname(spec.ifname); !s) return s;
  std::string q = "'" + spec.ifname + "'";
  if (spec.kind.empty()) return fail_invalid("link " + q + ": no link kind given");
  if (spec.mtu && *spec.mtu < kMinMtu) {
    return fail_invalid("link " + q + ": MTU " + std::to_string(*spec.mtu) +
                        " is below the minimum of " + std::to_string(kMinMtu));
  }
  for (const auto& a : spec.addresses) {
    if (a.family() != AF_INET && a.family() != AF_INET6) {
      return fail_invalid("link " + q + ": an address has no IP family");
    }
  }
  for (const auto& r : spec.routes) {
    if (r.family() != AF_INET && r.family() != AF_INET6) {
      return fail_invalid("link " + q + ": a route has no IP family");
    }
  }
  return {};
}

LinkChanges plan_link_changes(const LinkSpec& spec, const std::optional<LinkState>& have) {
  LinkChanges c;
  auto addresses = unique_in_order(spec.addresses);
  std::vector<IpPrefix> routes;
  for (const auto& r : spec.routes) routes.push_back(r.masked());
  routes = unique_in_order(routes);

  if (!have) {
    c.created = true;
    c.mtu = spec.mtu;
    c.addresses_added = addresses;
    if (spec.up) c.up = true;
    c.routes_added = routes;
    return c;
  }

  if (spec.mtu && *spec.mtu != have->mtu) c.mtu = spec.mtu;
  if (spec.remove_unlisted) {
    for (const auto& a : have->addresses) {
      if (!contains(addresses, a) && !is_ipv6_link_local(a)) c.addresses_removed.push_back(a);
    }
  }
  for (const auto& a : addresses) {
    if (!contains(have->addresses, a)) c.addresses_added.push_back(a);
  }
  if (spec.up != have->up) c.up = spec.up;
  std::vector<IpPrefix> have_routes;
  for (const auto& r : have->routes) {
    have_routes.push_back(r.destination);
    if (spec.remove_unlisted && r.protocol == kRouteProtocol && !contains(routes, r.destination)) {
      c.routes_removed.push_back(r.destination);
    }
  }
  for (const auto& r : routes) {
    if (!contains(have_routes, r)) c.routes_added.push_back(r);
  }
  return c;
}

bool LinkChanges::empty() const {
  return !created && !mtu && addresses_removed.empty() && addresses_added.empty() && !up &&
         routes_removed.empty() && routes_added.empty();
}

std::string LinkChanges::to_string() const {
  std::string out;
  if (created) out = "created";
  if (mtu) {
    if (!out.empty()) out += ", ";
    out += "mtu " + std::to_string(*mtu);
  }
  append_list(out, "-", "address", addresses_removed);
  append_list(out, "+", "address", addresses_added);
  if (up) {
    if (!out.empty()) out += ", ";
    out += *up ? "up" : "down";
  }
  append_list(out, "-", "route", routes_removed);
  append_list(out, "+", "route", routes_added);
  return out.empty() ? "unchanged" : out;
}

}  // namespace portcullis::link
