#include "dataplane/wireguard/genl_messages.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/wireguard.h>

#include <cstring>
#include <functional>
#include <map>
#include <set>

namespace portcullis::wg::genl {
namespace {

constexpr std::uint16_t kFamily = 0x1c;

Key key_of(std::uint32_t n) {
  KeyBytes b;
  b.fill(0x5a);
  std::memcpy(b.data(), &n, sizeof n);
  return Key(b);
}

SecretKey secret_of(std::uint8_t fill) {
  KeyBytes b;
  b.fill(fill);
  return SecretKey(b);
}

IpPrefix prefix(const char* text) { return *IpPrefix::parse(text); }

IpPrefix v4_host(std::uint32_t host_order) {
  return IpPrefix::host(IpAddress::v4_host_order(host_order));
}

// Netlink bytes laid out by hand, independently of libmnl and of the code under test. Host byte
// order, as netlink is; attribute lengths exclude padding, nests include their contents' padding.
class Raw {
 public:
  void u8(std::uint8_t v) { b_.push_back(v); }
  void u16(std::uint16_t v) { put(&v, 2); }
  void u32(std::uint32_t v) { put(&v, 4); }
  void u64(std::uint64_t v) { put(&v, 8); }
  void put(const void* p, std::size_t n) {
    auto* c = static_cast<const std::uint8_t*>(p);
    b_.insert(b_.end(), c, c + n);
  }
  void pad() {
    while (b_.size() % 4) b_.push_back(0);
  }
  std::size_t begin_msg(std::uint16_t type, std::uint16_t flags, std::uint8_t cmd) {
    std::size_t at = b_.size();
    u32(0);
    u16(type);
    u16(flags);
    u32(0);  // seq
    u32(0);  // pid
    u8(cmd);
    u8(1);  // version
    u16(0);
    return at;
  }
  void end_msg(std::size_t at) { set32(at, static_cast<std::uint32_t>(b_.size() - at)); }
  // NLMSG_DONE with its int payload (0, or a negative errno from inside the dump).
  void done(int err) {
    std::size_t at = b_.size();
    u32(0);
    u16(NLMSG_DONE);
    u16(NLM_F_MULTI);
    u32(0);
    u32(0);
    u32(static_cast<std::uint32_t>(err));
    end_msg(at);
  }
  std::size_t begin(std::uint16_t type) {
    std::size_t at = b_.size();
    u16(0);
    u16(type);
    return at;
  }
  void end(std::size_t at) {
    set16(at, static_cast<std::uint16_t>(b_.size() - at));
    pad();
  }
  std::size_t nest(std::uint16_t type) { return begin(type | NLA_F_NESTED); }
  void attr(std::uint16_t type, const void* p, std::size_t n) {
    auto at = begin(type);
    put(p, n);
    end(at);
  }
  void attr16(std::uint16_t type, std::uint16_t v) { attr(type, &v, 2); }
  void attr32(std::uint16_t type, std::uint32_t v) { attr(type, &v, 4); }
  void attr64(std::uint16_t type, std::uint64_t v) { attr(type, &v, 8); }
  void attr8(std::uint16_t type, std::uint8_t v) { attr(type, &v, 1); }
  void str(std::uint16_t type, const char* s) { attr(type, s, std::strlen(s) + 1); }
  void set16(std::size_t at, std::uint16_t v) { std::memcpy(&b_[at], &v, 2); }
  void set32(std::size_t at, std::uint32_t v) { std::memcpy(&b_[at], &v, 4); }
  std::vector<std::uint8_t>& bytes() { return b_; }
  std::size_t size() const { return b_.size(); }

 private:
  std::vector<std::uint8_t> b_;
};

void raw_allowed_ip(Raw& r, int family, const void* addr, std::uint8_t cidr) {
  auto item = r.nest(0);
  r.attr16(WGALLOWEDIP_A_FAMILY, static_cast<std::uint16_t>(family));
  r.attr(WGALLOWEDIP_A_IPADDR, addr, family == AF_INET ? 4 : 16);
  r.attr8(WGALLOWEDIP_A_CIDR_MASK, cidr);
  r.end(item);
}

// ---- a test-side reader of SET_DEVICE messages, to check what the builder produced ----

struct SentPeer {
  Key key;
  std::uint32_t flags = 0;
  bool has_psk = false, has_endpoint = false, has_keepalive = false;
  std::vector<std::string> ips;
};
struct SentMessage {
  bool has_private_key = false, has_port = false, has_fwmark = false, has_device_flags = false;
  std::string ifname;
  std::vector<SentPeer> peers;
};

struct RawAttr {
  std::uint16_t type;
  const std::uint8_t* data;
  std::size_t len;
};
std::vector<RawAttr> attrs_of(const std::uint8_t* p, std::size_t n) {
  std::vector<RawAttr> out;
  std::size_t off = 0;
  while (off + 4 <= n) {
    std::uint16_t len, type;
    std::memcpy(&len, p + off, 2);
    std::memcpy(&type, p + off + 2, 2);
    EXPECT_GE(len, 4);
    EXPECT_LE(off + len, n);
    if (len < 4 || off + len > n) break;
    out.push_back({static_cast<std::uint16_t>(type & NLA_TYPE_MASK), p + off + 4, len - 4u});
    off += (len + 3u) & ~3u;
  }
  EXPECT_GE(off, n) << "trailing bytes";
  return out;
}

SentMessage read_set_message(const std::vector<std::uint8_t>& m) {
  SentMessage out;
  std::uint32_t len;
  std::memcpy(&len, m.data(), 4);
  EXPECT_EQ(len, m.size());
  std::uint16_t type, flags;
  std::memcpy(&type, m.data() + 4, 2);
  std::memcpy(&flags, m.data() + 6, 2);
  EXPECT_EQ(type, kFamily);
  EXPECT_EQ(flags, NLM_F_REQUEST | NLM_F_ACK);
  EXPECT_EQ(m[16], WG_CMD_SET_DEVICE);
  for (auto& a : attrs_of(m.data() + 20, m.size() - 20)) {
    switch (a.type) {
      case WGDEVICE_A_IFNAME:
        out.ifname = reinterpret_cast<const char*>(a.data);
        break;
      case WGDEVICE_A_PRIVATE_KEY:
        out.has_private_key = true;
        break;
      case WGDEVICE_A_LISTEN_PORT:
        out.has_port = true;
        break;
      case WGDEVICE_A_FWMARK:
        out.has_fwmark = true;
        break;
      case WGDEVICE_A_FLAGS:
        out.has_device_flags = true;
        break;
      case WGDEVICE_A_PEERS:
        for (auto& pa : attrs_of(a.data, a.len)) {
          SentPeer sp;
          for (auto& f : attrs_of(pa.data, pa.len)) {
            switch (f.type) {
              case WGPEER_A_PUBLIC_KEY:
                sp.key = *Key::from_bytes(std::span(f.data, f.len));
                break;
              case WGPEER_A_FLAGS:
                std::memcpy(&sp.flags, f.data, 4);
                break;
              case WGPEER_A_PRESHARED_KEY:
                sp.has_psk = true;
                break;
              case WGPEER_A_ENDPOINT:
                sp.has_endpoint = true;
                break;
              case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL:
                sp.has_keepalive = true;
                break;
              case WGPEER_A_ALLOWEDIPS:
                for (auto& ia : attrs_of(f.data, f.len)) {
                  std::uint16_t family = 0;
                  std::uint8_t cidr = 0;
                  char text[INET6_ADDRSTRLEN] = {};
                  for (auto& x : attrs_of(ia.data, ia.len)) {
                    if (x.type == WGALLOWEDIP_A_FAMILY) std::memcpy(&family, x.data, 2);
                    if (x.type == WGALLOWEDIP_A_CIDR_MASK) cidr = x.data[0];
                    if (x.type == WGALLOWEDIP_A_IPADDR) {
                      inet_ntop(x.len == 4 ? AF_INET : AF_INET6, x.data, text, sizeof text);
                    }
                  }
                  EXPECT_TRUE(family == AF_INET || family == AF_INET6);
                  sp.ips.push_back(std::string(text) + "/" + std::to_string(cidr));
                }
                break;
            }
          }
          out.peers.push_back(std::move(sp));
        }
        break;
    }
  }
  return out;
}

// ---- building ----

TEST(BuildSetDevice, SmallDeltaMatchesHandLaidBytes) {
  DeviceDelta d;
  d.private_key = secret_of(0x11);
  d.listen_port = 30000;
  PeerChange a;
  a.public_key = key_of(1);
  a.preshared_key = secret_of(0x22);
  a.endpoint = *Endpoint::parse("127.0.0.1:51820");
  a.persistent_keepalive = 25;
  a.allowed_ips = std::vector{prefix("10.255.0.2/32")};
  PeerChange b;
  b.public_key = key_of(2);
  b.remove = true;
  b.allowed_ips = std::vector{prefix("10.255.0.3/32")};  // ignored for a removal
  PeerChange c;
  c.public_key = key_of(3);
  c.update_only = true;
  c.allowed_ips = std::vector{prefix("fd00:1::/64")};
  d.peers = {a, b, c};

  auto msgs = build_set_device("pcl0", kFamily, d, 4096);
  ASSERT_TRUE(msgs) << msgs.error().message();
  ASSERT_EQ(msgs->size(), 1u);

  Raw r;
  auto m = r.begin_msg(kFamily, NLM_F_REQUEST | NLM_F_ACK, WG_CMD_SET_DEVICE);
  r.str(WGDEVICE_A_IFNAME, "pcl0");
  KeyBytes k11;
  k11.fill(0x11);
  r.attr(WGDEVICE_A_PRIVATE_KEY, k11.data(), 32);
  r.attr16(WGDEVICE_A_LISTEN_PORT, 30000);
  auto peers = r.nest(WGDEVICE_A_PEERS);
  {
    auto p = r.nest(0);
    r.attr(WGPEER_A_PUBLIC_KEY, key_of(1).data(), 32);
    r.attr32(WGPEER_A_FLAGS, WGPEER_F_REPLACE_ALLOWEDIPS);
    KeyBytes k22;
    k22.fill(0x22);
    r.attr(WGPEER_A_PRESHARED_KEY, k22.data(), 32);
    std::uint8_t sin[16] = {AF_INET, 0, 0xca, 0x6c /* 51820 */, 127, 0, 0, 1};
    r.attr(WGPEER_A_ENDPOINT, sin, sizeof sin);
    r.attr16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, 25);
    auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
    std::uint8_t v4[4] = {10, 255, 0, 2};
    raw_allowed_ip(r, AF_INET, v4, 32);
    r.end(ips);
    r.end(p);
  }
  {
    auto p = r.nest(0);
    r.attr(WGPEER_A_PUBLIC_KEY, key_of(2).data(), 32);
    r.attr32(WGPEER_A_FLAGS, WGPEER_F_REMOVE_ME);
    r.end(p);
  }
  {
    auto p = r.nest(0);
    r.attr(WGPEER_A_PUBLIC_KEY, key_of(3).data(), 32);
    r.attr32(WGPEER_A_FLAGS, WGPEER_F_UPDATE_ONLY | WGPEER_F_REPLACE_ALLOWEDIPS);
    auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
    std::uint8_t v6[16] = {0xfd, 0x00, 0x00, 0x01};
    raw_allowed_ip(r, AF_INET6, v6, 64);
    r.end(ips);
    r.end(p);
  }
  r.end(peers);
  r.end_msg(m);

  const auto& got = (*msgs)[0].bytes;
  ASSERT_EQ(got.size(), r.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], r.bytes()[i]) << "byte " << i;
  }
  EXPECT_EQ((*msgs)[0].first_peer, 0u);
  EXPECT_EQ((*msgs)[0].end_peer, 3u);
  EXPECT_FALSE((*msgs)[0].first_peer_continued);
  EXPECT_FALSE((*msgs)[0].last_peer_continues);
}

TEST(BuildSetDevice, ZeroPresharedKeyIsSentToClearIt) {
  DeviceDelta d;
  PeerChange p;
  p.public_key = key_of(9);
  p.preshared_key = SecretKey();
  d.peers = {p};
  auto msgs = build_set_device("pcl0", kFamily, d, 4096);
  ASSERT_TRUE(msgs);
  auto sent = read_set_message((*msgs)[0].bytes);
  ASSERT_EQ(sent.peers.size(), 1u);
  EXPECT_TRUE(sent.peers[0].has_psk);
  EXPECT_EQ(sent.peers[0].flags, 0u);  // no allowed_ips: the list is left alone
}

TEST(BuildSetDevice, EmptyDeltaSendsNothing) {
  auto msgs = build_set_device("pcl0", kFamily, DeviceDelta{}, 4096);
  ASSERT_TRUE(msgs);
  EXPECT_TRUE(msgs->empty());
}

TEST(BuildSetDevice, DeviceFieldsOnlyIsOneMessageWithoutPeers) {
  DeviceDelta d;
  d.fwmark = 0x51;
  auto msgs = build_set_device("pcl0", kFamily, d, 4096);
  ASSERT_TRUE(msgs);
  ASSERT_EQ(msgs->size(), 1u);
  auto sent = read_set_message((*msgs)[0].bytes);
  EXPECT_TRUE(sent.has_fwmark);
  EXPECT_TRUE(sent.peers.empty());
}

TEST(BuildSetDevice, RejectsWhatItCannotEncode) {
  DeviceDelta d;
  PeerChange p;
  p.public_key = key_of(1);
  p.allowed_ips = std::vector{prefix("10.0.0.1/32"), IpPrefix()};
  d.peers = {p};
  auto r = build_set_device("pcl0", kFamily, d, 4096);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EINVAL);
  EXPECT_NE(r.error().context().find("allowed IP #2"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().context().find(key_of(1).short_name()), std::string::npos);

  d.peers[0].allowed_ips = std::nullopt;
  d.peers[0].endpoint = Endpoint();
  EXPECT_EQ(build_set_device("pcl0", kFamily, d, 4096).error().errno_value(), EINVAL);

  d.peers[0].endpoint = std::nullopt;
  EXPECT_EQ(build_set_device("", kFamily, d, 4096).error().errno_value(), EINVAL);
  EXPECT_EQ(build_set_device("a-name-that-is-too-long", kFamily, d, 4096).error().errno_value(),
            EINVAL);
  EXPECT_EQ(build_set_device("pcl0", kFamily, d, 40).error().errno_value(), EMSGSIZE);
  // Room for the headers but not for one peer: an error, not an endless loop.
  EXPECT_EQ(build_set_device("pcl0", kFamily, d, 60).error().errno_value(), EMSGSIZE);
}

TEST(BuildSetDevice, DefaultLimitIsTheSocketBufferSize) {
  EXPECT_GE(default_message_limit(), 4096u);
  EXPECT_LE(default_message_limit(), 8192u);
}

// Checks every message of a build: size, header, device fields only first, no REPLACE_PEERS,
// recorded peer ranges; returns the peers as sent, in order, with continuations.
std::vector<std::pair<std::size_t, SentPeer>> check_messages(
    const std::vector<SetDeviceMessage>& msgs, const DeviceDelta& d, std::size_t limit) {
  std::vector<std::pair<std::size_t, SentPeer>> out;  // (delta index, part)
  for (std::size_t k = 0; k < msgs.size(); ++k) {
    const auto& m = msgs[k];
    EXPECT_LE(m.bytes.size(), limit) << "message " << k;
    auto sent = read_set_message(m.bytes);
    EXPECT_EQ(sent.ifname, "pcl0");
    EXPECT_FALSE(sent.has_device_flags) << "WGDEVICE_A_FLAGS (REPLACE_PEERS) in message " << k;
    if (k > 0) {
      EXPECT_FALSE(sent.has_private_key || sent.has_port || sent.has_fwmark) << k;
      EXPECT_EQ(m.first_peer, msgs[k - 1].end_peer - (msgs[k - 1].last_peer_continues ? 1 : 0));
      EXPECT_EQ(m.first_peer_continued, msgs[k - 1].last_peer_continues);
    }
    EXPECT_EQ(sent.peers.size(), m.end_peer - m.first_peer) << "message " << k;
    for (std::size_t i = 0; i < sent.peers.size(); ++i) {
      std::size_t index = m.first_peer + i;
      EXPECT_EQ(sent.peers[i].key, d.peers[index].public_key);
      bool continued = i == 0 && m.first_peer_continued;
      if (continued) {
        EXPECT_EQ(sent.peers[i].flags, static_cast<std::uint32_t>(WGPEER_F_UPDATE_ONLY));
        EXPECT_FALSE(sent.peers[i].has_psk || sent.peers[i].has_endpoint ||
                     sent.peers[i].has_keepalive);
      }
      out.emplace_back(index, std::move(sent.peers[i]));
    }
  }
  if (!msgs.empty()) {
    EXPECT_EQ(msgs.back().end_peer, d.peers.size());
  }
  return out;
}

TEST(BuildSetDevice, TenThousandPeersSplitAcrossMessages) {
  DeviceDelta d;
  d.private_key = secret_of(0x33);
  d.listen_port = 30000;
  d.fwmark = 7;
  for (std::uint32_t i = 0; i < 10000; ++i) {
    PeerChange p;
    p.public_key = key_of(i);
    p.allowed_ips = std::vector{v4_host(0x0aff0000 + i + 2)};
    if (i % 3 == 0) p.persistent_keepalive = 25;
    if (i % 7 == 0) p.preshared_key = secret_of(0x44);
    if (i % 11 == 0) p.endpoint = Endpoint(IpAddress::v4_host_order(0x7f000001), 1000 + i);
    d.peers.push_back(std::move(p));
  }
  const std::size_t limit = 4096;
  auto msgs = build_set_device("pcl0", kFamily, d, limit);
  ASSERT_TRUE(msgs) << msgs.error().message();
  EXPECT_GT(msgs->size(), 100u);
  auto first = read_set_message(msgs->front().bytes);
  EXPECT_TRUE(first.has_private_key && first.has_port && first.has_fwmark);

  auto parts = check_messages(*msgs, d, limit);
  ASSERT_EQ(parts.size(), d.peers.size());  // /32 each: no peer is ever split
  for (std::size_t i = 0; i < parts.size(); ++i) {
    ASSERT_EQ(parts[i].first, i);
    const auto& sp = parts[i].second;
    EXPECT_EQ(sp.flags, static_cast<std::uint32_t>(WGPEER_F_REPLACE_ALLOWEDIPS));
    ASSERT_EQ(sp.ips.size(), 1u);
    EXPECT_EQ(sp.ips[0], d.peers[i].allowed_ips->at(0).to_string());
    EXPECT_EQ(sp.has_keepalive, i % 3 == 0);
    EXPECT_EQ(sp.has_psk, i % 7 == 0);
    EXPECT_EQ(sp.has_endpoint, i % 11 == 0);
  }
}

TEST(BuildSetDevice, OnePeerWithThousandsOfAllowedIpsContinuesWithoutReplacing) {
  DeviceDelta d;
  d.private_key = secret_of(0x33);
  for (std::uint32_t i = 0; i < 5; ++i) {
    PeerChange p;
    p.public_key = key_of(i);
    p.endpoint = *Endpoint::parse("[::1]:51820");
    p.persistent_keepalive = 10;
    p.preshared_key = secret_of(0x55);
    std::vector<IpPrefix> ips;
    std::size_t count = i == 2 ? 5000 : i == 3 ? 300 : 1;
    for (std::size_t j = 0; j < count; ++j) {
      if (j % 2) {
        ips.push_back(v4_host(0x0a000000 + static_cast<std::uint32_t>(i << 16 | j)));
      } else {
        ips.push_back(
            prefix(("fd00:" + std::to_string(i) + "::" + std::to_string(j) + "/128").c_str()));
      }
    }
    p.allowed_ips = std::move(ips);
    if (i == 3) p.update_only = true;
    d.peers.push_back(std::move(p));
  }
  const std::size_t limit = 4096;
  auto msgs = build_set_device("pcl0", kFamily, d, limit);
  ASSERT_TRUE(msgs) << msgs.error().message();
  auto parts = check_messages(*msgs, d, limit);

  std::map<std::size_t, std::vector<std::string>> ips;
  std::map<std::size_t, int> part_count;
  for (auto& [index, sp] : parts) {
    bool first_part = part_count[index]++ == 0;
    std::uint32_t want = WGPEER_F_REPLACE_ALLOWEDIPS | (index == 3 ? WGPEER_F_UPDATE_ONLY : 0);
    if (first_part) {
      EXPECT_EQ(sp.flags, want) << "peer " << index;
      EXPECT_TRUE(sp.has_psk && sp.has_endpoint && sp.has_keepalive);
    } else {
      EXPECT_EQ(sp.flags, static_cast<std::uint32_t>(WGPEER_F_UPDATE_ONLY)) << "peer " << index;
    }
    EXPECT_FALSE(sp.ips.empty()) << "a part without allowed IPs for peer " << index;
    ips[index].insert(ips[index].end(), sp.ips.begin(), sp.ips.end());
  }
  EXPECT_GT(part_count[2], 10);
  for (std::size_t i = 0; i < d.peers.size(); ++i) {
    std::vector<std::string> want;
    for (auto& p : *d.peers[i].allowed_ips) want.push_back(p.to_string());
    EXPECT_EQ(ips[i], want) << "peer " << i << ": every IP exactly once, in order";
  }
}

TEST(BuildSetDevice, EveryLimitMakesProgressAndStaysUnder) {
  DeviceDelta d;
  d.listen_port = 1;
  for (std::uint32_t i = 0; i < 20; ++i) {
    PeerChange p;
    p.public_key = key_of(i);
    std::vector<IpPrefix> ips;
    for (std::uint32_t j = 0; j < i * 3; ++j) ips.push_back(v4_host(i << 8 | j));
    p.allowed_ips = std::move(ips);
    d.peers.push_back(std::move(p));
  }
  for (std::size_t limit = 100; limit <= 1500; limit += 7) {
    auto msgs = build_set_device("pcl0", kFamily, d, limit);
    if (!msgs) {
      EXPECT_EQ(msgs.error().errno_value(), EMSGSIZE) << limit;
      continue;
    }
    auto parts = check_messages(*msgs, d, limit);
    std::map<std::size_t, std::size_t> count;
    for (auto& [index, sp] : parts) count[index] += sp.ips.size();
    for (std::size_t i = 0; i < d.peers.size(); ++i) EXPECT_EQ(count[i], i * 3) << limit;
  }
}

// ---- parsing dumps ----

struct DumpBuilder {
  Raw r;
  std::size_t msg = 0, peers = 0;
  void begin_message(bool device_fields) {
    msg = r.begin_msg(kFamily, NLM_F_MULTI, WG_CMD_GET_DEVICE);
    if (device_fields) {
      r.attr16(WGDEVICE_A_LISTEN_PORT, 30000);
      r.attr32(WGDEVICE_A_FWMARK, 0);
      r.attr32(WGDEVICE_A_IFINDEX, 7);
      r.str(WGDEVICE_A_IFNAME, "pcl0");
      KeyBytes k;
      k.fill(0x11);
      r.attr(WGDEVICE_A_PRIVATE_KEY, k.data(), 32);
      r.attr(WGDEVICE_A_PUBLIC_KEY, key_of(0xabc).data(), 32);
    }
    peers = r.nest(WGDEVICE_A_PEERS);
  }
  void end_message() {
    r.end(peers);
    r.end_msg(msg);
  }
  // The fields the kernel puts in a peer's first part (drivers/net/wireguard/netlink.c get_peer).
  void peer_fields(std::uint8_t psk, std::int64_t handshake_sec) {
    KeyBytes k;
    k.fill(psk);
    r.attr(WGPEER_A_PRESHARED_KEY, k.data(), 32);
    std::int64_t ts[2] = {handshake_sec, 5};
    r.attr(WGPEER_A_LAST_HANDSHAKE_TIME, ts, sizeof ts);
    r.attr16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, 25);
    r.attr(WGPEER_A_UNSPEC, nullptr, 0);  // nla_put_u64_64bit padding
    r.attr64(WGPEER_A_TX_BYTES, 1000);
    r.attr64(WGPEER_A_RX_BYTES, 2000);
    r.attr32(WGPEER_A_PROTOCOL_VERSION, 1);
  }
};

std::vector<std::uint8_t> sample_dump(bool with_done = true) {
  DumpBuilder b;
  auto& r = b.r;
  b.begin_message(true);
  {
    auto p = r.nest(0);
    r.attr(WGPEER_A_PUBLIC_KEY, key_of(1).data(), 32);
    b.peer_fields(0, 1700000000);
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(30000);
    sin6.sin6_addr = in6addr_loopback;
    r.attr(WGPEER_A_ENDPOINT, &sin6, sizeof sin6);
    auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
    std::uint8_t a1[4] = {10, 255, 0, 2}, a2[4] = {10, 255, 0, 3};
    raw_allowed_ip(r, AF_INET, a1, 32);
    raw_allowed_ip(r, AF_INET, a2, 32);
    r.end(ips);
    r.end(p);
  }
  {
    auto p = r.nest(0);  // peer 2, first part
    r.attr(WGPEER_A_PUBLIC_KEY, key_of(2).data(), 32);
    b.peer_fields(0x77, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(51820);
    sin.sin_addr.s_addr = htonl(0x7f000001);
    r.attr(WGPEER_A_ENDPOINT, &sin, sizeof sin);
    auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
    std::uint8_t v6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    raw_allowed_ip(r, AF_INET6, v6, 128);
    r.end(ips);
    r.end(p);
  }
  b.end_message();
  b.begin_message(false);
  {
    auto p = r.nest(0);  // peer 2 continued: key and the rest of its allowed IPs
    r.attr(WGPEER_A_PUBLIC_KEY, key_of(2).data(), 32);
    auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
    std::uint8_t v6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
    std::uint8_t v4[4] = {10, 9, 0, 0};
    raw_allowed_ip(r, AF_INET6, v6, 128);
    raw_allowed_ip(r, AF_INET, v4, 16);
    r.end(ips);
    r.end(p);
  }
  {
    auto p = r.nest(0);
    r.attr(WGPEER_A_PUBLIC_KEY, key_of(3).data(), 32);
    b.peer_fields(0, 0);
    r.end(p);
  }
  b.end_message();
  if (with_done) r.done(0);
  return r.bytes();
}

TEST(ParseDump, MergesAPeerSplitAcrossMessages) {
  auto dump = sample_dump();
  auto state = parse_get_device_dump(dump, kFamily);
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_EQ(state->ifname, "pcl0");
  EXPECT_EQ(state->ifindex, 7u);
  EXPECT_EQ(state->listen_port, 30000);
  EXPECT_EQ(state->fwmark, 0u);
  ASSERT_TRUE(state->private_key);
  EXPECT_TRUE(state->private_key->equals(secret_of(0x11)));
  EXPECT_EQ(state->public_key, key_of(0xabc));
  ASSERT_EQ(state->peers.size(), 3u);

  const Peer& p1 = state->peers[0];
  EXPECT_EQ(p1.public_key, key_of(1));
  EXPECT_FALSE(p1.preshared_key);  // all zero reads as none
  EXPECT_EQ(p1.endpoint->to_string(), "[::1]:30000");
  EXPECT_EQ(p1.persistent_keepalive, 25);
  EXPECT_EQ(p1.tx_bytes, 1000u);
  EXPECT_EQ(p1.rx_bytes, 2000u);
  EXPECT_EQ(p1.protocol_version, 1u);
  EXPECT_EQ(p1.last_handshake,
            Clock::time_point(std::chrono::duration_cast<Clock::duration>(
                std::chrono::seconds(1700000000) + std::chrono::nanoseconds(5))));
  ASSERT_EQ(p1.allowed_ips.size(), 2u);
  EXPECT_EQ(p1.allowed_ips[1].to_string(), "10.255.0.3/32");

  const Peer& p2 = state->peers[1];
  EXPECT_EQ(p2.public_key, key_of(2));
  ASSERT_TRUE(p2.preshared_key);
  EXPECT_TRUE(p2.preshared_key->equals(secret_of(0x77)));
  EXPECT_EQ(p2.endpoint->to_string(), "127.0.0.1:51820");
  EXPECT_EQ(p2.last_handshake, Clock::time_point(std::chrono::nanoseconds(5)));
  std::vector<std::string> ips;
  for (auto& p : p2.allowed_ips) ips.push_back(p.to_string());
  EXPECT_EQ(ips, (std::vector<std::string>{"fd00::1/128", "fd00::2/128", "10.9.0.0/16"}));

  EXPECT_EQ(state->peers[2].public_key, key_of(3));
  EXPECT_TRUE(state->peers[2].allowed_ips.empty());
}

TEST(ParseDump, DoneIsOptionalAndNoopsAreSkipped) {
  auto dump = sample_dump(false);
  ASSERT_TRUE(parse_get_device_dump(dump, kFamily));
  Raw r;
  auto m = r.begin_msg(NLMSG_NOOP, 0, 0);
  r.end_msg(m);
  dump.insert(dump.begin(), r.bytes().begin(), r.bytes().end());
  auto state = parse_get_device_dump(dump, kFamily);
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_EQ(state->peers.size(), 3u);
}

TEST(ParseDump, UnalignedInputIsCopiedNotMisread) {
  auto dump = sample_dump();
  std::vector<std::uint8_t> shifted(dump.size() + 1);
  std::memcpy(shifted.data() + 1, dump.data(), dump.size());
  auto state = parse_get_device_dump(std::span(shifted).subspan(1), kFamily);
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_EQ(state->peers.size(), 3u);
}

TEST(ParseDump, EveryTruncationIsAnError) {
  auto dump = sample_dump(false);
  std::uint32_t first_len;
  std::memcpy(&first_len, dump.data(), 4);
  for (std::size_t len = 0; len < dump.size(); ++len) {
    auto state = parse_get_device_dump(std::span(dump.data(), len), kFamily);
    if (len == first_len) {
      // Exactly the first message: a valid (shorter) dump.
      EXPECT_TRUE(state) << len;
      continue;
    }
    ASSERT_FALSE(state) << "truncated to " << len << " of " << dump.size();
    EXPECT_EQ(state.error().errno_value(), EPROTO) << len;
  }
}

TEST(ParseDump, MessageLengthCutInsideAttributesIsAnError) {
  // The header claims fewer bytes than the attributes inside it need: cut at every length that
  // falls inside the peers nest of the first message.
  auto dump = sample_dump(false);
  std::uint32_t first_len;
  std::memcpy(&first_len, dump.data(), 4);
  std::vector<std::uint8_t> one(dump.begin(), dump.begin() + first_len);
  // The peers nest is the last attribute; find where it starts.
  std::size_t off = 20, peers_at = 0;
  while (off < one.size()) {
    std::uint16_t len, type;
    std::memcpy(&len, &one[off], 2);
    std::memcpy(&type, &one[off + 2], 2);
    if ((type & NLA_TYPE_MASK) == WGDEVICE_A_PEERS) peers_at = off;
    off += (len + 3u) & ~3u;
  }
  ASSERT_GT(peers_at, 20u);
  for (std::uint32_t len = peers_at + 1; len < first_len; ++len) {
    auto cut = one;
    std::memcpy(cut.data(), &len, 4);
    cut.resize(len);
    auto state = parse_get_device_dump(cut, kFamily);
    EXPECT_FALSE(state) << "cut at " << len;
  }
}

TEST(ParseDump, CorruptedBytesNeverCrash) {
  auto dump = sample_dump();
  std::size_t errors = 0;
  for (std::size_t i = 0; i < dump.size(); ++i) {
    for (std::uint8_t x : {0xffu, 0x01u, 0x80u}) {
      auto bad = dump;
      bad[i] ^= x;
      if (!parse_get_device_dump(bad, kFamily)) ++errors;
    }
  }
  EXPECT_GT(errors, dump.size() / 4);  // lengths and types are everywhere
}

std::vector<std::uint8_t> one_peer_dump(const std::function<void(Raw&)>& peer_body) {
  DumpBuilder b;
  b.begin_message(true);
  auto p = b.r.nest(0);
  peer_body(b.r);
  b.r.end(p);
  b.end_message();
  return b.r.bytes();
}

TEST(ParseDump, BadFieldsAreProtocolErrors) {
  auto key = [](Raw& r) { r.attr(WGPEER_A_PUBLIC_KEY, key_of(1).data(), 32); };
  std::vector<std::pair<const char*, std::function<void(Raw&)>>> cases = {
      {"no public key", [](Raw& r) { r.attr16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, 1); }},
      {"short public key", [](Raw& r) { r.attr(WGPEER_A_PUBLIC_KEY, key_of(1).data(), 31); }},
      {"keepalive as u32",
       [&](Raw& r) {
         key(r);
         r.attr32(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, 1);
       }},
      {"rx bytes as u32",
       [&](Raw& r) {
         key(r);
         r.attr32(WGPEER_A_RX_BYTES, 1);
       }},
      {"endpoint family/length mismatch",
       [&](Raw& r) {
         key(r);
         sockaddr_in6 sin6{};
         sin6.sin6_family = AF_INET;
         r.attr(WGPEER_A_ENDPOINT, &sin6, sizeof sin6);
       }},
      {"negative handshake time",
       [&](Raw& r) {
         key(r);
         std::int64_t ts[2] = {-1, 0};
         r.attr(WGPEER_A_LAST_HANDSHAKE_TIME, ts, sizeof ts);
       }},
      {"cidr 33",
       [&](Raw& r) {
         key(r);
         auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
         std::uint8_t a[4] = {10, 0, 0, 0};
         raw_allowed_ip(r, AF_INET, a, 33);
         r.end(ips);
       }},
      {"IPv6 family with 4 bytes",
       [&](Raw& r) {
         key(r);
         auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
         auto item = r.nest(0);
         r.attr16(WGALLOWEDIP_A_FAMILY, AF_INET6);
         std::uint8_t a[4] = {};
         r.attr(WGALLOWEDIP_A_IPADDR, a, 4);
         r.attr8(WGALLOWEDIP_A_CIDR_MASK, 8);
         r.end(item);
         r.end(ips);
       }},
      {"allowed IP without cidr",
       [&](Raw& r) {
         key(r);
         auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
         auto item = r.nest(0);
         r.attr16(WGALLOWEDIP_A_FAMILY, AF_INET);
         std::uint8_t a[4] = {};
         r.attr(WGALLOWEDIP_A_IPADDR, a, 4);
         r.end(item);
         r.end(ips);
       }},
      {"nested attribute longer than its parent",
       [&](Raw& r) {
         key(r);
         auto ips = r.nest(WGPEER_A_ALLOWEDIPS);
         r.u16(200);
         r.u16(0);
         r.end(ips);
       }},
      {"attribute shorter than its header",
       [&](Raw& r) {
         key(r);
         r.u16(2);
         r.u16(WGPEER_A_RX_BYTES);
       }},
      {"trailing bytes",
       [&](Raw& r) {
         key(r);
         r.u16(0x4);
         r.set16(r.size() - 2, 3);  // a 2-byte tail claiming to be an attribute
       }},
  };
  for (auto& [name, body] : cases) {
    auto dump = one_peer_dump(body);
    auto state = parse_get_device_dump(dump, kFamily);
    ASSERT_FALSE(state) << name;
    EXPECT_EQ(state.error().errno_value(), EPROTO) << name << ": " << state.error().message();
  }
}

TEST(ParseDump, StreamLevelErrors) {
  auto dump = sample_dump();
  {
    auto bad = dump;
    std::uint32_t huge = 0xffffffff;
    std::memcpy(bad.data(), &huge, 4);
    EXPECT_EQ(parse_get_device_dump(bad, kFamily).error().errno_value(), EPROTO);
  }
  {
    auto bad = dump;
    std::uint16_t flags = NLM_F_MULTI | NLM_F_DUMP_INTR;
    std::memcpy(bad.data() + 6, &flags, 2);
    EXPECT_EQ(parse_get_device_dump(bad, kFamily).error().errno_value(), EINTR);
  }
  EXPECT_EQ(parse_get_device_dump(dump, kFamily + 1).error().errno_value(), EPROTO);
  {
    auto bad = dump;
    bad[16] = WG_CMD_SET_DEVICE;
    EXPECT_EQ(parse_get_device_dump(bad, kFamily).error().errno_value(), EPROTO);
  }
  EXPECT_EQ(parse_get_device_dump({}, kFamily).error().errno_value(), EPROTO);
  {
    Raw r;
    r.done(-ENODEV);
    EXPECT_EQ(parse_get_device_dump(r.bytes(), kFamily).error().errno_value(), ENODEV);
  }
  {
    Raw r;
    auto m = r.begin_msg(NLMSG_ERROR, 0, 0);
    r.bytes().resize(r.bytes().size() - 4);  // no genl header in an error message
    r.u32(static_cast<std::uint32_t>(-EOPNOTSUPP));
    for (int i = 0; i < 4; ++i) r.u32(0);  // the request's nlmsghdr
    r.end_msg(m);
    EXPECT_EQ(parse_get_device_dump(r.bytes(), kFamily).error().errno_value(), EOPNOTSUPP);
  }
  {
    // The same peer twice, not as a continuation.
    auto twice = one_peer_dump([](Raw& r) { r.attr(WGPEER_A_PUBLIC_KEY, key_of(1).data(), 32); });
    auto more = twice;
    // Second message without device fields, with the same peer as its second entry.
    DumpBuilder b;
    b.begin_message(false);
    auto p = b.r.nest(0);
    b.r.attr(WGPEER_A_PUBLIC_KEY, key_of(2).data(), 32);
    b.r.end(p);
    p = b.r.nest(0);
    b.r.attr(WGPEER_A_PUBLIC_KEY, key_of(1).data(), 32);
    b.r.end(p);
    b.end_message();
    more.insert(more.end(), b.r.bytes().begin(), b.r.bytes().end());
    auto state = parse_get_device_dump(more, kFamily);
    ASSERT_FALSE(state);
    EXPECT_NE(state.error().context().find("twice"), std::string::npos);
  }
}

TEST(ParseAck, ExtendedAckMessageAndFamilyReply) {
  Raw r;
  auto m = r.begin_msg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 0);
  r.bytes().resize(r.bytes().size() - 4);
  r.u32(static_cast<std::uint32_t>(-EINVAL));
  for (int i = 0; i < 4; ++i) r.u32(0);
  r.str(NLMSGERR_ATTR_MSG, "Unknown attribute type");
  r.end_msg(m);
  auto ack = parse_ack(r.bytes());
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->error, -EINVAL);
  EXPECT_EQ(ack->message, "Unknown attribute type");
  for (std::size_t len = 0; len < 36; ++len) {
    EXPECT_FALSE(parse_ack(std::span(r.bytes().data(), len))) << len;
  }

  Raw f;
  auto fm = f.begin_msg(GENL_ID_CTRL, 0, CTRL_CMD_NEWFAMILY);
  f.str(CTRL_ATTR_FAMILY_NAME, "wireguard");
  f.attr16(CTRL_ATTR_FAMILY_ID, 0x23);
  f.end_msg(fm);
  auto id = parse_family_reply(f.bytes());
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(*id, 0x23);
  for (std::size_t len = 0; len < f.size(); ++len) {
    EXPECT_FALSE(parse_family_reply(std::span(f.bytes().data(), len))) << len;
  }
}

TEST(Requests, DumpAndFamilyRequestBytes) {
  Raw r;
  auto m = r.begin_msg(kFamily, NLM_F_REQUEST | NLM_F_DUMP, WG_CMD_GET_DEVICE);
  r.str(WGDEVICE_A_IFNAME, "pcl0");
  r.end_msg(m);
  EXPECT_EQ(build_get_device_request("pcl0", kFamily), r.bytes());

  Raw f;
  auto fm = f.begin_msg(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, CTRL_CMD_GETFAMILY);
  f.str(CTRL_ATTR_FAMILY_NAME, "wireguard");
  f.end_msg(fm);
  EXPECT_EQ(build_get_family_request("wireguard"), f.bytes());
}

TEST(RoundTrip, BuiltPeersParseBackAsADump) {
  // A SET_DEVICE message re-labelled as a dump part parses to the same peers: both directions
  // agree on the layout.
  DeviceDelta d;
  for (std::uint32_t i = 0; i < 40; ++i) {
    PeerChange p;
    p.public_key = key_of(i);
    p.allowed_ips = std::vector{v4_host(0x0a000000 + i), prefix("fd00::/64")};
    p.persistent_keepalive = static_cast<std::uint16_t>(i);
    d.peers.push_back(std::move(p));
  }
  auto msgs = build_set_device("pcl0", kFamily, d, 1024);
  ASSERT_TRUE(msgs);
  std::vector<std::uint8_t> stream;
  for (auto& m : *msgs) {
    auto b = m.bytes;
    b[16] = WG_CMD_GET_DEVICE;
    stream.insert(stream.end(), b.begin(), b.end());
  }
  auto state = parse_get_device_dump(stream, kFamily);
  ASSERT_TRUE(state) << state.error().message();
  ASSERT_EQ(state->peers.size(), 40u);
  for (std::uint32_t i = 0; i < 40; ++i) {
    EXPECT_EQ(state->peers[i].public_key, key_of(i));
    EXPECT_EQ(state->peers[i].persistent_keepalive, i);
    EXPECT_EQ(state->peers[i].allowed_ips.size(), 2u);
  }
}

}  // namespace
}  // namespace portcullis::wg::genl
