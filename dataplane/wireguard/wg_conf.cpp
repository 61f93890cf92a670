#include "dataplane/wireguard/wg_conf.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <unordered_set>

namespace portcullis::wg {
namespace {

// A configuration file larger than this is refused rather than parsed (100k peers fit).
constexpr std::size_t kMaxConfBytes = 64 * 1024 * 1024;

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

template <class T>
Result<T> parse_uint(std::string_view v, T max, int base = 10) {
  unsigned long long n = 0;
  if (base == 16) v.remove_prefix(2);
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n, base);
  if (v.empty() || ec != std::errc() || ptr != v.data() + v.size() || n > max) {
    return fail_invalid("'" + std::string(v) + "' is not a number from 0 to " +
                        std::to_string(max));
  }
  return static_cast<T>(n);
}

enum class Section { kNone, kInterface, kPeer };

class Parser {
 public:
  Result<DeviceConfig> run(std::string_view text) {
    if (text.size() > kMaxConfBytes) {
      return fail_errno(EFBIG,
                        "configuration is larger than " + std::to_string(kMaxConfBytes) + " bytes");
    }
    while (!text.empty()) {
      auto nl = text.find('\n');
      auto raw = text.substr(0, nl);
      text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
      ++line_;
      if (auto s = line(raw); !s) return fail(std::move(s.error()));
    }
    if (auto s = finish_peer(); !s) return fail(std::move(s.error()));
    return std::move(config_);
  }

 private:
  Status line(std::string_view raw) {
    auto hash = raw.find('#');
    auto l = trim(raw.substr(0, hash));
    if (l.empty()) return {};
    if (l.front() == '[') {
      if (auto s = finish_peer(); !s) return s;
      auto name = lower(l);
      if (name == "[interface]") {
        if (seen_interface_) return error("a second [Interface] section");
        seen_interface_ = true;
        section_ = Section::kInterface;
      } else if (name == "[peer]") {
        section_ = Section::kPeer;
        peer_ = Peer();
        peer_keys_.clear();
        has_peer_key_ = false;
        peer_line_ = line_;
      } else {
        return error("unknown section " + std::string(l));
      }
      return {};
    }
    auto eq = l.find('=');
    if (eq == std::string_view::npos) return error("expected 'Key = Value'");
    auto key = lower(trim(l.substr(0, eq)));
    auto value = trim(l.substr(eq + 1));
    if (section_ == Section::kNone) return error("'" + key + "' outside of a section");
    auto& seen = section_ == Section::kInterface ? interface_keys_ : peer_keys_;
    if (!seen.insert(key).second) return error("'" + key + "' given twice in one section");
    auto s = section_ == Section::kInterface ? interface_key(key, value) : peer_key(key, value);
    if (!s) return fail(Error(s.error().code(), at() + key + ": " + s.error().context()));
    return {};
  }

  Status interface_key(const std::string& key, std::string_view v) {
    if (key == "privatekey") {
      auto k = SecretKey::from_base64(v);
      if (!k) return fail(std::move(k.error()));
      config_.private_key = *k;
    } else if (key == "listenport") {
      auto p = parse_uint<std::uint16_t>(v, 65535);
      if (!p) return fail(std::move(p.error()));
      config_.listen_port = *p;
    } else if (key == "fwmark") {
      if (lower(v) == "off") {
        config_.fwmark = 0;
      } else {
        bool hex = v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X');
        auto m = parse_uint<std::uint32_t>(v, 0xffffffffu, hex ? 16 : 10);
        if (!m) return fail(std::move(m.error()));
        config_.fwmark = *m;
      }
    } else {
      return unknown(key);
    }
    return {};
  }

  Status peer_key(const std::string& key, std::string_view v) {
    if (key == "publickey") {
      auto k = Key::from_base64(v);
      if (!k) return fail(std::move(k.error()));
      peer_.public_key = *k;
      has_peer_key_ = true;
    } else if (key == "presharedkey") {
      auto k = SecretKey::from_base64(v);
      if (!k) return fail(std::move(k.error()));
      peer_.preshared_key = *k;
    } else if (key == "allowedips") {
      while (!v.empty()) {
        auto comma = v.find(',');
        auto item = trim(v.substr(0, comma));
        v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
        if (item.empty()) return fail_invalid("empty entry in the list");
        auto p = IpPrefix::parse(item);
        if (!p) return fail(std::move(p.error()));
        peer_.allowed_ips.push_back(*p);
      }
    } else if (key == "endpoint") {
      auto e = Endpoint::parse(v);
      if (!e) {
        return fail(std::move(e.error()).wrap("(numeric address:port only; resolve names first)"));
      }
      peer_.endpoint = *e;
    } else if (key == "persistentkeepalive") {
      if (lower(v) == "off") {
        peer_.persistent_keepalive = 0;
      } else {
        auto k = parse_uint<std::uint16_t>(v, 65535);
        if (!k) return fail(std::move(k.error()));
        peer_.persistent_keepalive = *k;
      }
    } else {
      return unknown(key);
    }
    return {};
  }

  Status unknown(const std::string& key) {
    static const std::unordered_set<std::string> wg_quick = {
        "address", "dns", "mtu", "table", "preup", "postup", "predown", "postdown", "saveconfig"};
    if (wg_quick.count(key)) return fail_invalid("is a wg-quick setting, not a wg(8) one");
    return fail_invalid("unknown setting");
  }

  Status finish_peer() {
    if (section_ != Section::kPeer) return {};
    section_ = Section::kNone;
    if (!has_peer_key_) return error("[Peer] section without PublicKey", peer_line_);
    if (!peer_set_.insert(peer_.public_key).second) {
      return error("peer " + peer_.public_key.to_base64() + " appears twice");
    }
    config_.peers.push_back(std::move(peer_));
    return {};
  }

  std::string at() const { return "line " + std::to_string(line_) + ": "; }
  tl::unexpected<Error> error(const std::string& what, std::size_t line = 0) {
    return fail_invalid("line " + std::to_string(line ? line : line_) + ": " + what);
  }

  DeviceConfig config_;
  Section section_ = Section::kNone;
  Peer peer_;
  bool has_peer_key_ = false;
  bool seen_interface_ = false;
  std::size_t line_ = 0;
  std::size_t peer_line_ = 0;
  std::unordered_set<std::string> interface_keys_, peer_keys_;
  std::unordered_set<Key> peer_set_;
};

}  // namespace

Result<DeviceConfig> parse_wg_conf(std::string_view text) { return Parser().run(text); }

std::string format_wg_conf(const DeviceConfig& c) {
  std::string out = "[Interface]\n";
  if (c.private_key) out += "PrivateKey = " + c.private_key->reveal_base64() + "\n";
  if (c.listen_port) out += "ListenPort = " + std::to_string(*c.listen_port) + "\n";
  if (c.fwmark) out += "FwMark = " + (*c.fwmark ? std::to_string(*c.fwmark) : "off") + "\n";
  for (const auto& p : c.peers) {
    out += "\n[Peer]\nPublicKey = " + p.public_key.to_base64() + "\n";
    if (p.preshared_key) out += "PresharedKey = " + p.preshared_key->reveal_base64() + "\n";
    if (!p.allowed_ips.empty()) {
      out += "AllowedIPs = ";
      for (std::size_t i = 0; i < p.allowed_ips.size(); ++i) {
        out += (i ? ", " : "") + p.allowed_ips[i].to_string();
      }
      out += "\n";
    }
    if (p.endpoint) out += "Endpoint = " + p.endpoint->to_string() + "\n";
    if (p.persistent_keepalive) {
      out += "PersistentKeepalive = " + std::to_string(p.persistent_keepalive) + "\n";
    }
  }
  return out;
}

}  // namespace portcullis::wg
