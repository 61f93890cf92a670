#include "dataplane/tunnel/tunnel_interface.h"

#include "dataplane/wireguard/wireguard_go.h"

namespace portcullis::tunnel {
namespace {

// wireguard-go's interface is a TUN device: IFLA_INFO_KIND "tun".
constexpr const char* kTunKind = "tun";
constexpr const char* kWireguardKind = "wireguard";

link::LinkSpec link_spec(const TunnelInterfaceSpec& spec, const char* kind) {
  link::LinkSpec l;
  l.ifname = spec.ifname;
  l.kind = kind;
  l.mtu = spec.mtu;
  l.addresses = spec.addresses;
  l.routes = spec.routes;
  l.up = true;
  return l;
}

// The backend serving an existing interface, or for a new one: kernel if it can create one.
Result<wg::Backend> choose_backend(const TunnelInterfaceSpec& spec, link::Links& links) {
  wg::OpenOptions open{spec.backend, spec.uapi_socket_dir};
  if (spec.backend != wg::Backend::kAuto) return spec.backend;
  if (wg::resolve_backend(spec.ifname, open) == wg::Backend::kUserspace) {
    return wg::Backend::kUserspace;
  }
  auto have = links.read(spec.ifname);
  if (have) {
    if (have->kind == kWireguardKind) return wg::Backend::kKernel;
    if (have->kind == kTunKind) return wg::Backend::kUserspace;
    return fail_errno(EEXIST, "interface '" + spec.ifname + "' exists and is a '" + have->kind +
                                  "' link, not WireGuard: remove it or choose another name");
  }
  if (have.error().errno_value() != ENODEV) return fail(std::move(have.error()));
  return wg::Backend::kAuto;  // decided by trying to create a kernel link
}

}  // namespace

Result<TunnelInterface> ensure_tunnel_interface(const TunnelInterfaceSpec& spec,
                                                link::Links& links) {
  auto backend = choose_backend(spec, links);
  if (!backend) return fail(std::move(backend.error()));
  TunnelInterface out;

  if (*backend != wg::Backend::kUserspace) {
    auto changes = links.ensure(link_spec(spec, kWireguardKind));
    if (changes) {
      out.backend = wg::Backend::kKernel;
      out.link_changes = std::move(*changes);
    } else if (*backend == wg::Backend::kAuto && changes.error().errno_value() == EOPNOTSUPP) {
      backend = wg::Backend::kUserspace;  // no WireGuard in this kernel
    } else {
      return fail(std::move(changes.error()));
    }
  }

  if (*backend == wg::Backend::kUserspace) {
    bool was_running = static_cast<bool>(wg::wireguard_go_pid(spec.ifname, spec.uapi_socket_dir));
    auto pid = wg::ensure_wireguard_go({.ifname = spec.ifname,
                                        .binary = spec.wireguard_go_binary,
                                        .socket_dir = spec.uapi_socket_dir});
    if (!pid) return fail(std::move(pid.error()));
    out.started_wireguard_go = !was_running;
    out.backend = wg::Backend::kUserspace;
    auto changes = links.ensure(link_spec(spec, kTunKind));
    if (!changes) return fail(std::move(changes.error()));
    out.link_changes = std::move(*changes);
  }

  auto device = wg::open_device(spec.ifname, {out.backend, spec.uapi_socket_dir});
  if (!device) return fail(std::move(device.error()));
  out.device = std::move(*device);
  return out;
}

Status remove_tunnel_interface(const std::string& ifname, link::Links& links,
                               const std::string& uapi_socket_dir) {
  if (auto s = links.remove(ifname); !s) return s;
  // Without its TUN wireguard-go exits by itself; wait for it (and stop it if it lingers).
  return wg::stop_wireguard_go(ifname, uapi_socket_dir);
}

}  // namespace portcullis::tunnel
