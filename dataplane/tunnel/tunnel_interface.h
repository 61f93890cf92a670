#pragma once
// The WireGuard interface as a whole: the link (kernel "wireguard", or the TUN of a wireguard-go we
// start), its addresses and routes, and the device handle for peers. Used by the gateway for
// portcullis0 and by the agent for its own interface. Idempotent: a second call with the same spec
// changes nothing and keeps every session.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/base/ip.h"
#include "dataplane/base/result.h"
#include "dataplane/link/links.h"
#include "dataplane/wireguard/device.h"
#include "dataplane/wireguard/open_device.h"

namespace portcullis::tunnel {

struct TunnelInterfaceSpec {
  std::string ifname;
  // auto: what already serves the interface; for a new one the kernel if it has WireGuard, else
  // wireguard-go.
  wg::Backend backend = wg::Backend::kAuto;
  std::string uapi_socket_dir = wg::kDefaultUapiSocketDir;
  std::string wireguard_go_binary = "wireguard-go";
  std::optional<std::uint32_t> mtu;
  std::vector<IpPrefix> addresses;
  std::vector<IpPrefix> routes;
};

struct TunnelInterface {
  std::unique_ptr<wg::WireguardDevice> device;
  wg::Backend backend = wg::Backend::kKernel;  // never kAuto
  link::LinkChanges link_changes;
  bool started_wireguard_go = false;
};

Result<TunnelInterface> ensure_tunnel_interface(const TunnelInterfaceSpec& spec,
                                                link::Links& links);

// Deletes the link; for the userspace backend wireguard-go then exits (waited for).
Status remove_tunnel_interface(const std::string& ifname, link::Links& links,
                               const std::string& uapi_socket_dir = wg::kDefaultUapiSocketDir);

}  // namespace portcullis::tunnel
