#pragma once
// The text of WireGuard's cross-platform userspace API (https://www.wireguard.com/xplatform/), as
// wireguard-go speaks it on /var/run/wireguard/<ifname>.sock. Pure: no sockets here.
//
// A change is one or more transactions:          A read is one request and its reply:
//   set=1                                          get=1
//   private_key=<64 hex>        (first only)       <blank line>
//   listen_port=30000           (first only)     reply:
//   fwmark=0                    (first only)       private_key=<hex>        device keys first,
//   public_key=<64 hex>                            listen_port=30000         then per peer:
//   remove=true | update_only=true                 public_key=<hex>
//   preshared_key=<64 hex>      (zero: clear)      preshared_key=<hex>       (zero: none)
//   endpoint=192.0.2.1:30000 | [2001:db8::1]:30000 protocol_version=1
//   persistent_keepalive_interval=25               endpoint=...              (if known)
//   replace_allowed_ips=true    (only with a list) last_handshake_time_sec=N
//   allowed_ip=10.255.0.2/32                       last_handshake_time_nsec=N
//   <blank line>                                   tx_bytes=N / rx_bytes=N
// answered by "errno=0\n\n" (or errno=N).          persistent_keepalive_interval=N
//                                                  allowed_ip=10.255.0.2/32 ...
// `replace_peers=true` is never sent.              errno=0
//                                                  <blank line>
//
// Reading is strict: every line is key=value with a lower-case key, numbers are plain decimals in
// range, keys are 64 hex digits, a peer appears once, device keys come before the first peer, and
// the reply ends with errno=0 and a blank line. Unknown keys: the UAPI does not say how a client
// treats them. We ignore a well-formed unknown key (as wg(8) does, so a newer wireguard-go that
// adds a field still reads), but never a malformed line or a known key in the wrong place.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/base/result.h"
#include "dataplane/wireguard/device.h"

namespace portcullis::wg::uapi {

// Bounds on one set=1 transaction. A peer with more allowed IPs than fit is continued in the next
// transaction (public_key=..., update_only=true, more allowed_ip lines, no replace), as
// wireguard-tools splits a peer across netlink messages.
inline constexpr std::size_t kDefaultMaxTransactionBytes = 64 * 1024;

// A get=1 reply larger than this is refused. wireguard-go writes about 450 bytes for a peer with
// one allowed IP; 64 MiB holds 100,000 such peers with room for a few extra allowed IPs each.
inline constexpr std::size_t kDefaultMaxReplyBytes = 64 * 1024 * 1024;
// No line of a valid reply is near this long (the longest is an IPv6 endpoint, < 64 bytes).
inline constexpr std::size_t kMaxLineBytes = 1024;

// One set=1 transaction, with the peers of the delta it covers: delta.peers[first_peer,
// end_peer). When `continues_peer` is true its first peer was begun in the previous transaction.
// The text may hold key material: it is wiped when the transaction is destroyed.
struct SetTransaction {
  std::string text;
  std::size_t first_peer = 0;
  std::size_t end_peer = 0;
  bool continues_peer = false;

  SetTransaction() = default;
  SetTransaction(SetTransaction&&) = default;
  SetTransaction& operator=(SetTransaction&&) = default;
  ~SetTransaction();
};

// Formats a delta as transactions of at most max_bytes each (a single line never splits, so the
// real bound is max(max_bytes, one peer's header + one allowed IP)). Device-wide keys go in the
// first transaction only. An empty delta gives no transactions.
std::vector<SetTransaction> format_set(const DeviceDelta& delta,
                                       std::size_t max_bytes = kDefaultMaxTransactionBytes);

// Parses the reply to get=1 (everything the server wrote, up to and including the blank line
// after errno=0). errno=N with N != 0 becomes that errno.
Result<DeviceState> parse_get_reply(std::string_view ifname, std::string_view reply,
                                    std::size_t max_bytes = kDefaultMaxReplyBytes);

// Parses the reply to set=1: exactly "errno=N\n\n". Returns N (0 on success).
Result<int> parse_set_reply(std::string_view ifname, std::string_view reply);

// Whether `data` holds a complete reply: it ends with the blank line that closes one. Used by
// the reader to know when to stop; says nothing about validity.
bool reply_complete(std::string_view data);

// 64 lower-case hex digits, as the UAPI writes keys; parsing accepts either case.
std::string key_to_hex(const KeyBytes& key);
Result<KeyBytes> key_from_hex(std::string_view hex);

}  // namespace portcullis::wg::uapi
