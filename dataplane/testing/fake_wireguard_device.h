#pragma once
// An in-memory WireGuard device with the kernel's semantics, for unit tests of the layers above.
//
// apply() follows drivers/net/wireguard/netlink.c:
// - a private key whose public key is a peer's removes that peer; an all-zero one clears the key;
// - a peer with the device's own public key is ignored;
// - remove / update_only on a missing peer do nothing;
// - allowed_ips replaces that peer's list; a prefix held by another peer moves to this one
//   (prefixes are stored masked, as the kernel stores them);
// - an all-zero preshared key clears it.
// Peers read back in the order they were added; to_text() sorts them for golden tests.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "dataplane/testing/scheduled_failures.h"
#include "dataplane/wireguard/device.h"

namespace portcullis::testing {

class FakeWireguardDevice final : public wg::WireguardDevice {
 public:
  explicit FakeWireguardDevice(std::string ifname, std::uint32_t ifindex = 7);

  const std::string& ifname() const override { return state_.ifname; }
  Result<wg::DeviceState> read() override;
  Status apply(const wg::DeviceDelta& delta) override;

  // The state itself: seed handshakes and counters, or inspect it without counting a read.
  wg::DeviceState& state() { return state_; }
  const wg::DeviceState& state() const { return state_; }

  // The nth apply() from now fails with `error`. With peers_applied_first > 0 the device fields
  // and that many peer changes are applied first (as when a later split message fails); with 0
  // nothing is.
  void fail_apply(int nth, Error error, std::size_t peers_applied_first = 0);
  void fail_read(int nth, Error error) { read_failures_.fail_call(nth, std::move(error)); }

  std::uint64_t apply_calls() const { return apply_failures_.calls(); }  // failed ones included
  std::uint64_t read_calls() const { return read_failures_.calls(); }
  // Peer changes carried out (a skipped update_only or remove of a missing peer counts too: the
  // kernel had to look at it).
  std::uint64_t peers_touched() const { return peers_touched_; }

  // Stable text, secrets never shown:
  //   interface pcl0
  //     public-key <base64> | (none)
  //     private-key (set) | (none)
  //     listen-port 30000
  //     fwmark 0x0
  //   peer <base64>
  //     preshared-key (set) | (none)
  //     endpoint 192.0.2.1:51820 | (none)
  //     allowed-ips 10.255.0.7/32, fd00::7/128 | (none)
  //     persistent-keepalive 25 | off
  std::string to_text() const;

 private:
  void apply_peer(const wg::PeerChange& change);
  void set_private_key(const SecretKey& key);

  wg::DeviceState state_;
  ScheduledFailures apply_failures_;
  ScheduledFailures read_failures_;
  std::map<std::uint64_t, std::size_t> partial_;  // apply call number -> peers applied first
  std::uint64_t peers_touched_ = 0;
};

}  // namespace portcullis::testing
