#include "dataplane/wireguard/uapi_protocol.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace portcullis::wg::uapi {
namespace {

using ::testing::HasSubstr;

Key key(std::uint8_t n) {
  KeyBytes b{};
  b[0] = n;
  b[31] = 0x40;
  return Key(b);
}

std::string hex(std::uint8_t n) { return key_to_hex(key(n).bytes()); }

IpPrefix prefix(const char* text) { return *IpPrefix::parse(text); }

// Captured from wireguard-go 0.0.20220316 after
//   wg set pclcap0 private-key K1 listen-port 51820 fwmark 0x42
//     peer P1 preshared-key PSK endpoint [2001:db8::1]:30000
//       allowed-ips 10.255.0.2/32,fd00::2/128 persistent-keepalive 25
//     peer P2 endpoint 192.0.2.7:51820 allowed-ips 10.255.0.3/32
// with printf 'get=1\n\n' | socat - UNIX-CONNECT:/var/run/wireguard/pclcap0.sock (throwaway keys).
constexpr std::string_view kCapturedReply =
    "private_key=b000597a85b2c5c65edc7533fb9367482da66057452db49e12ce95ef9373c368\n"
    "listen_port=51820\n"
    "fwmark=66\n"
    "public_key=c56c4f612656951688f0bdc9e48d894b69b8597efb012fa23b7cd54c394ea308\n"
    "preshared_key=d4f25dc3a5da6c748b70d2653ea8ce48ffe7e9b3df8661488da9a0d643ebdc9e\n"
    "protocol_version=1\n"
    "endpoint=[2001:db8::1]:30000\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=0\n"
    "persistent_keepalive_interval=25\n"
    "allowed_ip=10.255.0.2/32\n"
    "allowed_ip=fd00::2/128\n"
    "public_key=2d6f7092c5fcf4a01bcb0414b5f2a781061313fa587c180ed3874911444f2835\n"
    "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
    "protocol_version=1\n"
    "endpoint=192.0.2.7:51820\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=0\n"
    "persistent_keepalive_interval=0\n"
    "allowed_ip=10.255.0.3/32\n"
    "errno=0\n"
    "\n";

// A peer after a handshake and some traffic: the captured layout with non-zero values.
std::string peer_with_traffic(std::uint8_t n) {
  return "public_key=" + hex(n) +
         "\n"
         "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
         "protocol_version=1\n"
         "endpoint=10.0.0.2:30000\n"
         "last_handshake_time_sec=1732918122\n"
         "last_handshake_time_nsec=491236120\n"
         "tx_bytes=1436\n"
         "rx_bytes=1308\n"
         "persistent_keepalive_interval=0\n"
         "allowed_ip=10.255.0.2/32\n";
}

TEST(UapiFormat, AddPeerWithEverything) {
  DeviceDelta d;
  d.listen_port = 30000;
  d.fwmark = 0x42;
  PeerChange c;
  c.public_key = key(1);
  c.preshared_key = SecretKey(key(9).bytes());
  c.endpoint = *Endpoint::parse("192.0.2.1:51820");
  c.persistent_keepalive = 25;
  c.allowed_ips = std::vector<IpPrefix>{prefix("10.255.0.2/32"), prefix("fd00::2/128")};
  d.peers.push_back(c);
  auto tx = format_set(d);
  ASSERT_EQ(tx.size(), 1u);
  EXPECT_EQ(tx[0].text,
            "set=1\n"
            "listen_port=30000\n"
            "fwmark=66\n"
            "public_key=" +
                hex(1) +
                "\n"
                "preshared_key=" +
                hex(9) +
                "\n"
                "endpoint=192.0.2.1:51820\n"
                "persistent_keepalive_interval=25\n"
                "replace_allowed_ips=true\n"
                "allowed_ip=10.255.0.2/32\n"
                "allowed_ip=fd00::2/128\n"
                "\n");
  EXPECT_EQ(tx[0].first_peer, 0u);
  EXPECT_EQ(tx[0].end_peer, 1u);
  EXPECT_FALSE(tx[0].continues_peer);
}

TEST(UapiFormat, UpdateOnlyRemovePskClearAndV6Endpoint) {
  DeviceDelta d;
  d.private_key = SecretKey(key(7).bytes());
  PeerChange remove;
  remove.public_key = key(1);
  remove.remove = true;
  remove.endpoint = *Endpoint::parse("192.0.2.1:1");  // ignored: the peer goes
  PeerChange update;
  update.public_key = key(2);
  update.update_only = true;
  update.preshared_key = SecretKey();  // all zero: clear
  update.endpoint = *Endpoint::parse("[2001:db8::1]:30000");
  PeerChange keepalive_off;
  keepalive_off.public_key = key(3);
  keepalive_off.update_only = true;
  keepalive_off.persistent_keepalive = 0;
  keepalive_off.allowed_ips = std::vector<IpPrefix>{};  // present and empty: remove all
  d.peers = {remove, update, keepalive_off};
  auto tx = format_set(d);
  ASSERT_EQ(tx.size(), 1u);
  EXPECT_EQ(tx[0].text,
            "set=1\n"
            "private_key=" +
                hex(7) +
                "\n"
                "public_key=" +
                hex(1) +
                "\n"
                "remove=true\n"
                "public_key=" +
                hex(2) +
                "\n"
                "update_only=true\n"
                "preshared_key=" +
                std::string(64, '0') +
                "\n"
                "endpoint=[2001:db8::1]:30000\n"
                "public_key=" +
                hex(3) +
                "\n"
                "update_only=true\n"
                "persistent_keepalive_interval=0\n"
                "replace_allowed_ips=true\n"
                "\n");
  EXPECT_THAT(tx[0].text, ::testing::Not(HasSubstr("replace_peers")));
}

TEST(UapiFormat, AllowedIpsAbsentMeansNoReplace) {
  DeviceDelta d;
  PeerChange c;
  c.public_key = key(1);
  c.persistent_keepalive = 10;
  d.peers = {c};
  auto tx = format_set(d);
  ASSERT_EQ(tx.size(), 1u);
  EXPECT_THAT(tx[0].text, ::testing::Not(HasSubstr("replace_allowed_ips")));
  EXPECT_THAT(tx[0].text, ::testing::Not(HasSubstr("allowed_ip=")));
}

TEST(UapiFormat, EmptyDeltaGivesNoTransactions) { EXPECT_TRUE(format_set(DeviceDelta{}).empty()); }

TEST(UapiFormat, DeviceOnlyDelta) {
  DeviceDelta d;
  d.listen_port = 0;
  auto tx = format_set(d);
  ASSERT_EQ(tx.size(), 1u);
  EXPECT_EQ(tx[0].text, "set=1\nlisten_port=0\n\n");
  EXPECT_EQ(tx[0].first_peer, 0u);
  EXPECT_EQ(tx[0].end_peer, 0u);
}

DeviceDelta many_peers(std::size_t n) {
  DeviceDelta d;
  d.listen_port = 30000;
  for (std::size_t i = 0; i < n; ++i) {
    KeyBytes b{};
    b[0] = static_cast<std::uint8_t>(i);
    b[1] = static_cast<std::uint8_t>(i >> 8);
    PeerChange c;
    c.public_key = Key(b);
    c.allowed_ips = std::vector<IpPrefix>{
        IpPrefix::host(IpAddress::v4_host_order(0x0aff0000u + static_cast<std::uint32_t>(i)))};
    d.peers.push_back(c);
  }
  return d;
}

TEST(UapiFormat, TenThousandPeersSplitIntoBoundedContiguousChunks) {
  auto d = many_peers(10000);
  auto tx = format_set(d);
  ASSERT_GT(tx.size(), 1u);
  std::size_t next = 0, peers_seen = 0;
  for (std::size_t i = 0; i < tx.size(); ++i) {
    EXPECT_LE(tx[i].text.size(), kDefaultMaxTransactionBytes) << "transaction " << i;
    EXPECT_TRUE(tx[i].text.starts_with("set=1\n"));
    EXPECT_TRUE(tx[i].text.ends_with("\n\n"));
    EXPECT_EQ(tx[i].first_peer, next);
    EXPECT_FALSE(tx[i].continues_peer);
    EXPECT_EQ(tx[i].text.find("listen_port=") != std::string::npos, i == 0);
    std::size_t count = 0;
    for (std::size_t p = tx[i].text.find("public_key="); p != std::string::npos;
         p = tx[i].text.find("public_key=", p + 1)) {
      ++count;
    }
    EXPECT_EQ(count, tx[i].end_peer - tx[i].first_peer);
    peers_seen += count;
    next = tx[i].end_peer;
  }
  EXPECT_EQ(next, 10000u);
  EXPECT_EQ(peers_seen, 10000u);
  // The peers are in order: the first of chunk 2 is peer tx[1].first_peer.
  auto first = d.peers[tx[1].first_peer].public_key.bytes();
  EXPECT_TRUE(tx[1].text.starts_with("set=1\npublic_key=" + key_to_hex(first) + "\n"));
}

TEST(UapiFormat, PeerWithManyAllowedIpsContinuesInNextTransaction) {
  DeviceDelta d;
  PeerChange c;
  c.public_key = key(1);
  c.allowed_ips = std::vector<IpPrefix>{};
  for (std::uint32_t i = 0; i < 100; ++i) {
    c.allowed_ips->push_back(IpPrefix::host(IpAddress::v4_host_order(0x0a000000u + i)));
  }
  d.peers = {c};
  auto tx = format_set(d, 512);
  ASSERT_GT(tx.size(), 2u);
  std::size_t ips = 0;
  for (std::size_t i = 0; i < tx.size(); ++i) {
    EXPECT_LE(tx[i].text.size(), 512u);
    EXPECT_EQ(tx[i].first_peer, 0u);
    EXPECT_EQ(tx[i].end_peer, 1u);
    EXPECT_EQ(tx[i].continues_peer, i > 0);
    // Only the first transaction replaces; continuations never create the peer.
    EXPECT_EQ(tx[i].text.find("replace_allowed_ips=true") != std::string::npos, i == 0);
    if (i > 0) {
      EXPECT_TRUE(tx[i].text.starts_with("set=1\npublic_key=" + hex(1) + "\nupdate_only=true\n"));
    }
    for (std::size_t p = tx[i].text.find("allowed_ip="); p != std::string::npos;
         p = tx[i].text.find("allowed_ip=", p + 1)) {
      ++ips;
    }
  }
  EXPECT_EQ(ips, 100u);
}

TEST(UapiParse, CapturedReply) {
  auto s = parse_get_reply("pclcap0", kCapturedReply);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->ifname, "pclcap0");
  ASSERT_TRUE(s->private_key);
  ASSERT_TRUE(s->public_key);
  EXPECT_EQ(*s->public_key, s->private_key->public_key());
  EXPECT_EQ(s->listen_port, 51820);
  EXPECT_EQ(s->fwmark, 66u);
  ASSERT_EQ(s->peers.size(), 2u);
  const Peer& p1 = s->peers[0];
  EXPECT_EQ(key_to_hex(p1.public_key.bytes()),
            "c56c4f612656951688f0bdc9e48d894b69b8597efb012fa23b7cd54c394ea308");
  ASSERT_TRUE(p1.preshared_key);
  EXPECT_EQ(p1.protocol_version, 1u);
  EXPECT_EQ(p1.endpoint, *Endpoint::parse("[2001:db8::1]:30000"));
  EXPECT_EQ(p1.persistent_keepalive, 25);
  EXPECT_EQ(p1.allowed_ips,
            (std::vector<IpPrefix>{prefix("10.255.0.2/32"), prefix("fd00::2/128")}));
  EXPECT_EQ(p1.last_handshake, Clock::time_point{});
  const Peer& p2 = s->peers[1];
  EXPECT_FALSE(p2.preshared_key);  // all zero reads as none
  EXPECT_EQ(p2.endpoint, *Endpoint::parse("192.0.2.7:51820"));
  EXPECT_EQ(p2.allowed_ips, (std::vector<IpPrefix>{prefix("10.255.0.3/32")}));
}

TEST(UapiParse, HandshakeAndCounters) {
  auto s = parse_get_reply("pcl0", "listen_port=30000\n" + peer_with_traffic(1) + "errno=0\n\n");
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_EQ(s->peers.size(), 1u);
  EXPECT_FALSE(s->private_key);
  EXPECT_EQ(s->peers[0].rx_bytes, 1308u);
  EXPECT_EQ(s->peers[0].tx_bytes, 1436u);
  EXPECT_EQ(s->peers[0].last_handshake.time_since_epoch(),
            std::chrono::seconds(1732918122) + std::chrono::nanoseconds(491236120));
}

TEST(UapiParse, EmptyDevice) {
  auto s = parse_get_reply("pcl0", "errno=0\n\n");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_TRUE(s->peers.empty());
  EXPECT_EQ(s->listen_port, 0);
}

TEST(UapiParse, UnknownWellFormedKeyIsIgnored) {
  auto s = parse_get_reply("pcl0", "listen_port=1\nfuture_key=x y\n" + peer_with_traffic(1) +
                                       "peer_future=7\nerrno=0\n\n");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->peers.size(), 1u);
}

struct BadReply {
  const char* name;
  std::string reply;
  int errno_value;
  std::string says;
};

TEST(UapiParse, BadRepliesAreErrorsWithContext) {
  std::string p1 = peer_with_traffic(1);
  const BadReply cases[] = {
      {"errno nonzero (wireguard-go writes it negative)", "errno=-22\n\n", EINVAL, "errno=-22"},
      {"errno positive", "errno=5\n\n", EIO, "errno=5"},
      {"no errno", "listen_port=1\n\n", EPROTO, "without errno"},
      {"no blank line", "listen_port=1\nerrno=0\n", EPROTO, "terminating blank line"},
      {"unterminated line", "listen_port=1\nerrno=0", EPROTO, "line 2"},
      {"empty", "", EPROTO, "blank line"},
      {"blank only", "\n", EPROTO, "without errno"},
      {"data after end", "errno=0\n\nerrno=0\n\n", EPROTO, "after the blank line"},
      {"data after errno", "errno=0\nlisten_port=1\n\n", EPROTO, "after errno"},
      {"not key=value", "listen_port\nerrno=0\n\n", EPROTO, "line 1"},
      {"upper-case key", "Listen_port=1\nerrno=0\n\n", EPROTO, "not key=value"},
      {"control char", "listen_port=1\r\nerrno=0\n\n", EPROTO, "not key=value"},
      {"port out of range", "listen_port=65536\nerrno=0\n\n", EPROTO, "0..65535"},
      {"negative number", "listen_port=-1\nerrno=0\n\n", EPROTO, "listen_port"},
      {"number with sign", "fwmark=+1\nerrno=0\n\n", EPROTO, "fwmark"},
      {"empty number", "fwmark=\nerrno=0\n\n", EPROTO, "fwmark"},
      {"rx overflow", "public_key=" + hex(1) + "\nrx_bytes=18446744073709551616\nerrno=0\n\n",
       EPROTO, "peer '" + key(1).short_name() + "'"},
      {"nsec too big",
       "public_key=" + hex(1) + "\nlast_handshake_time_nsec=1000000000\nerrno=0\n\n", EPROTO,
       "last_handshake_time_nsec"},
      {"sec beyond clock",
       "public_key=" + hex(1) + "\nlast_handshake_time_sec=9223372036854775807\nerrno=0\n\n",
       EPROTO, "last_handshake_time_sec"},
      {"short key", "public_key=abcd\nerrno=0\n\n", EPROTO, "64 hex"},
      {"non-hex key", "public_key=" + std::string(63, 'a') + "g\nerrno=0\n\n", EPROTO, "non-hex"},
      {"bad private key", "private_key=zz\nerrno=0\n\n", EPROTO, "private_key"},
      {"duplicate peer", p1 + p1 + "errno=0\n\n", EPROTO, "appears twice"},
      {"duplicate field", "listen_port=1\nlisten_port=2\nerrno=0\n\n", EPROTO, "appears twice"},
      {"device key after peer", p1 + "listen_port=1\nerrno=0\n\n", EPROTO, "after a peer"},
      {"peer key before peer", "rx_bytes=1\nerrno=0\n\n", EPROTO, "before any public_key"},
      {"allowed ip without length", "public_key=" + hex(1) + "\nallowed_ip=10.0.0.1\nerrno=0\n\n",
       EPROTO, "prefix length"},
      {"allowed ip bad length", "public_key=" + hex(1) + "\nallowed_ip=10.0.0.1/33\nerrno=0\n\n",
       EPROTO, "allowed_ip"},
      {"bad endpoint", "public_key=" + hex(1) + "\nendpoint=2001:db8::1:80\nerrno=0\n\n", EPROTO,
       "endpoint"},
      {"long line", "x=" + std::string(2000, 'a') + "\nerrno=0\n\n", EPROTO, "longer than"},
  };
  for (const auto& c : cases) {
    auto s = parse_get_reply("pcl0", c.reply);
    ASSERT_FALSE(s) << c.name;
    EXPECT_EQ(s.error().errno_value(), c.errno_value) << c.name << ": " << s.error().message();
    EXPECT_THAT(s.error().message(), HasSubstr(c.says)) << c.name;
    EXPECT_THAT(s.error().message(), HasSubstr("pcl0")) << c.name;
  }
}

TEST(UapiParse, OversizedReplyIsRefused) {
  std::string reply = "listen_port=1\n" + peer_with_traffic(1) + "errno=0\n\n";
  auto s = parse_get_reply("pcl0", reply, reply.size() - 1);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errno_value(), EMSGSIZE);
  EXPECT_TRUE(parse_get_reply("pcl0", reply, reply.size()));
}

TEST(UapiParse, EveryTruncationIsAnErrorNeverACrash) {
  for (std::size_t len = 0; len < kCapturedReply.size(); ++len) {
    std::string cut(kCapturedReply.substr(0, len));  // own buffer, so ASan sees overreads
    auto s = parse_get_reply("pclcap0", cut);
    EXPECT_FALSE(s) << "truncated at " << len;
  }
  EXPECT_TRUE(parse_get_reply("pclcap0", kCapturedReply));
}

TEST(UapiParse, TenThousandPeers) {
  std::string reply = "private_key=" + hex(200) + "\nlisten_port=30000\n";
  for (std::uint32_t i = 0; i < 10000; ++i) {
    KeyBytes b{};
    b[0] = static_cast<std::uint8_t>(i);
    b[1] = static_cast<std::uint8_t>(i >> 8);
    reply += "public_key=" + key_to_hex(b) + "\nprotocol_version=1\nrx_bytes=" + std::to_string(i) +
             "\nallowed_ip=10.255." + std::to_string(i / 256) + "." + std::to_string(i % 256) +
             "/32\n";
  }
  reply += "errno=0\n\n";
  auto s = parse_get_reply("pcl0", reply);
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_EQ(s->peers.size(), 10000u);
  EXPECT_EQ(s->peers[9999].rx_bytes, 9999u);
}

TEST(UapiParse, SetReply) {
  EXPECT_EQ(parse_set_reply("pcl0", "errno=0\n\n"), 0);
  EXPECT_EQ(parse_set_reply("pcl0", "errno=-22\n\n"), 22);
  for (const char* bad :
       {"", "errno=0\n", "errno=\n\n", "errno=x\n\n", "oops\n\n", "errno=0\n\nerrno=0\n\n"}) {
    auto r = parse_set_reply("pcl0", bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_THAT(r.error().message(), HasSubstr("pcl0"));
  }
}

TEST(UapiKeys, HexRoundTrip) {
  auto k = key(5).bytes();
  EXPECT_EQ(key_from_hex(key_to_hex(k)), k);
  std::string upper = key_to_hex(k);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(key_from_hex(upper), k);
  EXPECT_FALSE(key_from_hex(""));
  EXPECT_FALSE(key_from_hex(std::string(65, '0')));
}

}  // namespace
}  // namespace portcullis::wg::uapi
