#include "controlplane/reconciler/desired_state.h"

#include <algorithm>
#include <unordered_map>

namespace portcullis::reconciler {

Desired desired_state(const std::vector<state::Device>& devices, const GatewaySettings& settings) {
  Desired d;
  d.device.private_key = settings.private_key;
  d.device.listen_port = settings.listen_port;

  // In id order, so that which of two conflicting devices wins does not depend on list order.
  std::vector<const state::Device*> live;
  live.reserve(devices.size());
  for (const auto& dev : devices) {
    if (dev.status == state::DeviceStatus::kActive && dev.address && dev.address->is_v4()) {
      live.push_back(&dev);
    }
  }
  std::sort(live.begin(), live.end(), [](auto* a, auto* b) { return a->id < b->id; });

  std::unordered_map<Key, const std::string*> by_key;
  std::unordered_map<std::uint32_t, const std::string*> by_address;
  by_key.reserve(live.size());
  by_address.reserve(live.size());
  d.device.peers.reserve(live.size());
  std::vector<std::string> live_ids;  // parallel to d.device.peers until sorted
  live_ids.reserve(live.size());
  d.contents.agents.reserve(live.size());

  for (const auto* dev : live) {
    const IpAddress& addr = *dev->address;
    if (dev->wg_key.is_zero()) {
      d.conflicts.push_back("device '" + dev->id + "': no WireGuard key");
      continue;
    }
    if (auto [it, fresh] = by_key.emplace(dev->wg_key, &dev->id); !fresh) {
      d.conflicts.push_back("device '" + dev->id + "': WireGuard key " + dev->wg_key.short_name() +
                            "… already used by device '" + *it->second + "'");
      continue;
    }
    if (auto [it, fresh] = by_address.emplace(addr.v4_host_order(), &dev->id); !fresh) {
      by_key.erase(dev->wg_key);
      d.conflicts.push_back("device '" + dev->id + "': address " + addr.to_string() +
                            " already used by device '" + *it->second + "'");
      continue;
    }

    wg::Peer peer;
    peer.public_key = dev->wg_key;
    peer.allowed_ips = {IpPrefix::host(addr)};
    d.device.peers.push_back(std::move(peer));
    live_ids.push_back(dev->id);

    d.contents.agents.push_back(filter::AgentEntry{addr, dev->id});
    for (const auto& rule : dev->ports) {
      d.contents.allowed.push_back(filter::AllowEntry{addr, rule.protocol, rule.port, dev->id});
    }
  }

  std::vector<std::size_t> order(d.device.peers.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return d.device.peers[a].public_key < d.device.peers[b].public_key;
  });
  std::vector<wg::Peer> peers;
  peers.reserve(order.size());
  d.peer_devices.reserve(order.size());
  for (std::size_t i : order) {
    peers.push_back(std::move(d.device.peers[i]));
    d.peer_devices.push_back(live_ids[i]);
  }
  d.device.peers = std::move(peers);
  std::sort(d.contents.agents.begin(), d.contents.agents.end());
  std::sort(d.contents.allowed.begin(), d.contents.allowed.end());
  d.contents.allowed.erase(std::unique(d.contents.allowed.begin(), d.contents.allowed.end()),
                           d.contents.allowed.end());
  return d;
}

}  // namespace portcullis::reconciler
