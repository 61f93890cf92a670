// GatewayClient against real HTTPS servers on loopback:
//   ScriptedGateway (the project's HttpsServer)  both pin forms, keep-alive
//   RawTlsServer (below: OpenSSL on a blocking socket, one scripted connection at a time)
//     answers as each test writes them: chunked, close-delimited, oversize, malformed, stalled,
//     closed between requests, closed mid-answer, reset while the request is sent
//   no listener / a name under .invalid          ECONNREFUSED / EHOSTUNREACH

#include "agent/gateway_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "agent/scripted_gateway.h"
#include "controlplane/http/tls_identity.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::agent {
namespace {

using namespace test;
using std::chrono::milliseconds;

// One accepted TLS connection of RawTlsServer, as a script sees it.
class ServerConnection {
 public:
  ServerConnection(SSL* ssl, std::atomic<std::size_t>& received, std::atomic<int>& requests)
      : ssl_(ssl), received_(received), requests_(requests) {}

  // The next request (head and Content-Length body), or "" when the client closed first.
  std::string read_request() {
    for (;;) {
      const auto end = buffer_.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::size_t length = 0;
        if (auto at = buffer_.find("Content-Length: "); at != std::string::npos && at < end) {
          length = std::strtoul(buffer_.c_str() + at + 16, nullptr, 10);
        }
        if (buffer_.size() >= end + 4 + length) {
          std::string request = buffer_.substr(0, end + 4 + length);
          buffer_.erase(0, request.size());
          ++requests_;
          return request;
        }
      }
      if (!read_more()) return "";
    }
  }
  // Reads the request head only (a large body is left unread).
  bool read_head() {
    while (buffer_.find("\r\n\r\n") == std::string::npos) {
      if (!read_more()) return false;
    }
    return true;
  }
  bool read_more() {
    char chunk[16384];
    const int n = SSL_read(ssl_, chunk, sizeof chunk);
    if (n <= 0) return false;
    received_ += static_cast<std::size_t>(n);
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  void send(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const int n = SSL_write(ssl_, bytes.data() + done, static_cast<int>(bytes.size() - done));
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  SSL* ssl_;
  std::atomic<std::size_t>& received_;
  std::atomic<int>& requests_;
  std::string buffer_;
};

std::string json_reply(const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body;
}

// A TLS listener on 127.0.0.1 (port 0) with its own self-signed certificate. Connection n
// (0-based) is handed to script(n, connection); returning closes it (no close_notify). The
// server thread blocks SIGPIPE for itself only: a SIGPIPE raised by the client kills the test.
class RawTlsServer {
 public:
  using Script = std::function<void(int, ServerConnection&)>;

  // tls false: a TCP listener that never starts TLS; it sends `plain` (if any) and waits.
  RawTlsServer(const fs::path& dir, Script script, bool tls = true, std::string plain = "")
      : script_(std::move(script)), tls_(tls), plain_(std::move(plain)) {
    auto id = http::ensure_tls_identity(dir / "raw-cert.pem", dir / "raw-key.pem");
    if (!id) {
      ADD_FAILURE() << id.error().message();
      return;
    }
    identity_ = *id;
    ctx_.reset(SSL_CTX_new(TLS_server_method()));
    if (SSL_CTX_use_certificate_file(ctx_.get(), id->cert_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx_.get(), id->key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      ADD_FAILURE() << "server certificate";
      return;
    }
    listener_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::listen(listener_.get(), 8) != 0 ||
        ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      ADD_FAILURE() << "listen: " << std::strerror(errno);
      return;
    }
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~RawTlsServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  std::string spki_pin() const { return identity_.public_key_pin(); }
  std::string certificate_pin() const { return identity_.cert_sha256.hex_colon(); }
  int connections() const { return connections_; }
  int finished() const { return finished_; }
  int requests() const { return requests_; }
  std::size_t received() const { return received_; }
  // Set by a script to stop a stall.
  bool stopping() const { return stop_; }

 private:
  struct CtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
  };

  void serve() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    while (!stop_) {
      pollfd p{listener_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!fd) continue;
      const int n = connections_++;
      timeval tv{5, 0};
      ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (!tls_) {
        if (!plain_.empty()) ::send(fd.get(), plain_.data(), plain_.size(), MSG_NOSIGNAL);
        while (!stop_) std::this_thread::sleep_for(milliseconds(20));
        continue;
      }
      std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx_.get()), SSL_free);
      SSL_set_fd(ssl.get(), fd.get());
      if (SSL_accept(ssl.get()) == 1) {
        ServerConnection c(ssl.get(), received_, requests_);
        script_(n, c);
      }
      ERR_clear_error();
      ++finished_;
    }
  }

  Script script_;
  bool tls_;
  std::string plain_;
  http::TlsIdentity identity_;
  std::unique_ptr<SSL_CTX, CtxFree> ctx_;
  UniqueFd listener_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0}, finished_{0}, requests_{0};
  std::atomic<std::size_t> received_{0};
  std::thread thread_;
};

class GatewayClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    char tmpl[] = "/tmp/pcl-gateway-client-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  static GatewayClientOptions options(const std::string& url, const std::string& pin) {
    return {.base_url = url,
            .pin = pin,
            .connect_timeout = milliseconds(2000),
            .timeout = milliseconds(5000)};
  }

  fs::path dir_;
};

TEST_F(GatewayClientTest, BothPinFormsAreAcceptedAndTheConnectionIsKeptAlive) {
  std::atomic<std::int64_t> clock{real_unix_now()};
  ScriptedGateway g(dir_ / "gw", clock);
  ASSERT_TRUE(g.ok()) << g.error();
  auto id = http::load_tls_identity(dir_ / "gw" / "cert.pem", dir_ / "gw" / "key.pem");
  ASSERT_TRUE(id) << id.error().message();
  std::string lower = id->cert_sha256.hex_colon();
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const std::string& pin : {g.pin(), id->cert_sha256.hex_colon(), lower}) {
    SCOPED_TRACE(pin);
    GatewayClient client(options(g.url(), pin));
    for (int i = 0; i < 2; ++i) {
      auto r = client.post("/api/agent/enroll/request", {{"hostname", "pin" + std::to_string(i)}});
      ASSERT_TRUE(r) << r.error().message();
      EXPECT_EQ(r->status, 201);
      EXPECT_EQ(r->body.value("enrollment_id", ""), "enr-pin" + std::to_string(i));
    }
  }
  EXPECT_EQ(g.calls("/api/agent/enroll/request", "pin1"), 3);
}

TEST_F(GatewayClientTest, WrongPinIsRejectedBeforeAnyRequestByte) {
  RawTlsServer s(dir_, [](int, ServerConnection& c) { c.read_more(); });
  // Another certificate's pins: a second identity.
  auto other = http::ensure_tls_identity(dir_ / "other-cert.pem", dir_ / "other-key.pem");
  ASSERT_TRUE(other) << other.error().message();
  const std::string pins[] = {other->public_key_pin(), other->cert_sha256.hex_colon()};
  for (const auto& pin : pins) {
    SCOPED_TRACE(pin);
    GatewayClient client(options(s.url(), pin));
    auto r = client.post("/api/agent/enroll/request", {{"hostname", "h"}}, "secret-token");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().errno_value(), EKEYREJECTED) << r.error().message();
    EXPECT_NE(r.error().message().find("that does not match gateway_pin"), std::string::npos)
        << r.error().message();
    EXPECT_NE(r.error().message().find(pin), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("nothing was sent"), std::string::npos);
  }
  ASSERT_TRUE(wait_for([&] { return s.finished() == 2; }, milliseconds(5000)));
  EXPECT_EQ(s.connections(), 2);
  EXPECT_EQ(s.received(), 0u) << "request bytes reached the server";
  EXPECT_EQ(s.requests(), 0);
}

TEST_F(GatewayClientTest, ChunkedReplyKeepsTheConnection) {
  RawTlsServer s(dir_, [](int, ServerConnection& c) {
    while (!c.read_request().empty()) {
      c.send(
          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          "5;ext=1\r\n{\"a\":\r\nA\r\n 12345678}\r\n0\r\nX-Trailer: y\r\n\r\n");
    }
  });
  GatewayClient client(options(s.url(), s.spki_pin()));
  for (int i = 0; i < 2; ++i) {
    auto r = client.post("/x", {{"n", i}});
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, nlohmann::json({{"a", 12345678}}));
  }
  EXPECT_EQ(s.connections(), 1);
  EXPECT_EQ(s.requests(), 2);
}

TEST_F(GatewayClientTest, CloseDelimitedReplyAndConnectionClose) {
  RawTlsServer s(dir_, [](int n, ServerConnection& c) {
    if (c.read_request().empty()) return;
    if (n == 0) {
      c.send("HTTP/1.1 500 Internal\r\n\r\n{\"error\":\"internal\",\"message\":\"boom\"}");
    } else {
      c.send(json_reply("{}", "Connection: close\r\n"));
    }
  });
  GatewayClient client(options(s.url(), s.certificate_pin()));
  auto r = client.post("/x", nlohmann::json::object());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->describe(), "500 internal: boom");
  auto r2 = client.post("/x", nlohmann::json::object());
  ASSERT_TRUE(r2) << r2.error().message();
  EXPECT_EQ(r2->status, 200);
  // Connection: close is honoured: a third request opens a third connection.
  auto r3 = client.post("/x", nlohmann::json::object());
  ASSERT_TRUE(r3) << r3.error().message();
  EXPECT_EQ(s.connections(), 3);
}

TEST_F(GatewayClientTest, OversizeOrMalformedAnswersAreRejected) {
  struct Case {
    std::string name;
    std::string answer;
    int err;
    std::string text;
  };
  const std::vector<Case> cases = {
      {"header", "HTTP/1.1 200 OK\r\nX-Pad: " + std::string(17 * 1024, 'a') + "\r\n\r\n{}",
       EMSGSIZE, "header over 16384 bytes"},
      {"length", "HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n{}", EMSGSIZE,
       "over the limit of 1048576"},
      {"close-delimited", "HTTP/1.1 200 OK\r\n\r\n\"" + std::string(1100 * 1024, 'b'), EMSGSIZE,
       "over the limit of 1048576"},
      {"chunked",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n" +
           std::string(0x100000, 'c') + "\r\n1\r\nc\r\n0\r\n\r\n",
       EMSGSIZE, "over the limit of 1048576"},
      {"status", "HTTP/2 200\r\n\r\n", EPROTO, "is not HTTP/1.1: status line"},
      {"chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", EPROTO,
       "chunk size 'zz'"},
      {"truncated", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", EPROTO,
       "after 2 of 10 body bytes"},
  };
  std::atomic<std::size_t> index{0};
  RawTlsServer s(dir_, [&](int, ServerConnection& c) {
    if (!c.read_request().empty()) c.send(cases[index].answer);
  });
  for (; index < cases.size(); ++index) {
    const auto& c = cases[index];
    SCOPED_TRACE(c.name);
    GatewayClient client(options(s.url(), s.spki_pin()));
    auto r = client.post("/x", nlohmann::json::object());
    ASSERT_FALSE(r) << r->status;
    EXPECT_EQ(r.error().errno_value(), c.err) << r.error().message();
    EXPECT_NE(r.error().message().find(c.text), std::string::npos) << r.error().message();
    ASSERT_TRUE(
        wait_for([&] { return s.finished() == static_cast<int>(index) + 1; }, milliseconds(5000)));
  }
}

TEST_F(GatewayClientTest, StalledGatewayTimesOutWithinTheDeadline) {
  // Answers nothing, reading until the test ends.
  RawTlsServer s(dir_, [&](int, ServerConnection& c) {
    c.read_request();
    while (c.read_more()) {
    }
  });
  auto o = options(s.url(), s.spki_pin());
  o.timeout = milliseconds(600);
  GatewayClient client(o);
  const auto start = Clock::now();
  auto r = client.post("/x", nlohmann::json::object());
  const auto took = Clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ETIMEDOUT) << r.error().message();
  EXPECT_GE(took, milliseconds(550));
  EXPECT_LT(took, milliseconds(1500));
}

TEST_F(GatewayClientTest, GatewayThatNeverStartsTlsTimesOutWithinTheConnectTimeout) {
  RawTlsServer s(dir_, nullptr, /*tls=*/false);
  auto o = options(s.url(), s.spki_pin());
  o.connect_timeout = milliseconds(400);
  GatewayClient client(o);
  const auto start = Clock::now();
  auto r = client.post("/x", nlohmann::json::object());
  const auto took = Clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ETIMEDOUT) << r.error().message();
  EXPECT_NE(r.error().message().find("TLS handshake"), std::string::npos) << r.error().message();
  EXPECT_GE(took, milliseconds(350));
  EXPECT_LT(took, milliseconds(1500));
}

TEST_F(GatewayClientTest, PlainHttpGatewayIsATlsFailure) {
  RawTlsServer s(dir_, nullptr, /*tls=*/false, "HTTP/1.1 400 Bad Request\r\n\r\n");
  GatewayClient client(options(s.url(), s.spki_pin()));
  auto r = client.post("/x", nlohmann::json::object());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EPROTO) << r.error().message();
  // "TLS handshake with the gateway at ... failed: OpenSSL error 0A00010B (`openssl errstr
  // 0A00010B` names it)"
  EXPECT_NE(r.error().message().find("TLS handshake with the gateway at " + s.url()),
            std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("`openssl errstr "), std::string::npos) << r.error().message();
}

TEST_F(GatewayClientTest, KeptAliveConnectionClosedBetweenRequestsIsReplaced) {
  RawTlsServer s(dir_, [](int, ServerConnection& c) {
    if (!c.read_request().empty()) c.send(json_reply("{\"n\":1}"));  // keep-alive, then closed
  });
  GatewayClient client(options(s.url(), s.spki_pin()));
  auto r = client.post("/x", nlohmann::json::object());
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(wait_for([&] { return s.finished() == 1; }, milliseconds(5000)));
  auto r2 = client.post("/x", nlohmann::json::object());
  ASSERT_TRUE(r2) << r2.error().message();
  EXPECT_EQ(r2->body, nlohmann::json({{"n", 1}}));
  EXPECT_EQ(s.connections(), 2);
  EXPECT_EQ(s.requests(), 2);
}

TEST_F(GatewayClientTest, ConnectionClosedBeforeAnyAnswerByteIsResentOnce) {
  // Connection 0 answers the first request and closes on reading the second (the race of an
  // idle timeout); connection 1 answers.
  RawTlsServer s(dir_, [](int n, ServerConnection& c) {
    if (c.read_request().empty()) return;
    if (n == 0) {
      c.send(json_reply("{\"n\":1}"));
      c.read_request();
      return;
    }
    c.send(json_reply("{\"n\":2}"));
  });
  GatewayClient client(options(s.url(), s.spki_pin()));
  ASSERT_TRUE(client.post("/x", nlohmann::json::object()));
  auto r = client.post("/x", nlohmann::json::object());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->body, nlohmann::json({{"n", 2}}));
  EXPECT_EQ(s.connections(), 2);
  EXPECT_EQ(s.requests(), 3);
}

TEST_F(GatewayClientTest, RequestIsNeverResentAfterAnswerBytesArrived) {
  RawTlsServer s(dir_, [](int n, ServerConnection& c) {
    if (c.read_request().empty()) return;
    c.send(json_reply("{}"));
    if (n == 0 && !c.read_request().empty()) {
      c.send("HTTP/1.1 200 OK\r\nContent-Le");  // and closed
    }
  });
  GatewayClient client(options(s.url(), s.spki_pin()));
  ASSERT_TRUE(client.post("/x", nlohmann::json::object()));
  auto r = client.post("/x", nlohmann::json::object());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EPROTO) << r.error().message();
  EXPECT_NE(r.error().message().find("closed the connection mid-answer"), std::string::npos)
      << r.error().message();
  ASSERT_TRUE(wait_for([&] { return s.finished() == 1; }, milliseconds(5000)));
  EXPECT_EQ(s.connections(), 1);
  EXPECT_EQ(s.requests(), 2);
}

TEST_F(GatewayClientTest, GatewayResettingWhileTheRequestIsSentRaisesNoSigpipe) {
  // SIGPIPE's default action ends the process: a client writing with write(2) to the reset
  // connection would kill this test. (CivetWeb, started by other tests, ignores SIGPIPE.)
  struct sigaction dfl {
  }, old{};
  dfl.sa_handler = SIG_DFL;
  ASSERT_EQ(::sigaction(SIGPIPE, &dfl, &old), 0);
  RawTlsServer s(dir_, [](int, ServerConnection& c) { c.read_head(); });
  GatewayClient client(options(s.url(), s.spki_pin()));
  const std::string big(16 * 1024 * 1024, 'x');
  for (int i = 0; i < 3; ++i) {
    auto r = client.post("/x", {{"pad", big}});
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().errno_value() == EIO || r.error().errno_value() == EPROTO)
        << r.error().message();
  }
  ::sigaction(SIGPIPE, &old, nullptr);
}

TEST_F(GatewayClientTest, NoListenerIsConnectionRefused) {
  const std::uint16_t port = free_port();
  ASSERT_NE(port, 0);
  GatewayClient client(options("https://127.0.0.1:" + std::to_string(port), "AB:CD"));
  auto r = client.post("/x", nlohmann::json::object());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EINVAL) << "pin checked first: " << r.error().message();
  GatewayClient good(options("https://127.0.0.1:" + std::to_string(port),
                             "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
  r = good.post("/x", nlohmann::json::object());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ECONNREFUSED) << r.error().message();
  EXPECT_NE(r.error().message().find("connect to the gateway at https://127.0.0.1:"),
            std::string::npos)
      << r.error().message();
}

TEST_F(GatewayClientTest, UnresolvableHostIsUnreachable) {
  GatewayClient client(options("https://portcullis-test.invalid:8443",
                               "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
  auto r = client.post("/x", nlohmann::json::object());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EHOSTUNREACH) << r.error().message();
  EXPECT_NE(r.error().message().find("cannot resolve gateway host 'portcullis-test.invalid'"),
            std::string::npos)
      << r.error().message();
}

TEST_F(GatewayClientTest, MalformedBaseUrlsAreRejected) {
  for (const std::string url :
       {"http://127.0.0.1:1", "https://", "https://h:0", "https://h:99999", "https://::1:8443",
        "https://[::1", "https://h/api", "https://u@h"}) {
    SCOPED_TRACE(url);
    GatewayClient client(options(url, "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
    auto r = client.post("/x", nlohmann::json::object());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().errno_value(), EINVAL) << r.error().message();
  }
}

}  // namespace
}  // namespace portcullis::agent
