#include "controlplane/ctl/wg_json.h"

namespace portcullis::ctl {

nlohmann::json device_state_to_json(const wg::DeviceState& s) {
  nlohmann::json peers = nlohmann::json::array();
  for (const auto& p : s.peers) {
    nlohmann::json ips = nlohmann::json::array();
    for (const auto& ip : p.allowed_ips) ips.push_back(ip.to_string());
    auto since_epoch = p.last_handshake.time_since_epoch();
    peers.push_back({
        {"public_key", p.public_key.to_base64()},
        {"has_preshared_key", p.preshared_key.has_value() && !p.preshared_key->is_zero()},
        {"endpoint", p.endpoint ? nlohmann::json(p.endpoint->to_string()) : nlohmann::json()},
        {"allowed_ips", std::move(ips)},
        {"persistent_keepalive", p.persistent_keepalive},
        // Seconds since the Unix epoch; 0: never.
        {"last_handshake", std::chrono::duration<double>(since_epoch).count()},
        {"rx_bytes", p.rx_bytes},
        {"tx_bytes", p.tx_bytes},
    });
  }
  return {
      {"ifname", s.ifname},
      {"public_key", s.public_key ? nlohmann::json(s.public_key->to_base64()) : nlohmann::json()},
      {"listen_port", s.listen_port},
      {"fwmark", s.fwmark},
      {"peers", std::move(peers)},
  };
}

}  // namespace portcullis::ctl
