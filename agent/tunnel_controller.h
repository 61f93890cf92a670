#pragma once
// The agent's own WireGuard interface, brought to a verified orchestration document:
//
//   <interface>  address <document address>/32, up, MTU from the config
//                route <gateway>/32 dev <interface> proto 120   (the only route we ever add)
//                private key = wireguard.key
//                peer <gateway WireGuard key>: endpoint <resolved gateway endpoint>,
//                     allowed ips <gateway>/32, persistent keepalive <document, 30>
//
// Idempotent: a correct interface is left exactly as it is (no link, address, route or peer
// change; the session, handshake and counters survive). Nothing is left half-configured: when a
// step fails, or what the kernel holds afterwards is not the document, the interface is removed.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "agent/agent_protocol.h"
#include "agent/tunnel.h"
#include "dataplane/base/key.h"
#include "dataplane/link/links.h"
#include "dataplane/tunnel/tunnel_interface.h"

namespace portcullis::agent {

struct TunnelSettings {
  std::string ifname;
  wg::Backend backend = wg::Backend::kAuto;
  std::string wireguard_go = "wireguard-go";
  std::string uapi_socket_dir = wg::kDefaultUapiSocketDir;
  std::uint32_t mtu = 1420;
};

class TunnelController : public Tunnel {
 public:
  TunnelController(TunnelSettings settings, SecretKey wg_private_key, link::Links& links);

  Result<bool> apply(const TunnelDocument& doc, const Endpoint& endpoint) override;
  Status remove() override;
  TunnelObservation observe(const TunnelDocument& doc, std::int64_t now) override;

  const std::string& ifname() const { return settings_.ifname; }

 private:
  Result<bool> converge(const TunnelDocument& doc, const Endpoint& endpoint);
  std::string check_device(const wg::DeviceState& state, const TunnelDocument& doc) const;

  TunnelSettings settings_;
  SecretKey wg_private_key_;
  link::Links& links_;
  std::unique_ptr<wg::WireguardDevice> device_;
};

}  // namespace portcullis::agent
