// UapiWireguardDevice against a scripted UAPI server on a unix socket in a temporary directory:
// connection handling, deadlines, partial replies and the applied-range error. The real
// wireguard-go is exercised by tests/netns/wireguard_tunnel_test.cpp.
#include "dataplane/wireguard/uapi_device.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

namespace portcullis::wg {
namespace {

using ::testing::HasSubstr;

// Answers each connection with respond(request) once the request's blank line arrived.
class FakeUapiServer {
 public:
  using Respond = std::function<std::string(const std::string& request)>;

  FakeUapiServer(const std::string& path, Respond respond) : respond_(std::move(respond)) {
    listen_fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_.get(), 16), 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeUapiServer() {
    stop_ = true;
    ::shutdown(listen_fd_.get(), SHUT_RDWR);
    thread_.join();
  }
  int connections() const { return connections_; }
  std::vector<std::string> requests() const { return requests_; }

 private:
  void serve() {
    while (!stop_) {
      UniqueFd c(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) return;
      ++connections_;
      std::string req;
      char buf[4096];
      while (!req.ends_with("\n\n")) {
        ssize_t n = ::read(c.get(), buf, sizeof buf);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
      }
      requests_.push_back(req);
      std::string reply = respond_(req);
      if (reply == "HANG") {
        while (!stop_) ::usleep(1000);
        return;
      }
      (void)!::send(c.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
    }
  }

  Respond respond_;
  UniqueFd listen_fd_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::vector<std::string> requests_;
};

class UapiDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pcl-uapi-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path() const { return dir_ + "/pcl0.sock"; }

  Result<std::unique_ptr<UapiWireguardDevice>> open(int timeout_ms = 2000,
                                                    std::size_t max_tx = 64 * 1024) {
    UapiOptions o;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    o.max_transaction_bytes = max_tx;
    return UapiWireguardDevice::open("pcl0", dir_, o);
  }

  std::string dir_;
};

Key key(std::uint32_t n) {
  KeyBytes b{};
  b[0] = static_cast<std::uint8_t>(n);
  b[1] = static_cast<std::uint8_t>(n >> 8);
  b[31] = 0x40;
  return Key(b);
}

TEST_F(UapiDeviceTest, MissingSocketSaysWireguardGoIsNotRunning) {
  auto d = open();
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().errno_value(), ENOENT);
  EXPECT_THAT(d.error().message(), HasSubstr("wireguard-go for 'pcl0' is not running"));
  EXPECT_THAT(d.error().message(), HasSubstr(path()));
}

TEST_F(UapiDeviceTest, StaleSocketIsRefused) {
  {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path().c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }  // bound, never listening, closed: what a killed wireguard-go leaves
  auto d = open();
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().errno_value(), ECONNREFUSED);
  EXPECT_THAT(d.error().message(), HasSubstr("refused"));
}

TEST_F(UapiDeviceTest, ReadsAReplyOneConnectionPerCall) {
  FakeUapiServer server(
      path(), [](const std::string&) { return std::string("listen_port=30000\nerrno=0\n\n"); });
  auto d = open();
  ASSERT_TRUE(d) << d.error().message();
  for (int i = 0; i < 3; ++i) {
    auto s = (*d)->read();
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->listen_port, 30000);
  }
  EXPECT_EQ(server.connections(), 4);  // open() probes once
  EXPECT_EQ(server.requests().back(), "get=1\n\n");
}

TEST_F(UapiDeviceTest, HungServerTimesOut) {
  FakeUapiServer server(path(), [](const std::string& req) {
    return req.empty() ? std::string() : std::string("HANG");
  });
  auto d = open(300);
  ASSERT_TRUE(d) << d.error().message();
  auto start = std::chrono::steady_clock::now();
  auto s = (*d)->read();
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errno_value(), ETIMEDOUT);
  EXPECT_THAT(s.error().message(), HasSubstr("hung"));
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST_F(UapiDeviceTest, EofMidReplyIsAClearError) {
  FakeUapiServer server(
      path(), [](const std::string&) { return std::string("listen_port=30000\npublic_key=00"); });
  auto d = open();
  ASSERT_TRUE(d);
  auto s = (*d)->read();
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error().message(), HasSubstr("closed the connection after 31 bytes"));
  EXPECT_THAT(s.error().message(), HasSubstr("'pcl0'"));
}

TEST_F(UapiDeviceTest, ApplySendsEachChunkAndChecksErrno) {
  FakeUapiServer server(path(), [](const std::string&) { return std::string("errno=0\n\n"); });
  auto d = open(2000, 1024);
  ASSERT_TRUE(d);
  DeviceDelta delta;
  for (std::uint32_t i = 0; i < 100; ++i) {
    PeerChange c;
    c.public_key = key(i);
    c.persistent_keepalive = 25;
    delta.peers.push_back(c);
  }
  auto st = (*d)->apply(delta);
  ASSERT_TRUE(st) << st.error().message();
  auto reqs = server.requests();
  ASSERT_GT(reqs.size(), 3u);  // the probe and several chunks
  for (std::size_t i = 1; i < reqs.size(); ++i) EXPECT_TRUE(reqs[i].starts_with("set=1\n"));
}

TEST_F(UapiDeviceTest, FailedChunkReportsAppliedRangeAndFirstPeerNotApplied) {
  std::atomic<int> sets{0};
  FakeUapiServer server(path(), [&](const std::string& req) {
    if (!req.starts_with("set=1")) return std::string();
    return std::string(++sets == 3 ? "errno=-22\n\n" : "errno=0\n\n");
  });
  auto d = open(2000, 1024);
  ASSERT_TRUE(d);
  DeviceDelta delta;
  for (std::uint32_t i = 0; i < 100; ++i) {
    PeerChange c;
    c.public_key = key(i);
    c.persistent_keepalive = 25;
    delta.peers.push_back(c);
  }
  auto tx = uapi::format_set(delta, 1024);
  ASSERT_GT(tx.size(), 3u);
  auto st = (*d)->apply(delta);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().errno_value(), EINVAL);
  std::size_t done = tx[2].first_peer;
  std::string want = "device 'pcl0': applied peers 1-" + std::to_string(done) +
                     " of 100, not applied " + std::to_string(done + 1) +
                     "-100 starting at peer '" +
                     key(static_cast<std::uint32_t>(done)).short_name() + "…'";
  EXPECT_THAT(st.error().message(), HasSubstr(want));
  EXPECT_THAT(st.error().message(), HasSubstr("errno=22"));
  EXPECT_EQ(sets, 3);  // stops at the first failure
}

}  // namespace
}  // namespace portcullis::wg
