// The agent against a scripted gateway: the project's HttpsServer on 127.0.0.1 (port 0, its own
// self-signed certificate, pinned by the agent) answering the agent API as each test scripts it.
// Links are the in-memory FakeLinks and the userspace backend points at a wireguard-go that does
// not exist, so "nothing configured" is checked on the links, and any attempt to configure would
// show up there and in the log.
//
//   gateway down        -> clear error, retries 1 s, 2 s, 4 s ... apart, enrolls once it is up
//   ensure: 500, malformed JSON, bad signature, expired document, another device's document
//                       -> the document is refused, nothing is configured, ensure is retried
//   another certificate's pin -> "that does not match gateway_pin", retried, the gateway
//                       never sees a request
//   access token about to expire (injected clock) -> refreshed once, before expiry; the new
//                       token is used from then on

#include <sodium.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "agent/scripted_gateway.h"

namespace portcullis::agent {
namespace {

using namespace test;

class AgentFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    char tmpl[] = "/tmp/pcl-agent-failure-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  std::atomic<std::int64_t> clock_{real_unix_now()};
};

TEST_F(AgentFailureTest, GatewayDownIsRetriedWithGrowingWaitsUntilItComesUp) {
  const std::uint16_t port = free_port();
  ASSERT_NE(port, 0);
  // The pin of the gateway that will listen there: its identity is made now, the server stopped.
  std::string pin;
  {
    ScriptedGateway g(dir_ / "gw", clock_, port);
    ASSERT_TRUE(g.ok()) << g.error();
    pin = g.pin();
  }
  const std::string url = "https://127.0.0.1:" + std::to_string(port);
  RunningAgent a(dir_, "late", url, pin, clock_, /*poll_max_s=*/8);
  // Each failed enroll/request counts one error; note when each one lands.
  std::vector<Clock::time_point> failures;
  std::uint64_t seen = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(9);
  while (Clock::now() < deadline && failures.size() < 3) {
    const auto s = a.status();
    if (s.errors > seen) {
      seen = s.errors;
      failures.push_back(Clock::now());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(failures.size(), 3u) << "the agent did not retry the unreachable gateway";
  const auto s = a.status();
  EXPECT_NE(s.last_error.find("connect to the gateway at " + url), std::string::npos)
      << s.last_error;
  EXPECT_FALSE(s.enrolled);
  // 1 s, 2 s, 4 s apart, each within ±20 %: every wait longer than the one before.
  const auto gap1 = failures[1] - failures[0], gap2 = failures[2] - failures[1];
  EXPECT_GE(gap1, std::chrono::milliseconds(700));
  EXPECT_GT(gap2, gap1 + std::chrono::milliseconds(200));

  // The gateway comes up on that port: the agent gets through on its next attempt (at most 8 s).
  ScriptedGateway g(dir_ / "gw", clock_, port);
  ASSERT_TRUE(g.ok()) << g.error();
  EXPECT_TRUE(wait_for([&] { return a.status().enrolled; }, std::chrono::seconds(12)))
      << a.status().to_json().dump();
  EXPECT_EQ(g.calls("/api/agent/enroll/request", "late"), 1);
}

TEST_F(AgentFailureTest, RefusedEnsureAnswersConfigureNothingAndAreRetried) {
  ScriptedGateway g(dir_ / "gw", clock_);
  ASSERT_TRUE(g.ok()) << g.error();
  struct Case {
    std::string host;
    std::string error;  // in the agent's last_error
  };
  const std::vector<Case> cases = {
      {"status500", "vpn/ensure: 500 internal: boom"},
      {"garbage", "vpn/ensure answer is not a JSON object"},
      {"badsig", "signature does not verify with the gateway signing key"},
      {"expired", "orchestration document expired at"},
      {"otherdevice", "orchestration document is for device 'dev-someone-else'"},
  };
  std::vector<std::unique_ptr<RunningAgent>> agents;
  for (const auto& c : cases) {
    agents.push_back(std::make_unique<RunningAgent>(dir_, c.host, g.url(), g.pin(), clock_));
  }
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const std::string& host = cases[i].host;
    EXPECT_TRUE(wait_for([&] { return g.calls("/api/agent/vpn/ensure", host) >= 2; },
                         std::chrono::seconds(10)))
        << host << ": vpn/ensure was not retried";
  }
  for (auto& a : agents) a->stop();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto s = agents[i]->status();
    SCOPED_TRACE(cases[i].host);
    EXPECT_TRUE(s.enrolled);
    EXPECT_NE(s.last_error.find(cases[i].error), std::string::npos) << s.last_error;
    EXPECT_EQ(s.tunnel, "absent");
    EXPECT_GE(s.errors, 2u);
    // Nothing configured: no link was ever asked for, and none exists.
    EXPECT_EQ(agents[i]->links().changing_requests(), 0u);
    EXPECT_EQ(agents[i]->links().to_text(), "");
    // No vpn/ready for a tunnel that was never configured.
    EXPECT_EQ(g.calls("/api/agent/vpn/ready", cases[i].host), 0);
  }
}

TEST_F(AgentFailureTest, GatewayWithAnotherCertificateIsRefusedBeforeAnyRequest) {
  ScriptedGateway g(dir_ / "gw", clock_);
  ASSERT_TRUE(g.ok()) << g.error();
  // The pin of another gateway's identity.
  std::string other_pin;
  {
    ScriptedGateway other(dir_ / "other", clock_);
    ASSERT_TRUE(other.ok()) << other.error();
    other_pin = other.pin();
  }
  ASSERT_NE(other_pin, g.pin());
  RunningAgent a(dir_, "wrongpin", g.url(), other_pin, clock_);
  EXPECT_TRUE(wait_for([&] { return a.status().errors >= 2; }, std::chrono::seconds(8)))
      << "the refused gateway was not retried";
  a.stop();
  const auto s = a.status();
  EXPECT_NE(s.last_error.find("that does not match gateway_pin"), std::string::npos)
      << s.last_error;
  EXPECT_NE(s.last_error.find(other_pin), std::string::npos) << s.last_error;
  EXPECT_FALSE(s.enrolled);
  EXPECT_EQ(g.calls("/api/agent/enroll/request", "wrongpin"), 0);
}

TEST_F(AgentFailureTest, RefreshesTheAccessTokenBeforeItExpires) {
  ScriptedGateway g(dir_ / "gw", clock_);
  ASSERT_TRUE(g.ok()) << g.error();
  const std::int64_t start = clock_.load();
  RunningAgent a(dir_, "refresh", g.url(), g.pin(), clock_);
  ASSERT_TRUE(wait_for([&] { return g.calls("/api/agent/vpn/ensure", "refresh") >= 1; },
                       std::chrono::seconds(10)));
  EXPECT_EQ(g.calls("/api/agent/token/refresh", "refresh"), 0);
  // 59 s before the access token (valid 3600 s) expires: refreshed within the agent's 1 s tick.
  clock_.store(start + 3600 - 59);
  ASSERT_TRUE(wait_for([&] { return g.calls("/api/agent/token/refresh", "refresh") >= 1; },
                       std::chrono::seconds(5)))
      << "no token refresh before expiry";
  const auto refreshes = g.refreshes("refresh");
  ASSERT_EQ(refreshes.size(), 1u);
  EXPECT_LT(refreshes[0].first, refreshes[0].second) << "refreshed only after expiry";
  // From then on vpn/ensure carries the new access token, and no second refresh follows.
  EXPECT_TRUE(wait_for(
      [&] {
        auto t = g.ensure_tokens("refresh");
        return !t.empty() && t.back() == "tok-refresh-2";
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(g.calls("/api/agent/token/refresh", "refresh"), 1);
  a.stop();
  for (const auto& t : g.ensure_tokens("refresh")) {
    EXPECT_TRUE(t == "tok-refresh-1" || t == "tok-refresh-2") << t;
  }
}

}  // namespace
}  // namespace portcullis::agent
