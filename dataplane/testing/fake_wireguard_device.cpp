#include "dataplane/testing/fake_wireguard_device.h"

#include <algorithm>
#include <cstdio>

#include "dataplane/wireguard/peer_diff.h"

namespace portcullis::testing {

FakeWireguardDevice::FakeWireguardDevice(std::string ifname, std::uint32_t ifindex) {
  state_.ifname = std::move(ifname);
  state_.ifindex = ifindex;
}

Result<wg::DeviceState> FakeWireguardDevice::read() {
  if (auto e = read_failures_.next_call()) return fail(std::move(*e));
  return state_;
}

void FakeWireguardDevice::fail_apply(int nth, Error error, std::size_t peers_applied_first) {
  apply_failures_.fail_call(nth, std::move(error));
  partial_[apply_failures_.calls() + static_cast<std::uint64_t>(nth)] = peers_applied_first;
}

void FakeWireguardDevice::set_private_key(const SecretKey& key) {
  if (key.is_zero()) {
    state_.private_key.reset();
    state_.public_key.reset();
    return;
  }
  Key pub = key.public_key();
  // The kernel drops a peer that has the device's new public key: it would be talking to itself.
  std::erase_if(state_.peers, [&](const wg::Peer& p) { return p.public_key == pub; });
  state_.private_key = key;
  state_.public_key = pub;
}

void FakeWireguardDevice::apply_peer(const wg::PeerChange& c) {
  ++peers_touched_;
  if (state_.public_key && *state_.public_key == c.public_key) return;  // ignored, as the kernel
  auto it = std::find_if(state_.peers.begin(), state_.peers.end(),
                         [&](const wg::Peer& p) { return p.public_key == c.public_key; });
  if (it == state_.peers.end()) {
    if (c.remove || c.update_only) return;
    wg::Peer p;
    p.public_key = c.public_key;
    state_.peers.push_back(std::move(p));
    it = std::prev(state_.peers.end());
  }
  if (c.remove) {
    state_.peers.erase(it);
    return;
  }
  wg::Peer& peer = *it;
  if (c.preshared_key) {
    if (c.preshared_key->is_zero()) {
      peer.preshared_key.reset();
    } else {
      peer.preshared_key = *c.preshared_key;
    }
  }
  if (c.endpoint) peer.endpoint = *c.endpoint;
  if (c.allowed_ips) {
    peer.allowed_ips.clear();
    for (const auto& ip : *c.allowed_ips) {
      IpPrefix masked = ip.masked();
      // One owner per prefix: taking it from another peer is how the kernel's trie works.
      for (auto& other : state_.peers) {
        std::erase(other.allowed_ips, masked);
      }
      peer.allowed_ips.push_back(masked);
    }
  }
  if (c.persistent_keepalive) peer.persistent_keepalive = *c.persistent_keepalive;
}

Status FakeWireguardDevice::apply(const wg::DeviceDelta& delta) {
  std::uint64_t call = apply_failures_.calls() + 1;
  auto failure = apply_failures_.next_call();
  std::size_t limit = delta.peers.size();
  if (failure) {
    limit = std::min(limit, partial_[call]);
    partial_.erase(call);
  }

  // Device-wide fields travel in the first message: a failure after some peers leaves them set;
  // a failure with no peers applied leaves nothing.
  if (!failure || limit > 0) {
    if (delta.private_key) set_private_key(*delta.private_key);
    if (delta.listen_port) state_.listen_port = *delta.listen_port;
    if (delta.fwmark) state_.fwmark = *delta.fwmark;
  }
  for (std::size_t i = 0; i < limit; ++i) apply_peer(delta.peers[i]);

  if (!failure) return {};
  std::string context = "device '" + state_.ifname + "': ";
  if (delta.peers.empty()) {
    context += "apply device settings";
  } else {
    context += limit == 0 ? "applied no peers" : "applied peers 1-" + std::to_string(limit);
    context += " of " + std::to_string(delta.peers.size());
    if (limit < delta.peers.size()) {
      context += ", not applied " + std::to_string(limit + 1) + "-" +
                 std::to_string(delta.peers.size()) + " starting at peer '" +
                 delta.peers[limit].public_key.short_name() + "…'";
    }
  }
  return fail(std::move(*failure).wrap(context));
}

std::string FakeWireguardDevice::to_text() const {
  std::string out = "interface " + state_.ifname + "\n";
  out += "  public-key " + (state_.public_key ? state_.public_key->to_base64() : "(none)") + "\n";
  out += std::string("  private-key ") + (state_.private_key ? "(set)" : "(none)") + "\n";
  out += "  listen-port " + std::to_string(state_.listen_port) + "\n";
  char mark[16];
  std::snprintf(mark, sizeof mark, "0x%x", state_.fwmark);
  out += std::string("  fwmark ") + mark + "\n";

  std::vector<const wg::Peer*> peers;
  for (const auto& p : state_.peers) peers.push_back(&p);
  std::sort(peers.begin(), peers.end(),
            [](const wg::Peer* a, const wg::Peer* b) { return a->public_key < b->public_key; });
  for (const auto* p : peers) {
    out += "peer " + p->public_key.to_base64() + "\n";
    out += std::string("  preshared-key ") + (p->preshared_key ? "(set)" : "(none)") + "\n";
    out += "  endpoint " + (p->endpoint ? p->endpoint->to_string() : "(none)") + "\n";
    auto ips = wg::normalize_allowed_ips(p->allowed_ips);
    std::string list;
    for (const auto& ip : ips) list += (list.empty() ? "" : ", ") + ip.to_string();
    out += "  allowed-ips " + (list.empty() ? "(none)" : list) + "\n";
    out += "  persistent-keepalive " +
           (p->persistent_keepalive ? std::to_string(p->persistent_keepalive) : "off") + "\n";
  }
  return out;
}

}  // namespace portcullis::testing
