#include "dataplane/link/netlink_links.h"

#include <linux/rtnetlink.h>
#include <net/if.h>

#include <algorithm>
#include <ctime>

namespace portcullis::link {

namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

// "create link 'pcl0' of kind 'x': Unknown device type (kernel has no 'x' link type; ...)"
Error with_hint(const Error& e, const std::string& hint) {
  return Error(e.code(), e.context() + " (" + hint + ")");
}

// A dump that raced with a change (NLM_F_DUMP_INTR) is read again, this many times at most.
constexpr int kDumpAttempts = 3;

}  // namespace

Result<RtnlSocket> RtnlSocket::open() {
  mnl_socket* s = mnl_socket_open(NETLINK_ROUTE);
  if (!s) return fail(Error::last_errno("open rtnetlink socket"));
  RtnlSocket sock(s, 0, static_cast<std::uint32_t>(std::time(nullptr)));
  // Extended ACKs carry the kernel's own words ("Unknown device type"). Kernels before 4.12 lack
  // them; the errno alone still comes back, so a failure here is ignored.
  int on = 1;
  (void)mnl_socket_setsockopt(s, NETLINK_EXT_ACK, &on, sizeof on);
  // Errors need not echo our request back.
  (void)mnl_socket_setsockopt(s, NETLINK_CAP_ACK, &on, sizeof on);
  if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
    return fail(Error::last_errno("bind rtnetlink socket"));
  }
  sock.portid_ = mnl_socket_get_portid(s);
  return sock;
}

Status RtnlSocket::transact(std::span<const std::uint8_t> request,
                            const rtnl::ReplyReader::OnMessage& on_message, bool* interrupted) {
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(request.data());
  ssize_t sent = mnl_socket_sendto(socket_.get(), request.data(), request.size());
  if (sent < 0) return fail(Error::last_errno("send rtnetlink request"));
  if (static_cast<std::size_t>(sent) != request.size()) {
    return fail_errno(EMSGSIZE, "send rtnetlink request: short write");
  }
  rtnl::ReplyReader reader(nlh->nlmsg_seq, portid_);
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(socket_.get(), buffer_.data(), buffer_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::last_errno("receive rtnetlink reply"));
    }
    auto done = reader.feed(std::span(buffer_.data(), static_cast<std::size_t>(n)), on_message);
    if (!done) return fail(std::move(done.error()));
    if (*done) break;
  }
  if (interrupted) *interrupted = reader.interrupted();
  return {};
}

Result<std::unique_ptr<NetlinkLinks>> NetlinkLinks::open() {
  auto sock = RtnlSocket::open();
  if (!sock) return fail(std::move(sock.error()));
  return std::unique_ptr<NetlinkLinks>(new NetlinkLinks(std::move(*sock)));
}

Result<std::optional<rtnl::LinkMessage>> NetlinkLinks::get_link(const std::string& ifname) {
  std::optional<rtnl::LinkMessage> link;
  auto s = socket_.transact(rtnl::get_link(socket_.next_seq(), ifname),
                            [&](std::span<const std::uint8_t> m) -> Status {
                              auto l = rtnl::parse_link(m);
                              if (!l) return fail(std::move(l.error()));
                              link = std::move(*l);
                              return {};
                            });
  if (!s) {
    if (s.error().errno_value() == ENODEV) return std::optional<rtnl::LinkMessage>();
    return fail(std::move(s.error()).wrap("read link " + q(ifname)));
  }
  if (!link) return fail(Error::protocol("read link " + q(ifname) + ": no RTM_NEWLINK in reply"));
  return link;
}

Result<std::optional<LinkState>> NetlinkLinks::read_if_exists(const std::string& ifname) {
  auto link = get_link(ifname);
  if (!link) return fail(std::move(link.error()));
  if (!*link) return std::optional<LinkState>();

  LinkState st;
  st.ifname = (*link)->ifname;
  st.ifindex = (*link)->ifindex;
  st.kind = (*link)->kind;
  st.mtu = (*link)->mtu;
  st.up = ((*link)->flags & IFF_UP) != 0;

  bool interrupted = true;
  for (int attempt = 0; interrupted && attempt < kDumpAttempts; ++attempt) {
    st.addresses.clear();
    auto s = socket_.transact(
        rtnl::dump_addresses(socket_.next_seq()),
        [&](std::span<const std::uint8_t> m) -> Status {
          auto a = rtnl::parse_address(m);
          if (!a) return fail(std::move(a.error()));
          if (a->ifindex == st.ifindex) st.addresses.push_back(a->prefix);
          return {};
        },
        &interrupted);
    if (!s) return fail(std::move(s.error()).wrap("read addresses of link " + q(ifname)));
  }
  if (interrupted) {
    return fail_errno(
        EAGAIN, "read addresses of link " + q(ifname) + ": changed during every dump; try again");
  }

  interrupted = true;
  for (int attempt = 0; interrupted && attempt < kDumpAttempts; ++attempt) {
    st.routes.clear();
    auto s = socket_.transact(
        rtnl::dump_routes(socket_.next_seq()),
        [&](std::span<const std::uint8_t> m) -> Status {
          auto r = rtnl::parse_route(m);
          if (!r) return fail(std::move(r.error()));
          if (r->oif == st.ifindex && r->table == RT_TABLE_MAIN && r->type == RTN_UNICAST) {
            st.routes.push_back({r->destination, r->protocol});
          }
          return {};
        },
        &interrupted);
    if (!s) return fail(std::move(s.error()).wrap("read routes via link " + q(ifname)));
  }
  if (interrupted) {
    return fail_errno(
        EAGAIN, "read routes via link " + q(ifname) + ": changed during every dump; try again");
  }

  std::sort(st.addresses.begin(), st.addresses.end());
  std::sort(st.routes.begin(), st.routes.end());
  return st;
}

Result<LinkState> NetlinkLinks::read(const std::string& ifname) {
  if (auto v = validate_ifname(ifname); !v) return fail(std::move(v.error()));
  auto st = read_if_exists(ifname);
  if (!st) return fail(std::move(st.error()));
  if (!*st) return fail_errno(ENODEV, "read link " + q(ifname) + ": no such link");
  return std::move(**st);
}

Status NetlinkLinks::change(const rtnl::Message& request, const std::string& context) {
  ++changing_requests_;
  auto s = socket_.transact(request, [](std::span<const std::uint8_t>) -> Status { return {}; });
  if (!s) return fail(std::move(s.error()).wrap(context));
  return {};
}

Status NetlinkLinks::apply(const LinkSpec& spec, const LinkChanges& plan, std::uint32_t ifindex) {
  const std::string name = q(spec.ifname);
  if (!plan.created && plan.mtu) {
    auto s = change(rtnl::set_link_mtu(socket_.next_seq(), ifindex, *plan.mtu),
                    "set MTU " + std::to_string(*plan.mtu) + " on link " + name);
    if (!s) return s;
  }
  for (const auto& a : plan.addresses_removed) {
    auto s = change(rtnl::del_address(socket_.next_seq(), ifindex, a),
                    "remove address " + a.to_string() + " from link " + name);
    if (!s) return s;
  }
  for (const auto& a : plan.addresses_added) {
    auto s = change(rtnl::new_address(socket_.next_seq(), ifindex, a),
                    "add address " + a.to_string() + " to link " + name);
    if (!s) return s;
  }
  if (plan.up) {
    auto s = change(rtnl::set_link_up(socket_.next_seq(), ifindex, *plan.up),
                    std::string("bring link ") + name + (*plan.up ? " up" : " down"));
    if (!s) return s;
  }
  for (const auto& r : plan.routes_removed) {
    auto s = change(rtnl::del_route(socket_.next_seq(), ifindex, r, kRouteProtocol),
                    "remove route " + r.to_string() + " via link " + name);
    if (!s) return s;
  }
  for (const auto& r : plan.routes_added) {
    auto s = change(rtnl::new_route(socket_.next_seq(), ifindex, r, kRouteProtocol),
                    "add route " + r.to_string() + " via link " + name);
    if (!s) {
      if (s.error().errno_value() == EEXIST) {
        return fail(with_hint(s.error(), "another route to " + r.to_string() +
                                             " is in the main table (`ip route show " +
                                             r.to_string() + "`)"));
      }
      return s;
    }
  }
  return {};
}

Result<LinkChanges> NetlinkLinks::ensure(const LinkSpec& spec) {
  if (auto v = validate_spec(spec); !v) return fail(std::move(v.error()));
  const std::string name = q(spec.ifname);
  auto have = read_if_exists(spec.ifname);
  if (!have) return fail(std::move(have.error()));
  if (*have && (*have)->kind != spec.kind) {
    std::string what = (*have)->kind.empty() ? "no link kind (a physical or loopback link?)"
                                             : "kind " + q((*have)->kind);
    return fail_errno(EEXIST, "ensure link " + name + ": a link of that name exists with " + what +
                                  ", not " + q(spec.kind) + "; remove it or choose another name");
  }
  LinkChanges plan = plan_link_changes(spec, *have);

  std::uint32_t ifindex = *have ? (*have)->ifindex : 0;
  if (plan.created) {
    auto s = change(rtnl::new_link(socket_.next_seq(), spec.ifname, spec.kind, spec.mtu),
                    "create link " + name + " of kind " + q(spec.kind));
    if (!s) {
      if (s.error().errno_value() == EOPNOTSUPP) {
        std::string hint = spec.kind == "wireguard"
                               ? "load the wireguard module (modprobe wireguard) or use the "
                                 "userspace backend (wireguard-go)"
                               : "load its module";
        return fail(with_hint(s.error(), "kernel has no " + q(spec.kind) + " link type; " + hint));
      }
      return fail(std::move(s.error()));
    }
    auto created = get_link(spec.ifname);
    if (!created) return fail(std::move(created.error()));
    if (!*created) return fail_errno(ENODEV, "link " + name + " vanished right after creation");
    ifindex = (*created)->ifindex;
  }
  if (auto s = apply(spec, plan, ifindex); !s) return fail(std::move(s.error()));
  return plan;
}

Status NetlinkLinks::remove(const std::string& ifname) {
  if (auto v = validate_ifname(ifname); !v) return v;
  auto s = change(rtnl::del_link(socket_.next_seq(), ifname), "remove link " + q(ifname));
  // Already gone is what was asked for.
  if (!s && s.error().errno_value() == ENODEV) return {};
  return s;
}

}  // namespace portcullis::link
