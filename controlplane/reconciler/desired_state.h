#pragma once
// What the kernel should hold for a set of devices: the pure half of the reconciler, tested
// without a kernel.
//
// For every ACTIVE device that has a tunnel address:
//   WireGuard peer   public key = the device's WireGuard key, allowed IPs = exactly its /32,
//                    no endpoint (agents roam; the running endpoint is left alone), keepalive 0
//                    (the agent keeps the tunnel alive, the gateway never initiates);
//   filter           agent set entry (address, comment = device id) and one allowed triple
//                    (address, protocol, port) per allowlist rule.
// Revoked devices and devices without an address contribute nothing.

#include <cstdint>
#include <string>
#include <vector>

#include "controlplane/state/store.h"
#include "dataplane/base/key.h"
#include "dataplane/filter/packet_filter.h"
#include "dataplane/wireguard/device.h"

namespace portcullis::reconciler {

struct GatewaySettings {
  SecretKey private_key;  // the gateway's WireGuard key (wireguard.key)
  std::uint16_t listen_port = 30000;
};

struct Desired {
  wg::DeviceConfig device;                // peers sorted by public key
  std::vector<std::string> peer_devices;  // the device id of device.peers[i]
  filter::FilterContents contents;        // sorted, unique
  // Devices left out because another active device already holds the same WireGuard key or
  // address (the store prevents this; a violation is reported, not applied), one line each.
  std::vector<std::string> conflicts;
};

Desired desired_state(const std::vector<state::Device>& devices, const GatewaySettings& settings);

}  // namespace portcullis::reconciler
