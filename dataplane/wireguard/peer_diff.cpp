#include "dataplane/wireguard/peer_diff.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

namespace portcullis::wg {
namespace {

bool same_psk(const std::optional<SecretKey>& want, const std::optional<SecretKey>& have) {
  bool want_none = !want || want->is_zero();
  bool have_none = !have || have->is_zero();
  if (want_none || have_none) return want_none == have_none;
  return want->equals(*have);
}

PeerChange add_peer(const Peer& p) {
  PeerChange c;
  c.public_key = p.public_key;
  if (p.preshared_key && !p.preshared_key->is_zero()) c.preshared_key = p.preshared_key;
  c.endpoint = p.endpoint;
  if (p.persistent_keepalive) c.persistent_keepalive = p.persistent_keepalive;
  c.allowed_ips = normalize_allowed_ips(p.allowed_ips);
  return c;
}

// The in-place update of a running peer, or nothing if it already matches.
std::optional<PeerChange> update_peer(const Peer& want, const Peer& have) {
  PeerChange c;
  c.public_key = want.public_key;
  c.update_only = true;
  bool changed = false;
  if (!same_psk(want.preshared_key, have.preshared_key)) {
    c.preshared_key = want.preshared_key.value_or(SecretKey());
    changed = true;
  }
  if (want.endpoint && want.endpoint != have.endpoint) {
    c.endpoint = want.endpoint;
    changed = true;
  }
  if (want.persistent_keepalive != have.persistent_keepalive) {
    c.persistent_keepalive = want.persistent_keepalive;
    changed = true;
  }
  auto want_ips = normalize_allowed_ips(want.allowed_ips);
  if (want_ips != normalize_allowed_ips(have.allowed_ips)) {
    c.allowed_ips = std::move(want_ips);
    changed = true;
  }
  if (!changed) return std::nullopt;
  return c;
}

}  // namespace

std::vector<IpPrefix> normalize_allowed_ips(const std::vector<IpPrefix>& ips) {
  std::vector<IpPrefix> out;
  out.reserve(ips.size());
  for (const auto& p : ips) out.push_back(p.masked());
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

DeviceDelta diff_device(const DeviceConfig& want, const DeviceState& have) {
  DeviceDelta d;
  if (want.private_key && (!have.private_key || !want.private_key->equals(*have.private_key))) {
    d.private_key = want.private_key;
  }
  if (want.listen_port && *want.listen_port != have.listen_port) d.listen_port = want.listen_port;
  if (want.fwmark && *want.fwmark != have.fwmark) d.fwmark = want.fwmark;

  std::unordered_map<Key, const Peer*> running;
  running.reserve(have.peers.size());
  for (const auto& p : have.peers) running.emplace(p.public_key, &p);
  std::unordered_set<Key> wanted;
  wanted.reserve(want.peers.size());
  for (const auto& p : want.peers) wanted.insert(p.public_key);

  for (const auto& p : have.peers) {
    if (!wanted.count(p.public_key)) {
      PeerChange c;
      c.public_key = p.public_key;
      c.remove = true;
      d.peers.push_back(std::move(c));
    }
  }
  for (const auto& p : want.peers) {
    auto it = running.find(p.public_key);
    if (it == running.end()) {
      d.peers.push_back(add_peer(p));
    } else if (auto c = update_peer(p, *it->second)) {
      d.peers.push_back(std::move(*c));
    }
  }
  return d;
}

}  // namespace portcullis::wg
