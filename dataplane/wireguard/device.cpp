#include "dataplane/wireguard/device.h"

namespace portcullis::wg {

const Peer* DeviceState::find_peer(const Key& key) const {
  for (const auto& p : peers) {
    if (p.public_key == key) return &p;
  }
  return nullptr;
}

}  // namespace portcullis::wg
