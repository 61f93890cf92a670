#pragma once
// The WireGuard device boundary: one plain data model for reading and writing (after
// wireguard-tools' containers.h) and a two-method interface with a kernel (generic netlink) and a
// userspace (UAPI socket, wireguard-go) implementation.
//
// A change is sent as data. A PeerChange names one peer and carries only the fields to change;
// `remove` deletes the peer, `update_only` changes it only if it exists. There is no replace-all:
// peers not named in a delta keep their sessions, handshake times and counters.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/base/ip.h"
#include "dataplane/base/key.h"
#include "dataplane/base/result.h"

namespace portcullis::wg {

using Clock = std::chrono::system_clock;

// A peer as read from a device (all fields) or as wanted in a configuration (the observed-only
// fields are ignored there).
struct Peer {
  Key public_key;
  std::optional<SecretKey> preshared_key;  // absent: none (an all-zero key reads as absent)
  std::optional<Endpoint> endpoint;
  std::uint16_t persistent_keepalive = 0;  // seconds; 0 is off
  std::vector<IpPrefix> allowed_ips;

  // Observed only.
  Clock::time_point last_handshake{};  // epoch: never
  std::uint64_t rx_bytes = 0;
  std::uint64_t tx_bytes = 0;
  std::uint32_t protocol_version = 0;
};

struct DeviceState {
  std::string ifname;
  std::uint32_t ifindex = 0;  // 0 where the backend does not know it (UAPI)
  std::optional<SecretKey> private_key;
  std::optional<Key> public_key;
  std::uint16_t listen_port = 0;
  std::uint32_t fwmark = 0;
  std::vector<Peer> peers;

  const Peer* find_peer(const Key& public_key) const;
};

// What a device should be. Peers are the complete wanted set; the diff turns it into a delta.
struct DeviceConfig {
  std::optional<SecretKey> private_key;
  std::optional<std::uint16_t> listen_port;
  std::optional<std::uint32_t> fwmark;
  std::vector<Peer> peers;
};

struct PeerChange {
  Key public_key;
  bool remove = false;       // delete this peer (WGPEER_F_REMOVE_ME, UAPI remove=true)
  bool update_only = false;  // change it only if it exists (WGPEER_F_UPDATE_ONLY, update_only=true)
  std::optional<SecretKey> preshared_key;  // present: set it; an all-zero key clears it
  std::optional<Endpoint> endpoint;
  std::optional<std::uint16_t> persistent_keepalive;
  // Present: this peer's allowed IPs become exactly this list (WGPEER_F_REPLACE_ALLOWEDIPS on this
  // peer alone). Absent: unchanged.
  std::optional<std::vector<IpPrefix>> allowed_ips;
};

struct DeviceDelta {
  std::optional<SecretKey> private_key;
  std::optional<std::uint16_t> listen_port;
  std::optional<std::uint32_t> fwmark;
  std::vector<PeerChange> peers;

  bool empty() const { return !private_key && !listen_port && !fwmark && peers.empty(); }
};

class WireguardDevice {
 public:
  virtual ~WireguardDevice() = default;

  virtual const std::string& ifname() const = 0;

  // The full state: device fields and every peer with its allowed IPs, handshake and counters.
  virtual Result<DeviceState> read() = 0;

  // Applies a delta. Large deltas are split into as many kernel messages / UAPI transactions as
  // needed. On failure the error names the device, the first peer not applied and how many peers
  // were and were not applied ("device 'pcl0': applied peers 1-4096 of 10000, not applied
  // 4097-10000 starting at peer 'aBcDeFgH…': Invalid argument"); earlier messages stay applied.
  virtual Status apply(const DeviceDelta& delta) = 0;
};

}  // namespace portcullis::wg
