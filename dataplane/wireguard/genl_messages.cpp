#include "dataplane/wireguard/genl_messages.h"

#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/wireguard.h>
#include <net/if.h>
#include <sodium/utils.h>

#include <cstring>
#include <unordered_set>

namespace portcullis::wg::genl {

namespace {

// List items (peers, allowed IPs) are nested attributes of type 0, as wireguard-tools sends them
// and the kernel dumps them; the kernel walks them with nla_for_each_nested and ignores the type.
constexpr std::uint16_t kListItem = 0;

std::string peer_name(const Key& key) { return "peer '" + key.short_name() + "…'"; }

tl::unexpected<Error> fail_protocol(std::string context) {
  return fail(Error::protocol(std::move(context)));
}

Status check_ifname(std::string_view ifname) {
  if (ifname.empty() || ifname.size() >= IFNAMSIZ || ifname.find('\0') != std::string_view::npos) {
    return fail_invalid("interface name '" + std::string(ifname) + "' is not 1-" +
                        std::to_string(IFNAMSIZ - 1) + " characters");
  }
  return {};
}

// Writes one netlink message into a zeroed buffer of `limit` bytes.
class MessageWriter {
 public:
  explicit MessageWriter(std::size_t limit) : buf_(limit) {}
  ~MessageWriter() { sodium_memzero(buf_.data(), buf_.size()); }

  nlmsghdr* start(std::uint16_t type, std::uint16_t flags, std::uint8_t cmd, std::uint8_t version) {
    sodium_memzero(buf_.data(), buf_.size());
    nlh_ = mnl_nlmsg_put_header(buf_.data());
    nlh_->nlmsg_type = type;
    nlh_->nlmsg_flags = flags;
    auto* g = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(nlh_, sizeof(genlmsghdr)));
    g->cmd = cmd;
    g->version = version;
    return nlh_;
  }
  nlmsghdr* nlh() const { return nlh_; }
  std::size_t limit() const { return buf_.size(); }
  std::vector<std::uint8_t> take() const {
    return std::vector<std::uint8_t>(buf_.begin(), buf_.begin() + nlh_->nlmsg_len);
  }

 private:
  std::vector<std::uint8_t> buf_;
  nlmsghdr* nlh_ = nullptr;
};

// The smallest limit that holds the headers and a full interface name.
constexpr std::size_t kMinLimit = NLMSG_HDRLEN + GENL_HDRLEN + MNL_ATTR_HDRLEN + IFNAMSIZ;

bool put_allowed_ip(nlmsghdr* nlh, std::size_t limit, const IpPrefix& prefix) {
  nlattr* item = mnl_attr_nest_start_check(nlh, limit, kListItem);
  if (!item) return false;
  if (!mnl_attr_put_u16_check(nlh, limit, WGALLOWEDIP_A_FAMILY,
                              static_cast<std::uint16_t>(prefix.family())) ||
      !mnl_attr_put_check(nlh, limit, WGALLOWEDIP_A_IPADDR, prefix.address().size(),
                          prefix.address().data()) ||
      !mnl_attr_put_u8_check(nlh, limit, WGALLOWEDIP_A_CIDR_MASK,
                             static_cast<std::uint8_t>(prefix.cidr()))) {
    mnl_attr_nest_cancel(nlh, item);
    return false;
  }
  mnl_attr_nest_end(nlh, item);
  return true;
}

enum class PeerFit { kDone, kPartial, kNoRoom };

// Appends one peer, from allowed IP *next_ip on. kDone: all of it is in (and *next_ip is reset to
// 0); kPartial: the message is full after some allowed IPs, *next_ip is the first one left;
// kNoRoom: nothing was added.
//
// A peer split across messages, and why (drivers/net/wireguard/netlink.c, set_peer): the kernel
// handles every peer nest on its own. It looks the peer up by public key and creates it unless
// WGPEER_F_UPDATE_ONLY or WGPEER_F_REMOVE_ME is set; it sets preshared key, endpoint and
// keepalive; with WGPEER_F_REPLACE_ALLOWEDIPS it drops all the peer's allowed IPs, then adds the
// listed ones. So the first part of a split peer carries every field and the flags of the change;
// a continuation carries only the public key, WGPEER_F_UPDATE_ONLY and the remaining allowed IPs.
// REPLACE_ALLOWEDIPS again would drop the IPs the earlier message added; UPDATE_ONLY keeps a peer
// that someone removed between the two messages from being re-created with only the tail of its
// list and none of its other fields. A removal carries no allowed IPs, so it is never split.
// A peer starts in a message only when its fields and at least one allowed IP fit, so no peer is
// left with an emptied list until the next message when it did not have to be.
PeerFit put_peer(nlmsghdr* nlh, std::size_t limit, const PeerChange& p, std::size_t* next_ip) {
  const bool continuing = *next_ip > 0;
  nlattr* peer = mnl_attr_nest_start_check(nlh, limit, kListItem);
  if (!peer) return PeerFit::kNoRoom;
  auto no_room = [&] {
    mnl_attr_nest_cancel(nlh, peer);
    return PeerFit::kNoRoom;
  };
  if (!mnl_attr_put_check(nlh, limit, WGPEER_A_PUBLIC_KEY, kKeyLen, p.public_key.data())) {
    return no_room();
  }
  std::uint32_t flags = 0;
  if (continuing) {
    flags = WGPEER_F_UPDATE_ONLY;
  } else {
    if (p.remove) flags |= WGPEER_F_REMOVE_ME;
    if (p.update_only) flags |= WGPEER_F_UPDATE_ONLY;
    if (p.allowed_ips && !p.remove) flags |= WGPEER_F_REPLACE_ALLOWEDIPS;
  }
  if (flags != 0 && !mnl_attr_put_u32_check(nlh, limit, WGPEER_A_FLAGS, flags)) return no_room();
  if (p.remove) {
    mnl_attr_nest_end(nlh, peer);
    *next_ip = 0;
    return PeerFit::kDone;
  }
  if (!continuing) {
    // An all-zero preshared key clears it (the kernel stores what it is given; zero means none).
    if (p.preshared_key &&
        !mnl_attr_put_check(nlh, limit, WGPEER_A_PRESHARED_KEY, kKeyLen, p.preshared_key->data())) {
      return no_room();
    }
    if (p.endpoint) {
      sockaddr_storage ss;
      socklen_t len = p.endpoint->to_sockaddr(&ss);
      if (!mnl_attr_put_check(nlh, limit, WGPEER_A_ENDPOINT, len, &ss)) return no_room();
    }
    if (p.persistent_keepalive &&
        !mnl_attr_put_u16_check(nlh, limit, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
                                *p.persistent_keepalive)) {
      return no_room();
    }
  }
  if (p.allowed_ips && *next_ip < p.allowed_ips->size()) {
    const auto& ips = *p.allowed_ips;
    nlattr* nest = mnl_attr_nest_start_check(nlh, limit, WGPEER_A_ALLOWEDIPS);
    if (!nest) return no_room();
    for (std::size_t i = *next_ip; i < ips.size(); ++i) {
      if (!put_allowed_ip(nlh, limit, ips[i])) {
        if (i == *next_ip) return no_room();
        mnl_attr_nest_end(nlh, nest);
        mnl_attr_nest_end(nlh, peer);
        *next_ip = i;
        return PeerFit::kPartial;
      }
    }
    mnl_attr_nest_end(nlh, nest);
  }
  mnl_attr_nest_end(nlh, peer);
  *next_ip = 0;
  return PeerFit::kDone;
}

Status check_delta(const DeviceDelta& delta) {
  for (const auto& p : delta.peers) {
    if (p.remove) continue;
    if (p.endpoint && p.endpoint->address().family() == AF_UNSPEC) {
      return fail_invalid(peer_name(p.public_key) + ": endpoint has no address");
    }
    if (!p.allowed_ips) continue;
    for (std::size_t i = 0; i < p.allowed_ips->size(); ++i) {
      if ((*p.allowed_ips)[i].family() == AF_UNSPEC) {
        return fail_invalid(peer_name(p.public_key) + ": allowed IP #" + std::to_string(i + 1) +
                            " has no address");
      }
    }
  }
  return {};
}

}  // namespace

std::size_t default_message_limit() { return MNL_SOCKET_BUFFER_SIZE; }

SetDeviceMessage::~SetDeviceMessage() { sodium_memzero(bytes.data(), bytes.size()); }

Result<std::vector<SetDeviceMessage>> build_set_device(std::string_view ifname,
                                                       std::uint16_t family_id,
                                                       const DeviceDelta& delta,
                                                       std::size_t limit) {
  std::vector<SetDeviceMessage> out;
  if (auto ok = check_ifname(ifname); !ok) return fail(std::move(ok.error()));
  if (auto ok = check_delta(delta); !ok) return fail(std::move(ok.error()));
  if (delta.empty()) return out;
  if (limit < kMinLimit) {
    return fail_errno(EMSGSIZE, "netlink message limit of " + std::to_string(limit) +
                                    " bytes is below " + std::to_string(kMinLimit));
  }
  const std::string name(ifname);
  const auto& peers = delta.peers;
  MessageWriter w(limit);
  std::size_t peer = 0;     // the next peer to send
  std::size_t next_ip = 0;  // its next allowed IP
  do {
    nlmsghdr* nlh =
        w.start(family_id, NLM_F_REQUEST | NLM_F_ACK, WG_CMD_SET_DEVICE, WG_GENL_VERSION);
    mnl_attr_put_strz(nlh, WGDEVICE_A_IFNAME, name.c_str());  // fits: limit >= kMinLimit
    const bool first = out.empty();
    bool progress = false;
    if (first) {
      // Device-wide fields, first message only. No WGDEVICE_A_FLAGS: we never send
      // WGDEVICE_F_REPLACE_PEERS (peers not named in the delta keep their sessions).
      bool fit = true;
      if (delta.private_key) {
        fit = fit && mnl_attr_put_check(nlh, limit, WGDEVICE_A_PRIVATE_KEY, kKeyLen,
                                        delta.private_key->data());
      }
      if (delta.listen_port) {
        fit = fit && mnl_attr_put_u16_check(nlh, limit, WGDEVICE_A_LISTEN_PORT, *delta.listen_port);
      }
      if (delta.fwmark)
        fit = fit && mnl_attr_put_u32_check(nlh, limit, WGDEVICE_A_FWMARK, *delta.fwmark);
      if (!fit) {
        return fail_errno(EMSGSIZE, "device '" + name + "': device fields do not fit in " +
                                        std::to_string(limit) + " bytes");
      }
      progress = delta.private_key || delta.listen_port || delta.fwmark;
    }
    SetDeviceMessage msg;
    msg.first_peer = peer;
    msg.first_peer_continued = next_ip > 0;
    if (peer < peers.size()) {
      nlattr* nest = mnl_attr_nest_start_check(nlh, limit, WGDEVICE_A_PEERS);
      bool any = false;
      while (nest && peer < peers.size()) {
        PeerFit fit = put_peer(nlh, limit, peers[peer], &next_ip);
        if (fit == PeerFit::kNoRoom) break;
        any = true;
        if (fit == PeerFit::kPartial) break;
        ++peer;
      }
      if (any) {
        mnl_attr_nest_end(nlh, nest);
        progress = true;
      } else if (nest) {
        mnl_attr_nest_cancel(nlh, nest);
      }
    }
    if (!progress) {
      return fail_errno(EMSGSIZE, "device '" + name + "': " + peer_name(peers[peer].public_key) +
                                      " does not fit in a message of " + std::to_string(limit) +
                                      " bytes");
    }
    msg.last_peer_continues = next_ip > 0;
    msg.end_peer = next_ip > 0 ? peer + 1 : peer;
    msg.bytes = w.take();
    out.push_back(std::move(msg));
  } while (peer < peers.size());
  return out;
}

std::vector<std::uint8_t> build_get_device_request(std::string_view ifname,
                                                   std::uint16_t family_id) {
  MessageWriter w(kMinLimit);
  nlmsghdr* nlh =
      w.start(family_id, NLM_F_REQUEST | NLM_F_DUMP, WG_CMD_GET_DEVICE, WG_GENL_VERSION);
  const std::string name(ifname.substr(0, IFNAMSIZ - 1));
  mnl_attr_put_strz(nlh, WGDEVICE_A_IFNAME, name.c_str());
  return w.take();
}

std::vector<std::uint8_t> build_get_family_request(std::string_view family_name) {
  const std::string name(family_name.substr(0, GENL_NAMSIZ - 1));
  MessageWriter w(NLMSG_HDRLEN + GENL_HDRLEN + MNL_ATTR_HDRLEN + GENL_NAMSIZ);
  nlmsghdr* nlh = w.start(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, CTRL_CMD_GETFAMILY, 1);
  mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, name.c_str());
  return w.take();
}

// ---- parsing ----

namespace {

using Bytes = std::span<const std::uint8_t>;

Bytes payload(const nlattr* a) {
  return Bytes(static_cast<const std::uint8_t*>(mnl_attr_get_payload(a)),
               mnl_attr_get_payload_len(a));
}

// Calls fn(attr) for each attribute in `region`. An attribute shorter than its header or longer
// than what is left, or bytes left over that cannot hold a header, are errors: the kernel never
// sends them. The last attribute may omit its alignment padding.
template <class Fn>
Status for_each_attr(Bytes region, const char* where, Fn&& fn) {
  std::size_t off = 0;
  while (off < region.size()) {
    const std::size_t rest = region.size() - off;
    const auto* a = reinterpret_cast<const nlattr*>(region.data() + off);
    if (rest < MNL_ATTR_HDRLEN || a->nla_len < MNL_ATTR_HDRLEN || a->nla_len > rest) {
      return fail_protocol(std::string(where) + ": malformed attribute at offset " +
                           std::to_string(off) + " (" + std::to_string(rest) + " bytes left)");
    }
    if (auto ok = fn(a); !ok) return ok;
    off += MNL_ALIGN(a->nla_len);
  }
  return {};
}

// Type and length of one attribute, checked with libmnl's validator (exact length for fixed-size
// types; `len` for binary ones).
Status check_attr(const nlattr* a, mnl_attr_data_type type, const char* what, std::size_t len = 0) {
  int r = len ? mnl_attr_validate2(a, type, len) : mnl_attr_validate(a, type);
  if (r < 0) {
    return fail_protocol(std::string(what) + ": attribute " + std::to_string(mnl_attr_get_type(a)) +
                         " has a bad length " + std::to_string(mnl_attr_get_payload_len(a)));
  }
  return {};
}

// Returns the error of a Status or Result expression. Nested uses (a lambda inside a use) get
// distinct variable names.
#define PCL_CAT_(a, b) a##b
#define PCL_CAT(a, b) PCL_CAT_(a, b)
#define PCL_TRY_AS(expr, name)                                           \
  do {                                                                   \
    if (auto name = (expr); !name) return fail(std::move(name.error())); \
  } while (0)
#define PCL_TRY(expr) PCL_TRY_AS(expr, PCL_CAT(pcl_ok_, __COUNTER__))

Result<IpPrefix> parse_allowed_ip(const nlattr* item, const std::string& where) {
  PCL_TRY(check_attr(item, MNL_TYPE_NESTED, where.c_str()));
  const nlattr* family = nullptr;
  const nlattr* addr = nullptr;
  const nlattr* cidr = nullptr;
  PCL_TRY(for_each_attr(payload(item), where.c_str(), [&](const nlattr* a) -> Status {
    switch (mnl_attr_get_type(a)) {
      case WGALLOWEDIP_A_FAMILY:
        family = a;
        return check_attr(a, MNL_TYPE_U16, where.c_str());
      case WGALLOWEDIP_A_IPADDR:
        addr = a;
        return {};
      case WGALLOWEDIP_A_CIDR_MASK:
        cidr = a;
        return check_attr(a, MNL_TYPE_U8, where.c_str());
      default:
        return {};  // newer kernels may add attributes
    }
  }));
  if (!family || !addr || !cidr) return fail_protocol(where + ": allowed IP misses a field");
  IpAddress ip;
  const auto bytes = payload(addr);
  switch (mnl_attr_get_u16(family)) {
    case AF_INET: {
      if (bytes.size() != sizeof(in_addr)) return fail_protocol(where + ": IPv4 address length");
      in_addr a4;
      std::memcpy(&a4, bytes.data(), sizeof a4);
      ip = IpAddress::v4(a4);
      break;
    }
    case AF_INET6: {
      if (bytes.size() != sizeof(in6_addr)) return fail_protocol(where + ": IPv6 address length");
      in6_addr a6;
      std::memcpy(&a6, bytes.data(), sizeof a6);
      ip = IpAddress::v6(a6);
      break;
    }
    default:
      return fail_protocol(where + ": allowed IP family " +
                           std::to_string(mnl_attr_get_u16(family)));
  }
  auto prefix = IpPrefix::make(ip, mnl_attr_get_u8(cidr));
  if (!prefix) return fail_protocol(where + ": " + prefix.error().context());
  return *prefix;
}

Result<Clock::time_point> parse_timespec(const nlattr* a) {
  // struct __kernel_timespec: two 64-bit signed fields.
  std::int64_t ts[2];
  std::memcpy(ts, mnl_attr_get_payload(a), sizeof ts);
  constexpr std::int64_t kMaxSeconds = 9'000'000'000;  // system_clock (ns) ends in 2262
  if (ts[0] < 0 || ts[0] > kMaxSeconds || ts[1] < 0 || ts[1] >= 1'000'000'000) {
    return fail_protocol("last handshake time out of range");
  }
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(ts[0]) + std::chrono::nanoseconds(ts[1])));
}

class DumpParser {
 public:
  Status message(const nlmsghdr* nlh, std::size_t index) {
    where_ = "dump message " + std::to_string(index + 1);
    if (nlh->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN) return fail_protocol(where_ + ": truncated");
    const auto* g = static_cast<const genlmsghdr*>(mnl_nlmsg_get_payload(nlh));
    if (g->cmd != WG_CMD_GET_DEVICE) {
      return fail_protocol(where_ + ": unexpected command " + std::to_string(g->cmd));
    }
    ++messages_;
    first_in_message_ = true;
    const auto* base = reinterpret_cast<const std::uint8_t*>(nlh);
    Bytes attrs(base + NLMSG_HDRLEN + GENL_HDRLEN, nlh->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN);
    return for_each_attr(attrs, where_.c_str(), [&](const nlattr* a) { return device_attr(a); });
  }

  Result<DeviceState> finish() && {
    if (messages_ == 0) return fail_protocol("dump has no device message");
    return std::move(state_);
  }

 private:
  Status device_attr(const nlattr* a) {
    const char* w = where_.c_str();
    switch (mnl_attr_get_type(a)) {
      case WGDEVICE_A_IFINDEX:
        PCL_TRY(check_attr(a, MNL_TYPE_U32, w));
        state_.ifindex = mnl_attr_get_u32(a);
        return {};
      case WGDEVICE_A_IFNAME: {
        PCL_TRY(check_attr(a, MNL_TYPE_NUL_STRING, w));
        if (mnl_attr_get_payload_len(a) > IFNAMSIZ) return fail_protocol(where_ + ": long ifname");
        state_.ifname = mnl_attr_get_str(a);
        return {};
      }
      case WGDEVICE_A_PRIVATE_KEY: {
        PCL_TRY(check_attr(a, MNL_TYPE_BINARY, w, kKeyLen));
        auto k = SecretKey::from_bytes(payload(a));
        if (k && !k->is_zero()) state_.private_key = std::move(*k);
        return {};
      }
      case WGDEVICE_A_PUBLIC_KEY: {
        PCL_TRY(check_attr(a, MNL_TYPE_BINARY, w, kKeyLen));
        auto k = Key::from_bytes(payload(a));
        if (k && !k->is_zero()) state_.public_key = *k;
        return {};
      }
      case WGDEVICE_A_LISTEN_PORT:
        PCL_TRY(check_attr(a, MNL_TYPE_U16, w));
        state_.listen_port = mnl_attr_get_u16(a);
        return {};
      case WGDEVICE_A_FWMARK:
        PCL_TRY(check_attr(a, MNL_TYPE_U32, w));
        state_.fwmark = mnl_attr_get_u32(a);
        return {};
      case WGDEVICE_A_PEERS:
        PCL_TRY(check_attr(a, MNL_TYPE_NESTED, w));
        return for_each_attr(payload(a), w, [&](const nlattr* p) { return peer(p); });
      default:
        return {};  // WGDEVICE_A_FLAGS (never dumped), padding, newer attributes
    }
  }

  Status peer(const nlattr* item) {
    PCL_TRY(check_attr(item, MNL_TYPE_NESTED, where_.c_str()));
    Peer p;
    bool has_key = false;
    std::vector<const nlattr*> allowed;
    std::string w = where_ + ": peer " + std::to_string(state_.peers.size() + 1);
    PCL_TRY(for_each_attr(payload(item), w.c_str(), [&](const nlattr* a) -> Status {
      const char* wc = w.c_str();
      switch (mnl_attr_get_type(a)) {
        case WGPEER_A_PUBLIC_KEY: {
          PCL_TRY(check_attr(a, MNL_TYPE_BINARY, wc, kKeyLen));
          p.public_key = *Key::from_bytes(payload(a));
          has_key = true;
          return {};
        }
        case WGPEER_A_PRESHARED_KEY: {
          PCL_TRY(check_attr(a, MNL_TYPE_BINARY, wc, kKeyLen));
          auto k = SecretKey::from_bytes(payload(a));
          if (k && !k->is_zero()) p.preshared_key = std::move(*k);
          return {};
        }
        case WGPEER_A_ENDPOINT: {
          const auto bytes = payload(a);
          sa_family_t family = AF_UNSPEC;
          if (bytes.size() >= sizeof family) std::memcpy(&family, bytes.data(), sizeof family);
          if (!((family == AF_INET && bytes.size() == sizeof(sockaddr_in)) ||
                (family == AF_INET6 && bytes.size() == sizeof(sockaddr_in6)))) {
            return fail_protocol(w + ": endpoint of family " + std::to_string(family) +
                                 " and length " + std::to_string(bytes.size()));
          }
          auto e = Endpoint::from_sockaddr(static_cast<const sockaddr*>(mnl_attr_get_payload(a)),
                                           bytes.size());
          if (!e) return fail_protocol(w + ": " + e.error().context());
          p.endpoint = *e;
          return {};
        }
        case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL:
          PCL_TRY(check_attr(a, MNL_TYPE_U16, wc));
          p.persistent_keepalive = mnl_attr_get_u16(a);
          return {};
        case WGPEER_A_LAST_HANDSHAKE_TIME: {
          PCL_TRY(check_attr(a, MNL_TYPE_BINARY, wc, 2 * sizeof(std::int64_t)));
          auto t = parse_timespec(a);
          if (!t) return fail(std::move(t.error()).wrap(w));
          p.last_handshake = *t;
          return {};
        }
        case WGPEER_A_RX_BYTES:
          PCL_TRY(check_attr(a, MNL_TYPE_U64, wc));
          p.rx_bytes = mnl_attr_get_u64(a);
          return {};
        case WGPEER_A_TX_BYTES:
          PCL_TRY(check_attr(a, MNL_TYPE_U64, wc));
          p.tx_bytes = mnl_attr_get_u64(a);
          return {};
        case WGPEER_A_PROTOCOL_VERSION:
          PCL_TRY(check_attr(a, MNL_TYPE_U32, wc));
          p.protocol_version = mnl_attr_get_u32(a);
          return {};
        case WGPEER_A_ALLOWEDIPS:
          PCL_TRY(check_attr(a, MNL_TYPE_NESTED, wc));
          return for_each_attr(payload(a), wc, [&](const nlattr* ip) -> Status {
            auto prefix = parse_allowed_ip(ip, w);
            if (!prefix) return fail(std::move(prefix.error()));
            p.allowed_ips.push_back(*prefix);
            return {};
          });
        default:
          return {};  // WGPEER_A_UNSPEC padding before 64-bit counters, newer attributes
      }
    }));
    if (!has_key) return fail_protocol(w + ": no public key");

    // A peer the kernel split repeats its public key as the first peer of the next message and
    // carries only the rest of its allowed IPs (as wireguard-tools' coalesce_peers merges them).
    const bool first = std::exchange(first_in_message_, false);
    if (first && !state_.peers.empty() && state_.peers.back().public_key == p.public_key) {
      auto& ips = state_.peers.back().allowed_ips;
      ips.insert(ips.end(), p.allowed_ips.begin(), p.allowed_ips.end());
      return {};
    }
    if (!seen_.insert(p.public_key).second) {
      return fail_protocol(w + ": " + peer_name(p.public_key) + " appears twice");
    }
    state_.peers.push_back(std::move(p));
    return {};
  }

  DeviceState state_;
  std::unordered_set<Key> seen_;
  std::size_t messages_ = 0;
  bool first_in_message_ = false;
  std::string where_;
};

// Walks whole netlink messages; fn(nlh, index) for each. The stream must be 4-byte aligned.
template <class Fn>
Status for_each_message(Bytes stream, Fn&& fn) {
  std::size_t off = 0;
  std::size_t index = 0;
  while (off < stream.size()) {
    const std::size_t rest = stream.size() - off;
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(stream.data() + off);
    if (rest < NLMSG_HDRLEN || nlh->nlmsg_len < NLMSG_HDRLEN || nlh->nlmsg_len > rest) {
      return fail_protocol("malformed netlink message at offset " + std::to_string(off) + " (" +
                           std::to_string(rest) + " bytes left)");
    }
    bool stop = false;
    if (auto ok = fn(nlh, index++, &stop); !ok) return ok;
    if (stop) break;
    off += NLMSG_ALIGN(nlh->nlmsg_len);
  }
  return {};
}

// Copies a stream that is not 4-byte aligned, so that headers can be read in place.
Bytes aligned(Bytes in, std::vector<std::uint8_t>* copy) {
  if (reinterpret_cast<std::uintptr_t>(in.data()) % NLMSG_ALIGNTO == 0) return in;
  copy->assign(in.begin(), in.end());
  return Bytes(copy->data(), copy->size());
}

}  // namespace

Result<NetlinkAck> parse_ack(Bytes message) {
  std::vector<std::uint8_t> copy;
  message = aligned(message, &copy);
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(message.data());
  if (message.size() < NLMSG_HDRLEN || nlh->nlmsg_len > message.size() ||
      nlh->nlmsg_type != NLMSG_ERROR || nlh->nlmsg_len < NLMSG_HDRLEN + sizeof(nlmsgerr)) {
    return fail_protocol("malformed netlink error message");
  }
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  NetlinkAck ack;
  ack.error = err->error;
  if (ack.error > 0 || ack.error < -4095) return fail_protocol("netlink error code out of range");
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return ack;
  // Extended ACK attributes follow nlmsgerr and, unless NLM_F_CAPPED, the echoed request body.
  std::size_t off = NLMSG_HDRLEN + sizeof(nlmsgerr);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) {
    if (err->msg.nlmsg_len < NLMSG_HDRLEN) return ack;
    off += NLMSG_ALIGN(err->msg.nlmsg_len - NLMSG_HDRLEN);
  }
  if (off > nlh->nlmsg_len) return ack;
  Bytes tlvs(message.data() + off, nlh->nlmsg_len - off);
  auto walked = for_each_attr(tlvs, "extended ack", [&](const nlattr* a) -> Status {
    if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG &&
        mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0) {
      ack.message = mnl_attr_get_str(a);
    }
    return {};
  });
  (void)walked;  // a malformed extended ack still carries the error code
  return ack;
}

Result<std::uint16_t> parse_family_reply(Bytes message) {
  std::vector<std::uint8_t> copy;
  message = aligned(message, &copy);
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(message.data());
  if (message.size() < NLMSG_HDRLEN + GENL_HDRLEN || nlh->nlmsg_len > message.size() ||
      nlh->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN || nlh->nlmsg_type != GENL_ID_CTRL) {
    return fail_protocol("malformed generic netlink family reply");
  }
  std::optional<std::uint16_t> id;
  Bytes attrs(message.data() + NLMSG_HDRLEN + GENL_HDRLEN,
              nlh->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN);
  PCL_TRY(for_each_attr(attrs, "family reply", [&](const nlattr* a) -> Status {
    if (mnl_attr_get_type(a) != CTRL_ATTR_FAMILY_ID) return {};
    PCL_TRY(check_attr(a, MNL_TYPE_U16, "family reply"));
    id = mnl_attr_get_u16(a);
    return {};
  }));
  if (!id) return fail_protocol("generic netlink family reply has no family id");
  return *id;
}

Result<DeviceState> parse_get_device_dump(Bytes stream, std::uint16_t family_id) {
  std::vector<std::uint8_t> copy;
  stream = aligned(stream, &copy);
  DumpParser parser;
  std::size_t data_index = 0;
  auto walked =
      for_each_message(stream, [&](const nlmsghdr* nlh, std::size_t, bool* stop) -> Status {
        if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) {
          return fail_errno(EINTR, "the device changed during the dump");
        }
        switch (nlh->nlmsg_type) {
          case NLMSG_NOOP:
            return {};
          case NLMSG_DONE: {
            // The kernel reports an error from inside a dump as a negative int after NLMSG_DONE.
            if (nlh->nlmsg_len >= NLMSG_HDRLEN + sizeof(int)) {
              int err;
              std::memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof err);
              if (err < 0 && err >= -4095) return fail_errno(-err, "dump");
            }
            *stop = true;
            return {};
          }
          case NLMSG_ERROR: {
            auto ack = parse_ack(Bytes(reinterpret_cast<const std::uint8_t*>(nlh), nlh->nlmsg_len));
            if (!ack) return fail(std::move(ack.error()));
            if (ack->error == 0) return fail_protocol("unexpected ACK in a dump");
            return fail_errno(-ack->error, ack->message.empty() ? "dump" : "dump: " + ack->message);
          }
          default:
            if (nlh->nlmsg_type != family_id) {
              return fail_protocol("unexpected netlink message type " +
                                   std::to_string(nlh->nlmsg_type));
            }
            return parser.message(nlh, data_index++);
        }
      });
  if (!walked) return fail(std::move(walked.error()));
  return std::move(parser).finish();
}

#undef PCL_TRY
#undef PCL_TRY_AS
#undef PCL_CAT
#undef PCL_CAT_

}  // namespace portcullis::wg::genl
