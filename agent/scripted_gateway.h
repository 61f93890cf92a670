#pragma once
// For tests of the agent (agent_failure_test, tests/netns/agent_failure_netns_test): a scripted
// gateway, the project's HttpsServer on 127.0.0.1 (port 0, its own self-signed certificate,
// pinned by the agent) answering the agent API as each test scripts it, and an Agent::run() on a
// thread with in-memory FakeLinks.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "agent/agent.h"
#include "agent/tunnel_keeper.h"
#include "controlplane/api/crypto.h"
#include "controlplane/api/orchestration.h"
#include "controlplane/http/https_server.h"
#include "dataplane/base/unique_fd.h"
#include "dataplane/testing/fake_links.h"

namespace portcullis::agent::test {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

inline std::int64_t real_unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline SecretKey seed_of(std::uint8_t b) {
  KeyBytes k{};
  k.fill(b);
  return SecretKey(k);
}

inline bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

// A TCP port on 127.0.0.1 with no listener (bound, read, released).
inline std::uint16_t free_port() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    return 0;
  }
  return ntohs(sa.sin_port);
}

// The agent API as a test scripts it. Each agent is told apart by its hostname: its enrollment
// id is "enr-<host>", its device "dev-<host>", its tokens "tok-<host>-<n>" / "ref-<host>-<n>".
// vpn/ensure answers by host:
//   status500    500 {"error":"internal"}
//   garbage      200 "{not json"
//   badsig       a document for dev-<host> signed by another key
//   expired      a signed document for dev-<host> that expired a second ago
//   otherdevice  a signed document for dev-someone-else
//   anything else 503 {"error":"not_ready"}
class ScriptedGateway {
 public:
  ScriptedGateway(const fs::path& dir, std::atomic<std::int64_t>& clock, std::uint16_t port = 0)
      : clock_(clock) {
    fs::create_directories(dir);
    http::HttpsServerConfig c;
    c.port = port;
    c.cert_file = dir / "cert.pem";
    c.key_file = dir / "key.pem";
    c.worker_threads = 8;
    auto s = http::HttpsServer::start(
        c, {{"POST", "/api/agent/", [this](const http::Request& r) { return answer(r); }}});
    if (s)
      server_ = std::move(*s);
    else
      error_ = s.error().message();
  }

  bool ok() const { return server_ != nullptr; }
  const std::string& error() const { return error_; }
  std::string url() const { return server_->url(); }
  std::string pin() const { return server_->identity().public_key_pin(); }

  int calls(const std::string& path, const std::string& host) {
    std::lock_guard l(mutex_);
    return calls_[path + " " + host];
  }
  // The bearer tokens vpn/ensure saw from `host`, in order.
  std::vector<std::string> ensure_tokens(const std::string& host) {
    std::lock_guard l(mutex_);
    return ensure_tokens_[host];
  }
  // The clock value of each token/refresh of `host` and the access expiry it replaced.
  std::vector<std::pair<std::int64_t, std::int64_t>> refreshes(const std::string& host) {
    std::lock_guard l(mutex_);
    return refreshes_[host];
  }

 private:
  static http::Response json_answer(int status, const json& body) {
    return {status, "application/json", body.dump(), {}};
  }

  json tokens(const std::string& host, int n) {
    const std::int64_t now = clock_.load();
    expires_[host] = now + 3600;
    return {{"access_token", "tok-" + host + "-" + std::to_string(n)},
            {"access_expires_at", now + 3600},
            {"refresh_token", "ref-" + host + "-" + std::to_string(n)},
            {"refresh_expires_at", now + 86400}};
  }

  json document_reply(const std::string& device, std::int64_t expires_at,
                      const api::SigningKey& key) {
    api::OrchestrationDocument d;
    d.device_id = device;
    d.gateway_endpoint = "127.0.0.1:30000";
    d.gateway_wg_public_key = seed_of(9).public_key();
    d.address = *IpPrefix::parse("10.255.0.7/32");
    d.allowed_ips = {*IpPrefix::parse("10.255.0.1/32")};
    d.allowed_ports = {{filter::Protocol::kTcp, 5985}};
    d.issued_at = clock_.load() - 10;
    d.expires_at = expires_at;
    d.nonce = "nonce-" + std::to_string(clock_.load());
    auto s = api::sign_document(d, key);
    return {{"document", s.document}, {"signature", s.signature}};
  }

  // "tok-<host>-<n>" -> host
  static std::string host_of_token(std::string_view bearer) {
    std::string t(bearer.substr(bearer.rfind(' ') + 1));
    if (t.rfind("tok-", 0) != 0) return "";
    t = t.substr(4);
    return t.substr(0, t.rfind('-'));
  }

  http::Response answer(const http::Request& r) {
    const json body = json::parse(r.body, nullptr, false);
    std::lock_guard l(mutex_);
    if (r.path == "/api/agent/enroll/request") {
      const std::string host = body.value("hostname", "");
      ++calls_[r.path + " " + host];
      return json_answer(201, {{"enrollment_id", "enr-" + host}, {"status", "pending"}});
    }
    if (r.path == "/api/agent/enroll/poll") {
      const std::string host = body.value("enrollment_id", "").substr(4);
      ++calls_[r.path + " " + host];
      json a = tokens(host, 1);
      a["status"] = "approved";
      a["device_id"] = "dev-" + host;
      a["gateway_signing_key"] = signer_.public_key().to_base64();
      return json_answer(200, a);
    }
    if (r.path == "/api/agent/token/refresh") {
      std::string ref = body.value("refresh_token", "");  // "ref-<host>-<n>"
      const std::string host = ref.substr(4, ref.rfind('-') - 4);
      const int n = std::stoi(ref.substr(ref.rfind('-') + 1));
      ++calls_[r.path + " " + host];
      refreshes_[host].emplace_back(clock_.load(), expires_[host]);
      return json_answer(200, tokens(host, n + 1));
    }
    const std::string host = host_of_token(r.header("Authorization"));
    ++calls_[r.path + " " + host];
    if (r.path != "/api/agent/vpn/ensure") return json_answer(200, json::object());
    ensure_tokens_[host].emplace_back(r.header("Authorization").substr(7));
    const std::int64_t now = clock_.load();
    if (host == "status500") return json_answer(500, {{"error", "internal"}, {"message", "boom"}});
    if (host == "garbage") return {200, "application/json", "{not json", {}};
    if (host == "badsig") return json_answer(200, document_reply("dev-" + host, now + 600, other_));
    if (host == "expired") return json_answer(200, document_reply("dev-" + host, now - 1, signer_));
    if (host == "otherdevice") {
      return json_answer(200, document_reply("dev-someone-else", now + 600, signer_));
    }
    return json_answer(503, {{"error", "not_ready"}, {"message", "try again"}});
  }

  std::atomic<std::int64_t>& clock_;
  api::SigningKey signer_ = api::SigningKey::from_seed(seed_of(1));
  api::SigningKey other_ = api::SigningKey::from_seed(seed_of(2));
  std::unique_ptr<http::HttpsServer> server_;
  std::string error_;
  std::mutex mutex_;
  std::map<std::string, int> calls_;
  std::map<std::string, std::int64_t> expires_;
  std::map<std::string, std::vector<std::string>> ensure_tokens_;
  std::map<std::string, std::vector<std::pair<std::int64_t, std::int64_t>>> refreshes_;
};

// One Agent::run() on a thread, with its own state directory and FakeLinks.
class RunningAgent {
 public:
  RunningAgent(const fs::path& dir, const std::string& host, const std::string& url,
               const std::string& pin, std::atomic<std::int64_t>& clock, int poll_max_s = 1) {
    AgentConfig c;
    c.gateway_url = url;
    c.gateway_pin = pin;
    c.hostname = host;
    c.interface = "pcltest0";
    c.backend = wg::Backend::kUserspace;
    c.wireguard_go = "/nonexistent/wireguard-go";
    c.state_dir = (dir / host).string();
    c.health_port = 0;
    c.poll_max_interval_s = poll_max_s;
    EXPECT_TRUE(ensure_state_dir(c.state_dir));
    auto id = AgentIdentity::load_or_create(c.state_dir + "/" + kIdentityFile);
    if (!id) {
      ADD_FAILURE() << id.error().message();
      return;
    }
    auto wg_key = SecretKey::generate_private();
    const Key wg_public_key = wg_key.public_key();
    tunnel_ = std::make_unique<TunnelController>(tunnel_settings(c), std::move(wg_key), links_);
    agent_ = std::make_unique<Agent>(c, std::move(*id), wg_public_key, *tunnel_, board_,
                                     [&clock] { return clock.load(); });
    thread_ = std::thread([this] { agent_->run(stop_); });
  }
  ~RunningAgent() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  AgentStatus status() const { return board_.snapshot(); }
  testing::FakeLinks& links() { return links_; }

 private:
  testing::FakeLinks links_;
  StatusBoard board_;
  std::unique_ptr<TunnelController> tunnel_;
  std::unique_ptr<Agent> agent_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};
}  // namespace portcullis::agent::test
