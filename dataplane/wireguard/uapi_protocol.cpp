#include "dataplane/wireguard/uapi_protocol.h"

#include <sodium.h>

#include <charconv>
#include <cstdint>
#include <limits>
#include <unordered_set>

namespace portcullis::wg::uapi {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

void append_hex(std::string& out, const std::uint8_t* bytes) {
  for (std::size_t i = 0; i < kKeyLen; ++i) {
    out.push_back(kHexDigits[bytes[i] >> 4]);
    out.push_back(kHexDigits[bytes[i] & 0xf]);
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Appends "key=<64 hex>\n" without a temporary copy of the key material.
void append_key_line(std::string& out, std::string_view key, const std::uint8_t* bytes) {
  out.append(key);
  out.push_back('=');
  append_hex(out, bytes);
  out.push_back('\n');
}

void append_line(std::string& out, std::string_view key, std::string_view value) {
  out.append(key);
  out.push_back('=');
  out.append(value);
  out.push_back('\n');
}

// Everything about one peer except its allowed_ip lines.
std::string peer_header(const PeerChange& change) {
  std::string h;
  append_key_line(h, "public_key", change.public_key.data());
  if (change.remove) {
    h += "remove=true\n";
    return h;
  }
  if (change.update_only) h += "update_only=true\n";
  if (change.preshared_key) append_key_line(h, "preshared_key", change.preshared_key->data());
  if (change.endpoint) append_line(h, "endpoint", change.endpoint->to_string());
  if (change.persistent_keepalive) {
    append_line(h, "persistent_keepalive_interval", std::to_string(*change.persistent_keepalive));
  }
  if (change.allowed_ips) h += "replace_allowed_ips=true\n";
  return h;
}

class TransactionBuilder {
 public:
  explicit TransactionBuilder(std::size_t max_bytes) : max_bytes_(max_bytes) { start(0, false); }

  // Whether `extra` more bytes (plus the closing blank line) fit in the current transaction.
  bool fits(std::size_t extra) const { return cur_.text.size() + extra + 1 <= max_bytes_; }
  bool has_payload() const { return has_payload_; }

  void append(std::string_view text, std::size_t peer_end) {
    cur_.text.append(text);
    cur_.end_peer = peer_end;
    has_payload_ = true;
  }

  void flush_and_start(std::size_t first_peer, bool continues_peer) {
    flush();
    start(first_peer, continues_peer);
  }

  std::vector<SetTransaction> finish() {
    flush();
    return std::move(out_);
  }

 private:
  void start(std::size_t first_peer, bool continues_peer) {
    cur_ = SetTransaction();
    // Reserve once so appending never reallocates and leaves copies of key material behind.
    cur_.text.reserve(max_bytes_ + 1024);
    cur_.text = "set=1\n";
    cur_.first_peer = first_peer;
    cur_.end_peer = first_peer;
    cur_.continues_peer = continues_peer;
    has_payload_ = false;
  }

  void flush() {
    if (!has_payload_) return;
    cur_.text.push_back('\n');
    out_.push_back(std::move(cur_));
    has_payload_ = false;
  }

  std::size_t max_bytes_;
  SetTransaction cur_;
  bool has_payload_ = false;
  std::vector<SetTransaction> out_;
};

}  // namespace

SetTransaction::~SetTransaction() {
  if (!text.empty()) sodium_memzero(text.data(), text.size());
}

std::string key_to_hex(const KeyBytes& key) {
  std::string s;
  append_hex(s, key.data());
  return s;
}

Result<KeyBytes> key_from_hex(std::string_view hex) {
  if (hex.size() != 2 * kKeyLen) {
    return fail_invalid("key must be 64 hex digits, got " + std::to_string(hex.size()) +
                        " characters");
  }
  KeyBytes out{};
  for (std::size_t i = 0; i < kKeyLen; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return fail_invalid("key has a non-hex character");
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::vector<SetTransaction> format_set(const DeviceDelta& delta, std::size_t max_bytes) {
  TransactionBuilder b(max_bytes);
  {
    std::string dev;
    dev.reserve(256);
    if (delta.private_key) append_key_line(dev, "private_key", delta.private_key->data());
    if (delta.listen_port) append_line(dev, "listen_port", std::to_string(*delta.listen_port));
    if (delta.fwmark) append_line(dev, "fwmark", std::to_string(*delta.fwmark));
    if (!dev.empty()) b.append(dev, 0);
    sodium_memzero(dev.data(), dev.size());
  }

  for (std::size_t i = 0; i < delta.peers.size(); ++i) {
    const PeerChange& change = delta.peers[i];
    std::string header = peer_header(change);
    std::vector<std::string> ips;
    if (!change.remove && change.allowed_ips) {
      for (const auto& ip : *change.allowed_ips)
        ips.push_back("allowed_ip=" + ip.to_string() + "\n");
    }
    std::size_t whole = header.size();
    for (const auto& l : ips) whole += l.size();

    // Start a new transaction unless the whole peer fits, or at least its header and first
    // allowed IP (the rest then continues in later transactions).
    std::size_t minimum = header.size() + (ips.empty() ? 0 : ips.front().size());
    if (b.has_payload() && !b.fits(whole) && !b.fits(minimum)) b.flush_and_start(i, false);
    b.append(header, i + 1);
    if (change.preshared_key) sodium_memzero(header.data(), header.size());

    for (const auto& line : ips) {
      if (!b.fits(line.size())) {
        // Continue this peer: it exists now (or update_only made it a no-op), so the rest of its
        // allowed IPs are added to it without replacing or creating anything.
        b.flush_and_start(i, true);
        std::string cont;
        append_key_line(cont, "public_key", change.public_key.data());
        cont += "update_only=true\n";
        b.append(cont, i + 1);
      }
      b.append(line, i + 1);
    }
  }
  return b.finish();
}

bool reply_complete(std::string_view data) {
  return data == "\n" || (data.size() >= 2 && data.substr(data.size() - 2) == "\n\n");
}

namespace {

// Reply parsing. Each section (the device, then each peer) may name each key once, except
// allowed_ip.
enum Field : std::uint32_t {
  kPrivateKey = 1u << 0,
  kListenPort = 1u << 1,
  kFwmark = 1u << 2,
  kPresharedKey = 1u << 3,
  kProtocolVersion = 1u << 4,
  kEndpoint = 1u << 5,
  kHandshakeSec = 1u << 6,
  kHandshakeNsec = 1u << 7,
  kTxBytes = 1u << 8,
  kRxBytes = 1u << 9,
  kKeepalive = 1u << 10,
};

// Largest whole-second handshake time that fits the nanosecond system_clock (year 2262).
constexpr std::uint64_t kMaxHandshakeSec =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / 1'000'000'000) - 1;

bool valid_key_name(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

bool printable(std::string_view value) {
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

Result<std::uint64_t> parse_number(std::string_view value, std::uint64_t max) {
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (value.empty() || ec != std::errc() || ptr != value.data() + value.size() || n > max) {
    return fail(Error::protocol("'" + std::string(value) + "' is not a number in 0.." +
                                std::to_string(max)));
  }
  return n;
}

class ReplyParser {
 public:
  explicit ReplyParser(std::string_view ifname) { state_.ifname = std::string(ifname); }

  Result<DeviceState> parse(std::string_view reply, std::size_t max_bytes) {
    if (reply.size() > max_bytes) {
      return fail_errno(EMSGSIZE, context() + "reply is larger than the limit of " +
                                      std::to_string(max_bytes) + " bytes");
    }
    std::size_t pos = 0;
    bool saw_errno = false;
    while (pos < reply.size()) {
      ++line_no_;
      std::size_t nl = reply.find('\n', pos);
      if (nl == std::string_view::npos) {
        return fail(Error::protocol(context() + "line is not terminated (reply truncated?)"));
      }
      std::string_view line = reply.substr(pos, nl - pos);
      pos = nl + 1;
      if (line.size() > kMaxLineBytes) {
        return fail(Error::protocol(context() + "line is longer than " +
                                    std::to_string(kMaxLineBytes) + " bytes"));
      }
      if (line.empty()) {
        if (pos != reply.size()) {
          return fail(Error::protocol(context() + "data after the blank line that ends the reply"));
        }
        if (!saw_errno) return fail(Error::protocol(context() + "reply ends without errno="));
        finish_peer();
        return std::move(state_);
      }
      if (saw_errno) return fail(Error::protocol(context() + "data after errno="));
      std::size_t eq = line.find('=');
      if (eq == std::string_view::npos) {
        return fail(Error::protocol(context() + "line is not key=value"));
      }
      std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
      if (!valid_key_name(key) || !printable(value)) {
        return fail(Error::protocol(context() + "line is not key=value"));
      }
      if (key == "errno") {
        auto st = handle_errno(value);
        if (!st) return fail(std::move(st.error()));
        saw_errno = true;
        continue;
      }
      auto st = handle(key, value);
      if (!st) return fail(std::move(st.error()).wrap(context() + "'" + std::string(key) + "'"));
    }
    return fail(Error::protocol(context() + "reply ends without the terminating blank line"));
  }

 private:
  std::string context() const {
    std::string c =
        "reply from wireguard-go for '" + state_.ifname + "', line " + std::to_string(line_no_);
    if (peer_) c += " (peer '" + peer_->public_key.short_name() + "')";
    return c + ": ";
  }

  Status once(Field f) {
    if (seen_ & f) return fail(Error::protocol("appears twice"));
    seen_ |= f;
    return {};
  }

  Status handle_errno(std::string_view value) {
    // wireguard-go writes the negative errno (errno=-22); the xplatform text shows it positive.
    std::string_view digits = value;
    if (!digits.empty() && digits.front() == '-') digits.remove_prefix(1);
    auto n = parse_number(digits, 4095);
    if (!n) return fail(std::move(n.error()).wrap(context() + "'errno'"));
    if (*n != 0) {
      return fail_errno(static_cast<int>(*n),
                        "wireguard-go for '" + state_.ifname +
                            "' answered get=1 with errno=" + std::string(value));
    }
    return {};
  }

  void finish_peer() {
    if (!peer_) return;
    if (handshake_sec_ != 0 || handshake_nsec_ != 0) {
      peer_->last_handshake = Clock::time_point(std::chrono::duration_cast<Clock::duration>(
          std::chrono::seconds(handshake_sec_) + std::chrono::nanoseconds(handshake_nsec_)));
    }
    state_.peers.push_back(std::move(*peer_));
    peer_.reset();
  }

  Status handle(std::string_view key, std::string_view value) {
    if (key == "public_key") {
      auto k = key_from_hex(value);
      if (!k) return fail(Error::protocol(k.error().context()));
      finish_peer();
      Key pk(*k);
      if (!peers_seen_.insert(pk).second) {
        return fail(Error::protocol("peer '" + pk.short_name() + "' appears twice"));
      }
      peer_.emplace();
      peer_->public_key = pk;
      seen_ = 0;
      handshake_sec_ = handshake_nsec_ = 0;
      return {};
    }
    if (key == "private_key" || key == "listen_port" || key == "fwmark") {
      if (peer_) return fail(Error::protocol("is a device key but comes after a peer"));
      return handle_device(key, value);
    }
    static const std::unordered_set<std::string_view> kPeerKeys = {"preshared_key",
                                                                   "protocol_version",
                                                                   "endpoint",
                                                                   "last_handshake_time_sec",
                                                                   "last_handshake_time_nsec",
                                                                   "tx_bytes",
                                                                   "rx_bytes",
                                                                   "persistent_keepalive_interval",
                                                                   "allowed_ip"};
    if (kPeerKeys.contains(key)) {
      if (!peer_) return fail(Error::protocol("is a peer key but comes before any public_key"));
      return handle_peer(key, value);
    }
    return {};  // a well-formed unknown key: ignored, as wg(8) does
  }

  Status handle_device(std::string_view key, std::string_view value) {
    if (key == "private_key") {
      if (auto st = once(kPrivateKey); !st) return st;
      auto k = key_from_hex(value);
      if (!k) return fail(Error::protocol(k.error().context()));
      SecretKey sk(*k);
      sodium_memzero(k->data(), k->size());
      state_.public_key = sk.public_key();
      state_.private_key = std::move(sk);
      return {};
    }
    if (key == "listen_port") {
      if (auto st = once(kListenPort); !st) return st;
      auto n = parse_number(value, 0xffff);
      if (!n) return fail(std::move(n.error()));
      state_.listen_port = static_cast<std::uint16_t>(*n);
      return {};
    }
    if (auto st = once(kFwmark); !st) return st;
    auto n = parse_number(value, 0xffffffff);
    if (!n) return fail(std::move(n.error()));
    state_.fwmark = static_cast<std::uint32_t>(*n);
    return {};
  }

  Status handle_peer(std::string_view key, std::string_view value) {
    Peer& p = *peer_;
    if (key == "allowed_ip") {
      if (value.find('/') == std::string_view::npos) {
        return fail(Error::protocol("'" + std::string(value) + "' has no prefix length"));
      }
      auto ip = IpPrefix::parse(value);
      if (!ip) return fail(Error::protocol(ip.error().context()));
      p.allowed_ips.push_back(*ip);
      return {};
    }
    if (key == "preshared_key") {
      if (auto st = once(kPresharedKey); !st) return st;
      auto k = key_from_hex(value);
      if (!k) return fail(Error::protocol(k.error().context()));
      SecretKey psk(*k);
      sodium_memzero(k->data(), k->size());
      if (!psk.is_zero()) p.preshared_key = std::move(psk);
      return {};
    }
    if (key == "endpoint") {
      if (auto st = once(kEndpoint); !st) return st;
      auto e = Endpoint::parse(value);
      if (!e) return fail(Error::protocol(e.error().context()));
      p.endpoint = *e;
      return {};
    }
    struct NumberField {
      std::string_view key;
      Field field;
      std::uint64_t max;
    };
    static constexpr NumberField kNumbers[] = {
        {"protocol_version", kProtocolVersion, 0xffffffff},
        {"last_handshake_time_sec", kHandshakeSec, kMaxHandshakeSec},
        {"last_handshake_time_nsec", kHandshakeNsec, 999'999'999},
        {"tx_bytes", kTxBytes, std::numeric_limits<std::uint64_t>::max()},
        {"rx_bytes", kRxBytes, std::numeric_limits<std::uint64_t>::max()},
        {"persistent_keepalive_interval", kKeepalive, 0xffff},
    };
    for (const auto& f : kNumbers) {
      if (key != f.key) continue;
      if (auto st = once(f.field); !st) return st;
      auto n = parse_number(value, f.max);
      if (!n) return fail(std::move(n.error()));
      switch (f.field) {
        case kProtocolVersion:
          p.protocol_version = static_cast<std::uint32_t>(*n);
          break;
        case kHandshakeSec:
          handshake_sec_ = *n;
          break;
        case kHandshakeNsec:
          handshake_nsec_ = *n;
          break;
        case kTxBytes:
          p.tx_bytes = *n;
          break;
        case kRxBytes:
          p.rx_bytes = *n;
          break;
        default:
          p.persistent_keepalive = static_cast<std::uint16_t>(*n);
          break;
      }
      return {};
    }
    return {};
  }

  DeviceState state_;
  std::optional<Peer> peer_;
  std::unordered_set<Key> peers_seen_;
  std::uint32_t seen_ = 0;
  std::uint64_t handshake_sec_ = 0, handshake_nsec_ = 0;
  std::size_t line_no_ = 0;
};

}  // namespace

Result<DeviceState> parse_get_reply(std::string_view ifname, std::string_view reply,
                                    std::size_t max_bytes) {
  return ReplyParser(ifname).parse(reply, max_bytes);
}

Result<int> parse_set_reply(std::string_view ifname, std::string_view reply) {
  std::string ctx = "reply from wireguard-go for '" + std::string(ifname) + "' to set=1";
  constexpr std::string_view kPrefix = "errno=";
  if (reply.size() > 64 || !reply.starts_with(kPrefix) || !reply.ends_with("\n\n") ||
      reply.size() < kPrefix.size() + 2) {
    return fail(Error::protocol(ctx + ": expected 'errno=N' and a blank line"));
  }
  std::string_view value = reply.substr(kPrefix.size(), reply.size() - kPrefix.size() - 2);
  std::string_view digits = value;
  if (!digits.empty() && digits.front() == '-') digits.remove_prefix(1);
  auto n = parse_number(digits, 4095);
  if (!n) return fail(std::move(n.error()).wrap(ctx + ": bad errno"));
  return static_cast<int>(*n);
}

}  // namespace portcullis::wg::uapi
