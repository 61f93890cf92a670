#include "agent/tunnel_controller.h"

#include <algorithm>

#include "dataplane/wireguard/peer_diff.h"

namespace portcullis::agent {

TunnelController::TunnelController(TunnelSettings settings, SecretKey wg_private_key,
                                   link::Links& links)
    : settings_(std::move(settings)), wg_private_key_(std::move(wg_private_key)), links_(links) {}

Result<bool> TunnelController::apply(const TunnelDocument& doc, const Endpoint& endpoint) {
  auto r = converge(doc, endpoint);
  if (!r) {
    device_.reset();
    if (auto removed = remove(); !removed) {
      return fail(std::move(r.error()).wrap(
          "configure '" + settings_.ifname +
          "' (and removing it failed too: " + removed.error().message() + ")"));
    }
    return fail(std::move(r.error()).wrap("configure '" + settings_.ifname + "', removed it"));
  }
  return r;
}

Result<bool> TunnelController::converge(const TunnelDocument& doc, const Endpoint& endpoint) {
  tunnel::TunnelInterfaceSpec spec;
  spec.ifname = settings_.ifname;
  spec.backend = settings_.backend;
  spec.uapi_socket_dir = settings_.uapi_socket_dir;
  spec.wireguard_go_binary = settings_.wireguard_go;
  spec.mtu = settings_.mtu;
  spec.addresses = {doc.address};
  spec.routes = {doc.gateway_address};

  // An interface that carries another address or another of our routes (an earlier document, or
  // someone else's doing) is rebuilt rather than trusted: the agent routes only the gateway.
  if (auto have = links_.read(settings_.ifname)) {
    bool foreign = std::any_of(have->addresses.begin(), have->addresses.end(), [&](const auto& a) {
      return a != doc.address && !link::is_ipv6_link_local(a);
    });
    foreign =
        foreign || std::any_of(have->routes.begin(), have->routes.end(), [&](const auto& route) {
          return route.protocol == link::kRouteProtocol &&
                 route.destination != doc.gateway_address.masked();
        });
    if (foreign) {
      device_.reset();
      if (auto s = remove(); !s) return fail(std::move(s.error()));
    }
  }

  auto tun = tunnel::ensure_tunnel_interface(spec, links_);
  if (!tun) return fail(std::move(tun.error()));
  bool changed = !tun->link_changes.empty();
  device_ = std::move(tun->device);

  wg::Peer peer;
  peer.public_key = doc.gateway_wg_public_key;
  peer.endpoint = endpoint;
  peer.persistent_keepalive = doc.persistent_keepalive;
  peer.allowed_ips = {doc.gateway_address};
  wg::DeviceConfig want;
  want.private_key = wg_private_key_;
  want.peers = {peer};

  auto have = device_->read();
  if (!have) return fail(std::move(have.error()));
  wg::DeviceDelta delta = wg::diff_device(want, *have);
  if (!delta.empty()) {
    if (auto s = device_->apply(delta); !s) return fail(std::move(s.error()));
    changed = true;
  }
  auto after = device_->read();
  if (!after) return fail(std::move(after.error()));
  if (auto problem = check_device(*after, doc); !problem.empty()) {
    return fail(Error::protocol("after applying: " + problem));
  }
  return changed;
}

std::string TunnelController::check_device(const wg::DeviceState& state,
                                           const TunnelDocument& doc) const {
  if (!state.private_key || !state.private_key->equals(wg_private_key_)) {
    return "the private key is not this agent's";
  }
  if (state.peers.size() != 1) return std::to_string(state.peers.size()) + " peers instead of 1";
  const wg::Peer& p = state.peers.front();
  if (p.public_key != doc.gateway_wg_public_key) return "the peer is not the gateway";
  if (wg::normalize_allowed_ips(p.allowed_ips) !=
      std::vector<IpPrefix>{doc.gateway_address.masked()}) {
    return "the peer's allowed IPs are not exactly " + doc.gateway_address.to_string();
  }
  if (p.persistent_keepalive != doc.persistent_keepalive) return "wrong persistent keepalive";
  return "";
}

Status TunnelController::remove() {
  device_.reset();
  return tunnel::remove_tunnel_interface(settings_.ifname, links_, settings_.uapi_socket_dir);
}

TunnelObservation TunnelController::observe(const TunnelDocument& doc, std::int64_t now) {
  TunnelObservation o;
  auto link = links_.read(settings_.ifname);
  if (!link) {
    o.problem =
        link.error().errno_value() == ENODEV ? "the interface is gone" : link.error().message();
    return o;
  }
  o.present = true;
  if (!link->up) {
    o.problem = "the interface is down";
    return o;
  }
  if (!device_) {
    auto dev = wg::open_device(settings_.ifname, {settings_.backend, settings_.uapi_socket_dir});
    if (!dev) {
      o.problem = dev.error().message();
      return o;
    }
    device_ = std::move(*dev);
  }
  auto state = device_->read();
  if (!state) {
    device_.reset();
    o.problem = state.error().message();
    return o;
  }
  o.problem = check_device(*state, doc);
  o.correct = o.problem.empty();
  if (!state->peers.empty()) {
    const wg::Peer& p = state->peers.front();
    o.rx_bytes = p.rx_bytes;
    o.tx_bytes = p.tx_bytes;
    if (p.last_handshake != wg::Clock::time_point{}) {
      auto at =
          std::chrono::duration_cast<std::chrono::seconds>(p.last_handshake.time_since_epoch())
              .count();
      o.handshake_age_s = std::max<std::int64_t>(0, now - at);
    }
  }
  return o;
}

}  // namespace portcullis::agent
