// KernelWireguardDevice against the kernel's wireguard module. The host has none: ctest runs this
// binary inside the VM (tests/vm/CMakeLists.txt, ../shared/vm/run). Without the module every test
// skips.
//
//   pclk<pid>   kind wireguard, DOWN (no packet is ever sent), private key, 10,000 peers,
//               each with a /32 in 10.200.0.0/16; three with 1,500 IPv6 /128s more (so their
//               allowed IPs span many messages both ways); endpoints only on 127.0.0.1.
//               Deleting it takes minutes under TCG (see the timing lines).
//   pclr<pid>   for the failure cases (a message the kernel refuses; a listen port in use, UP
//               with peers that have no endpoint).
//
// Every result is checked against the kernel twice: read() (our dump parser) and `wg show <if>
// dump` (wireguard-tools' own), line by line.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/wireguard.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

#include "dataplane/base/unique_fd.h"
#include "dataplane/wireguard/genl_messages.h"
#include "dataplane/wireguard/kernel_device.h"

namespace portcullis::wg {
namespace {

using std::chrono::steady_clock;

struct Shell {
  int status = -1;
  std::string out;
};

Shell sh(const std::string& command) {
  Shell r;
  std::FILE* f = ::popen(command.c_str(), "r");
  if (!f) return r;
  char buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
  int st = ::pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// A kernel WireGuard link, deleted when the test ends (pass or fail).
class WgLink {
 public:
  explicit WgLink(std::string prefix) : name_(prefix + std::to_string(::getpid())) {
    sh("ip link del " + name_ + " 2>/dev/null");
    ok_ = sh("ip link add " + name_ + " type wireguard").status == 0;
  }
  ~WgLink() { remove(); }
  void remove() {
    if (ok_) sh("ip link del " + name_ + " 2>/dev/null");
    ok_ = false;
  }
  const std::string& name() const { return name_; }
  bool ok() const { return ok_; }

 private:
  std::string name_;
  bool ok_ = false;
};

class KernelWireguard : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (creates WireGuard links)";
    auto probe = KernelWireguardDevice::open("pcl-probe");
    if (!probe && probe.error().errno_value() == ENOENT) {
      GTEST_SKIP() << probe.error().message()
                   << " -- run inside the VM: ../shared/vm/run -- ctest -L vm";
    }
  }
};

Key random_key(std::mt19937_64& rng) {
  KeyBytes b;
  for (std::size_t i = 0; i < b.size(); i += 8) {
    std::uint64_t v = rng();
    std::memcpy(&b[i], &v, 8);
  }
  return Key(b);
}

double ms_since(steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(steady_clock::now() - t).count();
}

std::set<std::string> ip_set(const std::vector<IpPrefix>& ips) {
  std::set<std::string> s;
  for (auto& p : ips) s.insert(p.masked().to_string());
  return s;
}

// The lines of `wg show <if> dump` as wireguard-tools prints them, from our read().
std::vector<std::string> dump_lines(const DeviceState& s) {
  std::vector<std::string> lines;
  std::ostringstream dev;
  dev << (s.private_key ? s.private_key->reveal_base64() : "(none)") << '\t'
      << (s.public_key ? s.public_key->to_base64() : "(none)") << '\t' << s.listen_port << '\t'
      << (s.fwmark ? "0x" +
                         [&] {
                           char b[16];
                           std::snprintf(b, sizeof b, "%x", s.fwmark);
                           return std::string(b);
                         }()
                   : std::string("off"));
  lines.push_back(dev.str());
  for (const auto& p : s.peers) {
    std::ostringstream l;
    l << p.public_key.to_base64() << '\t'
      << (p.preshared_key ? p.preshared_key->reveal_base64() : "(none)") << '\t'
      << (p.endpoint ? p.endpoint->to_string() : "(none)") << '\t';
    if (p.allowed_ips.empty()) l << "(none)";
    for (std::size_t i = 0; i < p.allowed_ips.size(); ++i) {
      l << (i ? "," : "") << p.allowed_ips[i].to_string();
    }
    l << '\t'
      << std::chrono::duration_cast<std::chrono::seconds>(p.last_handshake.time_since_epoch())
             .count()
      << '\t' << p.rx_bytes << '\t' << p.tx_bytes << '\t';
    if (p.persistent_keepalive) {
      l << p.persistent_keepalive;
    } else {
      l << "off";
    }
    lines.push_back(l.str());
  }
  return lines;
}

void expect_same_as_wg_show(const std::string& ifname, const DeviceState& state) {
  auto wg = sh("wg show " + ifname + " dump");
  ASSERT_EQ(wg.status, 0) << "wg show " << ifname << " dump";
  std::vector<std::string> theirs;
  std::istringstream in(wg.out);
  for (std::string line; std::getline(in, line);) theirs.push_back(line);
  auto ours = dump_lines(state);
  ASSERT_EQ(theirs.size(), ours.size());
  EXPECT_EQ(theirs[0], ours[0]) << "device line";
  // Peer order is the kernel's in both; compare sorted all the same, so a difference in order
  // alone does not hide a difference in content.
  std::sort(theirs.begin() + 1, theirs.end());
  std::sort(ours.begin() + 1, ours.end());
  std::size_t differ = 0;
  for (std::size_t i = 1; i < ours.size(); ++i) {
    if (theirs[i] != ours[i] && ++differ <= 5) {
      ADD_FAILURE() << "wg show:  " << theirs[i] << "\nread():   " << ours[i];
    }
  }
  EXPECT_EQ(differ, 0u) << "lines that differ from wg show dump";
}

using PeerIndex = std::unordered_map<Key, const Peer*>;
PeerIndex index_peers(const DeviceState& state) {
  PeerIndex index;
  for (const auto& p : state.peers) index[p.public_key] = &p;
  return index;
}
const Peer* find(const PeerIndex& index, const Key& key) {
  auto it = index.find(key);
  return it == index.end() ? nullptr : it->second;
}

// Checks that the device holds peer `want` exactly as the delta asked.
void expect_peer(const PeerIndex& index, const PeerChange& want) {
  const Peer* got = find(index, want.public_key);
  ASSERT_NE(got, nullptr) << "peer " << want.public_key << " missing";
  if (want.allowed_ips) {
    EXPECT_EQ(ip_set(got->allowed_ips), ip_set(*want.allowed_ips)) << want.public_key;
    EXPECT_EQ(got->allowed_ips.size(), want.allowed_ips->size()) << want.public_key;
  }
  if (want.endpoint) {
    EXPECT_EQ(got->endpoint, want.endpoint) << want.public_key;
  }
  if (want.persistent_keepalive) {
    EXPECT_EQ(got->persistent_keepalive, *want.persistent_keepalive) << want.public_key;
  }
  if (want.preshared_key) {
    ASSERT_TRUE(got->preshared_key) << want.public_key;
    EXPECT_TRUE(got->preshared_key->equals(*want.preshared_key)) << want.public_key;
  } else {
    EXPECT_FALSE(got->preshared_key) << want.public_key;
  }
}

bool same_peer(const Peer& a, const Peer& b) {
  auto psk_equal =
      (!a.preshared_key && !b.preshared_key) ||
      (a.preshared_key && b.preshared_key && a.preshared_key->equals(*b.preshared_key));
  return a.public_key == b.public_key && psk_equal && a.endpoint == b.endpoint &&
         a.persistent_keepalive == b.persistent_keepalive && a.allowed_ips == b.allowed_ips &&
         a.last_handshake == b.last_handshake && a.rx_bytes == b.rx_bytes &&
         a.tx_bytes == b.tx_bytes && a.protocol_version == b.protocol_version;
}

DeviceDelta ten_thousand_peers(std::mt19937_64& rng) {
  DeviceDelta d;
  d.private_key = SecretKey::generate_private();
  d.listen_port = static_cast<std::uint16_t>(40000 + ::getpid() % 20000);
  d.fwmark = 0x51;
  const std::set<std::uint32_t> heavy = {10, 5000, 9990};
  for (std::uint32_t i = 0; i < 10000; ++i) {
    PeerChange p;
    p.public_key = random_key(rng);
    std::vector<IpPrefix> ips = {IpPrefix::host(IpAddress::v4_host_order(0x0ac80000 + i + 1))};
    if (heavy.count(i)) {
      for (std::uint32_t j = 0; j < 1500; ++j) {
        char text[64];
        std::snprintf(text, sizeof text, "fd00:%x::%x/128", i, j + 1);
        ips.push_back(*IpPrefix::parse(text));
      }
    }
    p.allowed_ips = std::move(ips);
    if (i % 97 == 0) p.endpoint = Endpoint(IpAddress::v4_host_order(0x7f000001), 20000 + i % 1000);
    if (i % 5 == 0) p.persistent_keepalive = 25;
    if (i % 13 == 0) p.preshared_key = SecretKey::generate_preshared();
    d.peers.push_back(std::move(p));
  }
  return d;
}

TEST_F(KernelWireguard, TenThousandPeersApplyReadUpdateRemove) {
  WgLink link("pclk");
  ASSERT_TRUE(link.ok()) << "ip link add " << link.name() << " type wireguard";
  auto opened = KernelWireguardDevice::open(link.name());
  ASSERT_TRUE(opened) << opened.error().message();
  auto& dev = **opened;

  // Where the time goes (TCG and sanitizers make the test itself the slow part).
  auto last = steady_clock::now();
  auto lap = [&](const char* what) {
    std::printf("[ timing ] %s: %.0f ms\n", what, ms_since(last));
    std::fflush(stdout);
    last = steady_clock::now();
  };
  std::mt19937_64 rng(12345);
  DeviceDelta delta = ten_thousand_peers(rng);
  lap("make the 10000-peer delta");
  auto messages = genl::build_set_device(dev.ifname(), dev.family_id(), delta);
  ASSERT_TRUE(messages);

  auto t0 = steady_clock::now();
  auto applied = dev.apply(delta);
  double apply_ms = ms_since(t0);
  ASSERT_TRUE(applied) << applied.error().message();

  t0 = steady_clock::now();
  auto state = dev.read();
  double read_ms = ms_since(t0);
  ASSERT_TRUE(state) << state.error().message();
  std::printf("[ timing ] apply 10000 peers (%zu SET_DEVICE messages): %.0f ms; read: %.0f ms\n",
              messages->size(), apply_ms, read_ms);
  last = steady_clock::now();
  RecordProperty("apply_10000_ms", static_cast<int>(apply_ms));
  RecordProperty("read_10000_ms", static_cast<int>(read_ms));

  EXPECT_EQ(state->ifname, link.name());
  EXPECT_NE(state->ifindex, 0u);
  ASSERT_TRUE(state->private_key);
  EXPECT_TRUE(state->private_key->equals(*delta.private_key));
  EXPECT_EQ(state->public_key, delta.private_key->public_key());
  EXPECT_EQ(state->listen_port, *delta.listen_port);
  EXPECT_EQ(state->fwmark, *delta.fwmark);
  ASSERT_EQ(state->peers.size(), delta.peers.size());
  const auto by_key = index_peers(*state);
  for (const auto& want : delta.peers) expect_peer(by_key, want);
  std::size_t ips = 0;
  for (const auto& p : state->peers) ips += p.allowed_ips.size();
  EXPECT_EQ(ips, 10000u + 3 * 1500u);
  lap("check every peer against the delta");
  expect_same_as_wg_show(link.name(), *state);
  lap("compare with wg show dump");

  // One peer updated in place, one removed: every other peer stays exactly as it was.
  DeviceDelta change;
  PeerChange update;
  update.public_key = delta.peers[42].public_key;
  update.update_only = true;
  update.endpoint = *Endpoint::parse("127.0.0.1:40042");
  update.allowed_ips =
      std::vector{*IpPrefix::parse("10.201.0.42/32"), *IpPrefix::parse("fd00:ffff::42/128")};
  PeerChange removal;
  removal.public_key = delta.peers[43].public_key;
  removal.remove = true;
  change.peers = {update, removal};
  t0 = steady_clock::now();
  auto changed = dev.apply(change);
  std::printf("[ timing ] apply a 2-peer delta to 10000 peers: %.1f ms\n", ms_since(t0));
  ASSERT_TRUE(changed) << changed.error().message();

  auto after = dev.read();
  ASSERT_TRUE(after) << after.error().message();
  ASSERT_EQ(after->peers.size(), delta.peers.size() - 1);
  EXPECT_EQ(after->find_peer(removal.public_key), nullptr);
  const auto after_by_key = index_peers(*after);
  expect_peer(after_by_key, update);
  std::size_t unchanged = 0;
  for (const auto& before : state->peers) {
    if (before.public_key == update.public_key || before.public_key == removal.public_key) {
      continue;
    }
    const Peer* now = find(after_by_key, before.public_key);
    if (now && same_peer(before, *now)) ++unchanged;
  }
  EXPECT_EQ(unchanged, delta.peers.size() - 2);
  lap("read and check after the 2-peer delta");
  expect_same_as_wg_show(link.name(), *after);
  lap("compare with wg show dump");

  // An empty delta sends nothing and changes nothing.
  EXPECT_TRUE(dev.apply(DeviceDelta{}));

  // The kernel removes peers one RCU grace period at a time: on TCG this is most of the test.
  last = steady_clock::now();
  link.remove();
  lap("ip link del with 9999 peers");
}

TEST_F(KernelWireguard, MissingDeviceIsNamed) {
  const std::string name = "pcln" + std::to_string(::getpid());
  auto opened = KernelWireguardDevice::open(name);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().errno_value(), ENODEV);
  EXPECT_NE(opened.error().message().find("'" + name + "'"), std::string::npos)
      << opened.error().message();

  // The link goes away after open(): the kernel's ENODEV names it too, for apply and read.
  auto dev = [&] {
    WgLink link("pcln");
    auto d = KernelWireguardDevice::open(link.name());
    EXPECT_TRUE(d) << d.error().message();
    return d ? std::move(*d) : nullptr;
  }();
  ASSERT_TRUE(dev);
  DeviceDelta delta;
  PeerChange p;
  std::mt19937_64 rng(1);
  p.public_key = random_key(rng);
  p.allowed_ips = std::vector{*IpPrefix::parse("10.200.0.1/32")};
  delta.peers = {p};
  auto applied = dev->apply(delta);
  ASSERT_FALSE(applied);
  EXPECT_EQ(applied.error().errno_value(), ENODEV);
  const std::string msg = applied.error().message();
  std::printf("[ message ] %s\n", msg.c_str());
  EXPECT_NE(msg.find("device '" + dev->ifname() + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("applied no peers of 1, not applied 1-1 starting at peer '" +
                     p.public_key.short_name() + "…'"),
            std::string::npos)
      << msg;
  auto read = dev->read();
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().errno_value(), ENODEV);
  EXPECT_NE(read.error().message().find(dev->ifname()), std::string::npos);
}

TEST_F(KernelWireguard, NotAWireguardInterface) {
  auto lo = KernelWireguardDevice::open("lo");
  ASSERT_TRUE(lo) << lo.error().message();
  auto read = (*lo)->read();
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().errno_value(), EOPNOTSUPP);
  EXPECT_NE(read.error().message().find("not a WireGuard interface"), std::string::npos)
      << read.error().message();
}

// Sets bit 31 in the WGPEER_A_FLAGS of the first peer of a SET_DEVICE message. The kernel
// refuses unknown peer flags (netlink.c set_peer: EOPNOTSUPP; a policy mask on newer kernels:
// EINVAL) before it looks the peer up, so nothing of that message is applied.
bool poison_first_peer_flags(std::vector<std::uint8_t>& msg) {
  auto find = [&](std::size_t from, std::size_t to, std::uint16_t type) -> std::size_t {
    while (from + 4 <= to) {
      std::uint16_t len, t;
      std::memcpy(&len, &msg[from], 2);
      std::memcpy(&t, &msg[from + 2], 2);
      if (len < 4) return 0;
      if ((t & NLA_TYPE_MASK) == type) return from;
      from += (len + 3u) & ~3u;
    }
    return 0;
  };
  auto len_at = [&](std::size_t at) {
    std::uint16_t len;
    std::memcpy(&len, &msg[at], 2);
    return static_cast<std::size_t>(len);
  };
  std::size_t peers = find(20, msg.size(), WGDEVICE_A_PEERS);
  if (!peers) return false;
  std::size_t first = peers + 4;
  std::size_t flags = find(first + 4, first + len_at(first), WGPEER_A_FLAGS);
  if (!flags) return false;
  std::uint32_t v;
  std::memcpy(&v, &msg[flags + 4], 4);
  v |= 1u << 31;
  std::memcpy(&msg[flags + 4], &v, 4);
  return true;
}

TEST_F(KernelWireguard, RefusedMessageReportsTheAppliedRange) {
  WgLink link("pclr");
  ASSERT_TRUE(link.ok());
  auto opened = KernelWireguardDevice::open(link.name());
  ASSERT_TRUE(opened) << opened.error().message();
  auto& dev = **opened;

  std::mt19937_64 rng(777);
  DeviceDelta delta;
  for (std::uint32_t i = 0; i < 600; ++i) {
    PeerChange p;
    p.public_key = random_key(rng);
    p.allowed_ips = std::vector{IpPrefix::host(IpAddress::v4_host_order(0x0ac80000 + i + 1))};
    delta.peers.push_back(std::move(p));
  }
  auto messages = genl::build_set_device(dev.ifname(), dev.family_id(), delta);
  ASSERT_TRUE(messages);
  ASSERT_GE(messages->size(), 6u);
  const std::size_t k = 4;  // the 5th message
  ASSERT_FALSE((*messages)[k].first_peer_continued);
  ASSERT_TRUE(poison_first_peer_flags((*messages)[k].bytes));
  const std::size_t n = (*messages)[k].first_peer;

  auto sent = dev.send_set_device(delta, *messages);
  ASSERT_FALSE(sent);
  const int err = sent.error().errno_value();
  EXPECT_TRUE(err == EOPNOTSUPP || err == EINVAL) << sent.error().message();
  const std::string msg = sent.error().message();
  std::printf("[ message ] %s\n", msg.c_str());
  const std::string want = "device '" + link.name() + "': applied peers 1-" + std::to_string(n) +
                           " of 600, not applied " + std::to_string(n + 1) +
                           "-600 starting at peer '" + delta.peers[n].public_key.short_name() +
                           "…'";
  EXPECT_EQ(msg.rfind(want, 0), 0u) << msg << "\nwanted: " << want;

  auto state = dev.read();
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_EQ(state->peers.size(), n) << "exactly the peers of the messages before the refused one";
  const auto by_key = index_peers(*state);
  for (std::size_t i = 0; i < delta.peers.size(); ++i) {
    EXPECT_EQ(find(by_key, delta.peers[i].public_key) != nullptr, i < n) << "peer " << i + 1;
  }
  expect_same_as_wg_show(link.name(), *state);
}

TEST_F(KernelWireguard, ListenPortInUseRefusesTheFirstMessage) {
  WgLink link("pclp");
  ASSERT_TRUE(link.ok());
  // The kernel binds the port only on a running device.
  ASSERT_EQ(sh("ip link set " + link.name() + " up").status, 0);
  auto opened = KernelWireguardDevice::open(link.name());
  ASSERT_TRUE(opened) << opened.error().message();

  UniqueFd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(udp);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  ASSERT_EQ(::bind(udp.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
  socklen_t len = sizeof sin;
  ASSERT_EQ(::getsockname(udp.get(), reinterpret_cast<sockaddr*>(&sin), &len), 0);

  std::mt19937_64 rng(99);
  DeviceDelta delta;
  delta.listen_port = ntohs(sin.sin_port);
  for (int i = 0; i < 100; ++i) {
    PeerChange p;
    p.public_key = random_key(rng);  // no endpoint: nothing is sent though the link is up
    delta.peers.push_back(std::move(p));
  }
  auto applied = (*opened)->apply(delta);
  ASSERT_FALSE(applied);
  EXPECT_EQ(applied.error().errno_value(), EADDRINUSE);
  const std::string msg = applied.error().message();
  std::printf("[ message ] %s\n", msg.c_str());
  EXPECT_NE(msg.find("applied no peers of 100, not applied 1-100 starting at peer '" +
                     delta.peers[0].public_key.short_name() + "…'"),
            std::string::npos)
      << msg;
  auto state = (*opened)->read();
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_TRUE(state->peers.empty());
}

}  // namespace
}  // namespace portcullis::wg
