#include "dataplane/wireguard/wg_conf.h"

#include <gtest/gtest.h>

namespace portcullis::wg {
namespace {

constexpr const char* kPriv = "MOdTYPIBxl6f/HrprAX/voDdW0ZyVjz8zPuaeF2E124=";
constexpr const char* kPubA = "KisnoSbdBp6inx9iIMik3F/j/wNlvmKYrZFoMj0Vlmw=";
constexpr const char* kPubB = "drCwBsCEA+H5OBaLrUmJabuNlHnaij7/U4eRk5D8vxU=";

TEST(WgConf, ParsesWhatWgSetconfReads) {
  auto c = parse_wg_conf(std::string(R"(# gateway
[Interface]
PrivateKey = )") + kPriv +
                         R"(
ListenPort = 30000
fwmark = 0x10

[Peer]
PublicKey = )" + kPubA + R"(   # agent a
AllowedIPs = 10.255.0.2/32,fd00::2/128
Endpoint = [2001:db8::1]:51820
PersistentKeepalive = 30

[peer]
PublicKey=)" + kPubB + R"(
AllowedIPs = 10.255.0.3/32
PersistentKeepalive = off
)");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->private_key->public_key().to_base64(), kPubA);
  EXPECT_EQ(*c->listen_port, 30000);
  EXPECT_EQ(*c->fwmark, 16u);
  ASSERT_EQ(c->peers.size(), 2u);
  EXPECT_EQ(c->peers[0].public_key.to_base64(), kPubA);
  ASSERT_EQ(c->peers[0].allowed_ips.size(), 2u);
  EXPECT_EQ(c->peers[0].allowed_ips[1].to_string(), "fd00::2/128");
  EXPECT_EQ(c->peers[0].endpoint->to_string(), "[2001:db8::1]:51820");
  EXPECT_EQ(c->peers[0].persistent_keepalive, 30);
  EXPECT_EQ(c->peers[1].persistent_keepalive, 0);
  EXPECT_FALSE(c->peers[1].endpoint);
}

TEST(WgConf, FormatRoundTrips) {
  DeviceConfig c;
  c.private_key = *SecretKey::from_base64(kPriv);
  c.listen_port = 30000;
  Peer p;
  p.public_key = *Key::from_base64(kPubB);
  p.allowed_ips = {*IpPrefix::parse("10.255.0.3/32")};
  p.persistent_keepalive = 30;
  p.endpoint = *Endpoint::parse("192.0.2.1:4000");
  c.peers.push_back(p);
  auto back = parse_wg_conf(format_wg_conf(c));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(format_wg_conf(*back), format_wg_conf(c));
}

struct BadCase {
  const char* text;
  const char* expect;  // a piece of the error message
};

TEST(WgConf, RejectsBadInputWithLineNumbers) {
  std::string peer = std::string("[Peer]\nPublicKey = ") + kPubA + "\n";
  const BadCase cases[] = {
      {"PrivateKey = x\n", "line 1: 'privatekey' outside of a section"},
      {"[Interface]\nPrivateKey = abc\n", "line 2: privatekey: key must be 44"},
      {"[Interface]\nListenPort = 70000\n", "line 2: listenport"},
      {"[Interface]\nAddress = 10.0.0.1/24\n", "wg-quick setting"},
      {"[Interface]\nColour = blue\n", "unknown setting"},
      {"[Interface]\nListenPort 1\n", "expected 'Key = Value'"},
      {"[Wat]\n", "unknown section"},
      {"[Peer]\nAllowedIPs = 10.0.0.1/32\n[Peer]\n", "line 1: [Peer] section without PublicKey"},
      {"[Interface]\n[Interface]\n", "second [Interface]"},
      {"[Interface]\nListenPort = 1\nlistenport = 2\n", "given twice"},
  };
  for (const auto& c : cases) {
    auto r = parse_wg_conf(c.text);
    ASSERT_FALSE(r) << c.text;
    EXPECT_NE(r.error().context().find(c.expect), std::string::npos)
        << "input: " << c.text << "\nerror: " << r.error().context();
  }
  for (const std::string& bad :
       {peer + "AllowedIPs = 10.0.0.1/33\n", peer + "AllowedIPs = ,\n",
        peer + "Endpoint = vpn.example.com:51820\n", peer + "Endpoint = 10.0.0.1\n", peer + peer}) {
    EXPECT_FALSE(parse_wg_conf(bad)) << bad;
  }
}

}  // namespace
}  // namespace portcullis::wg
