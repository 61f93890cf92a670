#include "dataplane/testing/fake_links.h"

#include <algorithm>

namespace portcullis::testing {

using link::kKernelRouteProtocol;
using link::kRouteProtocol;
using link::LinkChanges;
using link::LinkSpec;
using link::LinkState;
using link::RouteState;

namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

}  // namespace

FakeLinks::FakeLinks() : kinds_{"wireguard", "dummy"} {}

void FakeLinks::add_link(LinkState state) {
  if (state.ifindex == 0) state.ifindex = next_ifindex_++;
  std::sort(state.addresses.begin(), state.addresses.end());
  std::sort(state.routes.begin(), state.routes.end());
  std::string name = state.ifname;
  links_[name] = std::move(state);
}

LinkState* FakeLinks::find(const std::string& ifname) {
  auto it = links_.find(ifname);
  return it == links_.end() ? nullptr : &it->second;
}

Result<LinkState> FakeLinks::read(const std::string& ifname) {
  if (auto v = link::validate_ifname(ifname); !v) return fail(std::move(v.error()));
  if (auto e = read_failures_.next_call()) return fail(std::move(*e));
  auto it = links_.find(ifname);
  if (it == links_.end()) return fail_errno(ENODEV, "read link " + q(ifname) + ": no such link");
  LinkState st = it->second;
  std::sort(st.addresses.begin(), st.addresses.end());
  std::sort(st.routes.begin(), st.routes.end());
  return st;
}

Status FakeLinks::request(const std::string& context) {
  if (auto e = request_failures_.next_call()) return fail(std::move(*e).wrap(context));
  return {};
}

bool FakeLinks::routed_elsewhere(const IpPrefix& dst) const {
  for (const auto& [name, l] : links_) {
    for (const auto& r : l.routes) {
      if (r.destination == dst) return true;
    }
  }
  return false;
}

// Kernel prefix routes exist for each non-host address while the link is up.
void FakeLinks::refresh_kernel_routes(LinkState& l) {
  std::erase_if(l.routes, [](const RouteState& r) { return r.protocol == kKernelRouteProtocol; });
  if (l.up) {
    for (const auto& a : l.addresses) {
      if (!a.is_host()) l.routes.push_back({a.masked(), kKernelRouteProtocol});
    }
  } else {
    std::erase_if(l.routes, [](const RouteState& r) { return r.destination.family() == AF_INET; });
  }
  std::sort(l.routes.begin(), l.routes.end());
  l.routes.erase(std::unique(l.routes.begin(), l.routes.end()), l.routes.end());
}

Status FakeLinks::step(LinkState& l, const LinkSpec& spec, const LinkChanges& plan) {
  const std::string name = q(spec.ifname);
  if (!plan.created && plan.mtu) {
    if (auto s = request("set MTU " + std::to_string(*plan.mtu) + " on link " + name); !s) {
      return s;
    }
    l.mtu = *plan.mtu;
  }
  for (const auto& a : plan.addresses_removed) {
    if (auto s = request("remove address " + a.to_string() + " from link " + name); !s) return s;
    std::erase(l.addresses, a);
    refresh_kernel_routes(l);
  }
  for (const auto& a : plan.addresses_added) {
    if (auto s = request("add address " + a.to_string() + " to link " + name); !s) return s;
    l.addresses.push_back(a);
    std::sort(l.addresses.begin(), l.addresses.end());
    refresh_kernel_routes(l);
  }
  if (plan.up) {
    std::string what = std::string("bring link ") + name + (*plan.up ? " up" : " down");
    if (auto s = request(what); !s) return s;
    l.up = *plan.up;
    refresh_kernel_routes(l);
  }
  for (const auto& r : plan.routes_removed) {
    if (auto s = request("remove route " + r.to_string() + " via link " + name); !s) return s;
    std::erase(l.routes, RouteState{r, kRouteProtocol});
  }
  for (const auto& r : plan.routes_added) {
    std::string context = "add route " + r.to_string() + " via link " + name;
    if (auto s = request(context); !s) return s;
    if (r.family() == AF_INET && !l.up) {
      return fail_errno(ENETDOWN, context + ": Nexthop device is not up");
    }
    if (routed_elsewhere(r)) {
      return fail_errno(EEXIST,
                        context + " (another route to " + r.to_string() + " is in the main table)");
    }
    l.routes.push_back({r, kRouteProtocol});
    std::sort(l.routes.begin(), l.routes.end());
  }
  return {};
}

Result<LinkChanges> FakeLinks::ensure(const LinkSpec& spec) {
  if (auto v = link::validate_spec(spec); !v) return fail(std::move(v.error()));
  if (auto e = read_failures_.next_call()) return fail(std::move(*e));
  const std::string name = q(spec.ifname);
  std::optional<LinkState> have;
  if (auto it = links_.find(spec.ifname); it != links_.end()) have = it->second;
  if (have && have->kind != spec.kind) {
    std::string what = have->kind.empty() ? "no link kind (a physical or loopback link?)"
                                          : "kind " + q(have->kind);
    return fail_errno(EEXIST, "ensure link " + name + ": a link of that name exists with " + what +
                                  ", not " + q(spec.kind) + "; remove it or choose another name");
  }
  LinkChanges plan = link::plan_link_changes(spec, have);
  if (plan.created) {
    std::string context = "create link " + name + " of kind " + q(spec.kind);
    if (auto s = request(context); !s) return fail(std::move(s.error()));
    if (!kinds_.count(spec.kind)) {
      return fail_errno(EOPNOTSUPP, context + ": Unknown device type (kernel has no " +
                                        q(spec.kind) + " link type)");
    }
    LinkState fresh;
    fresh.ifname = spec.ifname;
    fresh.ifindex = next_ifindex_++;
    fresh.kind = spec.kind;
    fresh.mtu = spec.mtu.value_or(spec.kind == "wireguard" ? 1420 : 1500);
    links_[spec.ifname] = fresh;
  }
  if (auto s = step(links_[spec.ifname], spec, plan); !s) return fail(std::move(s.error()));
  return plan;
}

Status FakeLinks::remove(const std::string& ifname) {
  if (auto v = link::validate_ifname(ifname); !v) return v;
  if (auto s = request("remove link " + q(ifname)); !s) return s;
  links_.erase(ifname);  // absent: already gone
  return {};
}

std::string FakeLinks::to_text() const {
  std::string out;
  for (const auto& [name, l] : links_) {
    out += "link " + name + " kind " + (l.kind.empty() ? "(none)" : l.kind) + " mtu " +
           std::to_string(l.mtu) + (l.up ? " up" : " down") + "\n";
    auto addresses = l.addresses;
    std::sort(addresses.begin(), addresses.end());
    for (const auto& a : addresses) out += "  address " + a.to_string() + "\n";
    auto routes = l.routes;
    std::sort(routes.begin(), routes.end());
    for (const auto& r : routes) {
      out += "  route " + r.destination.to_string() + " proto " + std::to_string(r.protocol) + "\n";
    }
  }
  return out;
}

}  // namespace portcullis::testing
