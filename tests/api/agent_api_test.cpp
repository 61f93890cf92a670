// The agent API end to end over HTTPS, with a real SqliteStore and a fake reconciler:
//
//   libcurl (agent: Ed25519 identity, pinned TLS key) ──TLS──► 127.0.0.1:<port 0> HttpsServer
//        └─ AgentApi routes ─► SqliteStore (temp dir) ; ApplyWaiter fake ; injected clock
//
// Operator actions (approve, deny, revoke) go straight through the Store.

#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <concepts>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "controlplane/api/access_token.h"
#include "controlplane/api/agent_api.h"
#include "controlplane/api/agent_proof.h"
#include "controlplane/api/crypto.h"
#include "controlplane/http/https_server.h"
#include "controlplane/state/sqlite_store.h"
#include "tests/api/loopback_https.h"
#include "tests/support/pinned_curl.h"
#include "tests/support/temp_dir.h"

namespace portcullis::api {
namespace {

using nlohmann::json;
using portcullis::testing::TempDir;
using state::PortRule;

constexpr std::int64_t kStart = 1'700'000'000;
constexpr std::size_t kBodyLimit = 64 * 1024;

// The reconciler stand-in: on wait, "applies" everything (if allowed) by recording the store's
// generation as applied.
class FakeApplyWaiter : public ApplyWaiter {
 public:
  explicit FakeApplyWaiter(state::Store& store) : store_(store) {}
  void wake() override { ++wakes; }
  bool wait_applied(std::int64_t generation, std::chrono::milliseconds timeout) override {
    if (!apply) {
      std::this_thread::sleep_for(timeout);
      return false;
    }
    auto g = store_.generation();
    if (!g || !store_.set_applied_generation(*g)) return false;
    auto applied = store_.applied_generation();
    return applied && *applied >= generation;
  }

  std::atomic<int> wakes{0};
  std::atomic<bool> apply{true};

 private:
  state::Store& store_;
};

struct Reply {
  long status = 0;
  std::string text;
  json body;  // discarded when not JSON
  long new_connections = 0;

  std::string error() const { return body.is_object() ? body.value("error", "") : ""; }
  std::string field() const { return body.is_object() ? body.value("field", "") : ""; }
};

// One agent-side HTTPS client; its handle keeps one keep-alive connection.
class Client {
 public:
  Client(std::string base_url, std::string pin)
      : base_url_(std::move(base_url)), pin_(std::move(pin)), curl_(testing::new_curl()) {}

  Reply post(const std::string& path, const std::string& body, const std::string& bearer = "") {
    Reply reply;
    CURL* c = curl_.get();
    testing::pin_request(c, base_url_ + path, pin_, 20'000);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, testing::append_to_string);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.text);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    testing::SlistPtr headers =
        testing::json_headers({bearer.empty() ? "" : "Authorization: Bearer " + bearer});
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    CURLcode code = curl_easy_perform(c);
    EXPECT_EQ(code, CURLE_OK) << curl_easy_strerror(code);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &reply.new_connections);
    reply.body = json::parse(reply.text, nullptr, false);
    return reply;
  }
  template <class J>
  requires std::same_as<J, json> Reply post(const std::string& path, const J& body,
                                            const std::string& bearer = "") {
    return post(path, body.dump(), bearer);
  }

 private:
  std::string base_url_;
  std::string pin_;
  testing::CurlPtr curl_;
};

// A simulated agent: its Ed25519 identity and WireGuard key.
struct Agent {
  SigningKey identity = SigningKey::generate();
  Key wg_key = SecretKey::generate_private().public_key();
  std::string hostname = "win-" + random_base64url(3);
};

struct Tokens {
  std::string access;
  std::string refresh;
};

class AgentApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = state::SqliteStore::open((dir_.path() / "portcullis.db").string());
    ASSERT_TRUE(store) << store.error().message();
    store_ = std::move(*store);
    waiter_ = std::make_unique<FakeApplyWaiter>(*store_);
    auto key = SigningKey::load_or_create((dir_.path() / "signing.key").string());
    ASSERT_TRUE(key) << key.error().message();
    signing_key_ = std::make_unique<SigningKey>(*key);

    AgentApiConfig config;
    config.gateway_endpoint = "127.0.0.1:30000";
    config.gateway_wg_public_key = SecretKey::generate_private().public_key();
    config.pool = IpPrefix::parse("10.255.0.0/16").value();
    config.gateway_address = IpAddress::parse("10.255.0.1").value();
    config.default_ports = {{filter::Protocol::kTcp, 5985}, {filter::Protocol::kUdp, 3478}};
    config.ready_timeout = std::chrono::milliseconds(300);
    gateway_wg_key_ = config.gateway_wg_public_key;
    api_ = std::make_unique<AgentApi>(
        config, *store_, *waiter_, *signing_key_, [this] { return now_.load(); },
        [this](std::string_view route, int status, std::chrono::nanoseconds) {
          std::lock_guard lock(observed_mutex_);
          ++observed_[std::string(route) + " " + std::to_string(status)];
        });

    auto server = testing::start_loopback_https(dir_.path(), api_->routes(), kBodyLimit);
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
    client_ = std::make_unique<Client>(server_->url(), server_->identity().public_key_pin());
  }

  void TearDown() override {
    server_.reset();  // stop serving before the API and store go away
    client_.reset();
  }

  json signed_request(const Agent& a, std::string_view path, json body, std::int64_t ts) {
    EXPECT_TRUE(sign_agent_request("POST", path, body, a.identity, ts, random_base64url(16)));
    return body;
  }
  json enroll_body(const Agent& a, const std::string& code = "") {
    json body = {{"hostname", a.hostname},
                 {"agent_public_key", a.identity.public_key().to_base64()},
                 {"wg_public_key", a.wg_key.to_base64()},
                 {"inventory", {{"os", "Windows 11"}, {"cpus", 8}}}};
    if (!code.empty()) body["enrollment_code"] = code;
    return signed_request(a, "/api/agent/enroll/request", body, now_);
  }
  Reply enroll(const Agent& a, const std::string& code = "") {
    return client_->post("/api/agent/enroll/request", enroll_body(a, code));
  }
  Reply poll(const Agent& a, const std::string& enrollment_id) {
    return client_->post(
        "/api/agent/enroll/poll",
        signed_request(a, "/api/agent/enroll/poll", {{"enrollment_id", enrollment_id}}, now_));
  }
  // Enrolls with a fresh code and polls: an approved device with tokens.
  Tokens enroll_approved(const Agent& a, std::string* device_id = nullptr) {
    const std::string code = random_base64url(12);
    EXPECT_TRUE(store_->add_enrollment_code(code, now_ + 3600, "operator:test"));
    Reply r = enroll(a, code);
    EXPECT_EQ(r.status, 200) << r.text;
    EXPECT_EQ(r.body.value("status", ""), "approved") << r.text;
    Reply p = poll(a, r.body.value("enrollment_id", ""));
    EXPECT_EQ(p.status, 200) << p.text;
    if (device_id != nullptr) *device_id = p.body.value("device_id", "");
    return {p.body.value("access_token", ""), p.body.value("refresh_token", "")};
  }
  std::vector<state::AuditEvent> audit_events(const std::string& action) {
    std::vector<state::AuditEvent> out;
    auto all = store_->list_audit(0, 1000);
    EXPECT_TRUE(all);
    for (auto& e : *all) {
      if (e.action == action) out.push_back(e);
    }
    return out;
  }
  int observed(const std::string& key) {
    std::lock_guard lock(observed_mutex_);
    return observed_[key];
  }

  TempDir dir_{"pcl-agent-api"};
  std::atomic<std::int64_t> now_{kStart};
  std::unique_ptr<state::SqliteStore> store_;
  std::unique_ptr<FakeApplyWaiter> waiter_;
  std::unique_ptr<SigningKey> signing_key_;
  Key gateway_wg_key_;
  std::unique_ptr<AgentApi> api_;
  std::unique_ptr<http::HttpsServer> server_;
  std::unique_ptr<Client> client_;
  std::mutex observed_mutex_;
  std::map<std::string, int> observed_;
};

TEST_F(AgentApiTest, EnrollWithCodeIsApprovedAtOnceAndPollIssuesTokens) {
  Agent a;
  const std::string code = "code-" + random_base64url(12);
  ASSERT_TRUE(store_->add_enrollment_code(code, now_ + 3600, "operator:test"));
  Reply r = enroll(a, code);
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["status"], "approved");
  const std::string id = r.body["enrollment_id"];

  Reply p = poll(a, id);
  ASSERT_EQ(p.status, 200) << p.text;
  EXPECT_EQ(p.body["status"], "approved");
  EXPECT_EQ(p.body["gateway_signing_key"], signing_key_->public_key().to_base64());
  EXPECT_EQ(p.body["access_expires_at"], kStart + 900);
  EXPECT_EQ(p.body["refresh_expires_at"], kStart + 30 * 24 * 3600);
  EXPECT_EQ(p.body["token_type"], "Bearer");
  const std::string device_id = p.body["device_id"];
  auto device = store_->find_device(device_id);
  ASSERT_TRUE(device && *device);
  EXPECT_EQ((*device)->agent_key, a.identity.public_key());
  EXPECT_EQ((*device)->wg_key, a.wg_key);
  EXPECT_EQ((*device)->ports, (std::vector<PortRule>{{filter::Protocol::kTcp, 5985},
                                                     {filter::Protocol::kUdp, 3478}}));

  // The token works.
  Reply hb = client_->post("/api/agent/heartbeat", json::object(), p.body["access_token"]);
  EXPECT_EQ(hb.status, 200) << hb.text;

  // Idempotent per agent key: the same enrollment, already approved; the code stays used.
  Reply again = enroll(a, code);
  ASSERT_EQ(again.status, 200) << again.text;
  EXPECT_EQ(again.body["enrollment_id"], id);
  EXPECT_EQ(again.body["status"], "approved");
  Agent b;
  Reply used_code = enroll(b, code);
  EXPECT_EQ(used_code.body["status"], "pending") << "a code approves once";

  EXPECT_EQ(audit_events("enrollment.request").size(), 2u);
  ASSERT_EQ(audit_events("enrollment.approve").size(), 1u);
  EXPECT_EQ(audit_events("enrollment.approve")[0].target, id);
  EXPECT_EQ(observed("/api/agent/enroll/request 200"), 3);
}

TEST_F(AgentApiTest, EnrollWithoutCodeWaitsForTheOperator) {
  Agent a;
  Reply r = enroll(a);
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["status"], "pending");
  const std::string id = r.body["enrollment_id"];
  Reply p = poll(a, id);
  ASSERT_EQ(p.status, 200) << p.text;
  EXPECT_EQ(p.body, json({{"status", "pending"}}));

  ASSERT_TRUE(store_->approve_enrollment(id, "operator:alice", {}, now_));
  Reply approved = poll(a, id);
  ASSERT_EQ(approved.status, 200) << approved.text;
  EXPECT_EQ(approved.body["status"], "approved");
  EXPECT_FALSE(approved.body.value("access_token", "").empty());

  // A denied agent learns it, and cannot enroll the same key again.
  Agent d;
  Reply dr = enroll(d);
  ASSERT_TRUE(store_->deny_enrollment(dr.body["enrollment_id"], "operator:alice", now_));
  Reply denied = poll(d, dr.body["enrollment_id"]);
  EXPECT_EQ(denied.status, 200);
  EXPECT_EQ(denied.body, json({{"status", "denied"}}));
  Reply again = enroll(d);
  EXPECT_EQ(again.status, 403);
  EXPECT_EQ(again.error(), "enrollment_refused");

  // Unknown enrollment; a WireGuard key already taken.
  EXPECT_EQ(poll(a, "no-such-enrollment").status, 404);
  Agent thief;
  thief.wg_key = a.wg_key;
  Reply conflict = enroll(thief);
  EXPECT_EQ(conflict.status, 409) << conflict.text;
  EXPECT_EQ(conflict.field(), "wg_public_key");
}

TEST_F(AgentApiTest, EachApprovedPollIssuesANewFamilyAndRevokesTheOld) {
  Agent a;
  const std::string code = random_base64url(12);
  ASSERT_TRUE(store_->add_enrollment_code(code, now_ + 60, "operator:test"));
  const std::string id = enroll(a, code).body["enrollment_id"];
  Reply first = poll(a, id);
  Reply second = poll(a, id);
  ASSERT_EQ(second.status, 200);
  Reply old = client_->post("/api/agent/token/refresh",
                            json{{"refresh_token", first.body["refresh_token"]}});
  EXPECT_EQ(old.status, 401) << old.text;
  EXPECT_EQ(old.error(), "invalid_token");
  Reply fresh = client_->post("/api/agent/token/refresh",
                              json{{"refresh_token", second.body["refresh_token"]}});
  EXPECT_EQ(fresh.status, 200) << fresh.text;
}

TEST_F(AgentApiTest, SignedRequestsAreCheckedForSignatureTimeAndReplay) {
  Agent a;
  // Signed by another key than the one it claims.
  Agent impostor;
  json body = enroll_body(a);
  json forged = body;
  forged["signature"] = impostor.identity.sign_base64("anything");
  Reply bad = client_->post("/api/agent/enroll/request", forged);
  EXPECT_EQ(bad.status, 401) << bad.text;
  EXPECT_EQ(bad.error(), "bad_signature");
  // A changed field after signing.
  json altered = body;
  altered["hostname"] = "other-host";
  EXPECT_EQ(client_->post("/api/agent/enroll/request", altered).error(), "bad_signature");

  // Stale and future timestamps.
  json stale = enroll_body(a);
  now_ += 301;
  Reply s = client_->post("/api/agent/enroll/request", stale);
  EXPECT_EQ(s.status, 401);
  EXPECT_EQ(s.error(), "stale_request");
  now_ -= 602;
  EXPECT_EQ(client_->post("/api/agent/enroll/request", stale).error(), "stale_request");
  now_ += 301;

  // The same signed body twice: the second is a replay.
  Reply once = client_->post("/api/agent/enroll/request", body);
  ASSERT_EQ(once.status, 200) << once.text;
  Reply replay = client_->post("/api/agent/enroll/request", body);
  EXPECT_EQ(replay.status, 401);
  EXPECT_EQ(replay.error(), "replayed_request");

  // Polling needs the same agent key.
  const std::string id = once.body["enrollment_id"];
  Reply foreign_poll = client_->post(
      "/api/agent/enroll/poll",
      signed_request(impostor, "/api/agent/enroll/poll", {{"enrollment_id", id}}, now_));
  EXPECT_EQ(foreign_poll.status, 401);
  EXPECT_EQ(foreign_poll.error(), "bad_signature");
  // A signature made for enroll/request does not open enroll/poll.
  json cross = signed_request(a, "/api/agent/enroll/request", {{"enrollment_id", id}}, now_);
  EXPECT_EQ(client_->post("/api/agent/enroll/poll", cross).error(), "bad_signature");
  EXPECT_EQ(poll(a, id).status, 200);
  EXPECT_EQ(audit_events("enrollment.request").size(), 1u);
}

TEST_F(AgentApiTest, InputIsValidatedStrictly) {
  Agent a;
  auto expect_400 = [&](const std::string& path, const std::string& body, const std::string& field,
                        const std::string& bearer = "") {
    Reply r = client_->post(path, body, bearer);
    EXPECT_EQ(r.status, 400) << path << " " << body.substr(0, 80) << " -> " << r.text;
    EXPECT_EQ(r.error(), "invalid_request") << r.text;
    EXPECT_EQ(r.field(), field) << r.text;
    EXPECT_FALSE(r.body.value("message", "").empty());
  };
  const std::string request_path = "/api/agent/enroll/request";
  expect_400(request_path, "{\"hostname\": ", "");
  expect_400(request_path, "not json", "");
  expect_400(request_path, "[]", "");
  json unknown = enroll_body(a);
  unknown["is_admin"] = true;
  expect_400(request_path, unknown.dump(), "is_admin");
  json wrong_type = enroll_body(a);
  wrong_type["timestamp"] = "now";
  expect_400(request_path, wrong_type.dump(), "timestamp");
  json missing = enroll_body(a);
  missing.erase("wg_public_key");
  expect_400(request_path, missing.dump(), "wg_public_key");
  json long_name = enroll_body(a);
  long_name["hostname"] = std::string(300, 'h');
  expect_400(request_path, long_name.dump(), "hostname");
  json bad_name = enroll_body(a);
  bad_name["hostname"] = "a b";
  expect_400(request_path, bad_name.dump(), "hostname");
  json bad_key = enroll_body(a);
  bad_key["agent_public_key"] = std::string(44, '!');
  expect_400(request_path, bad_key.dump(), "agent_public_key");
  json big_inventory = {{"hostname", a.hostname},
                        {"agent_public_key", a.identity.public_key().to_base64()},
                        {"wg_public_key", a.wg_key.to_base64()},
                        {"inventory", {{"blob", std::string(20'000, 'x')}}}};
  expect_400(request_path, signed_request(a, request_path, big_inventory, now_).dump(),
             "inventory");
  json float_inventory = enroll_body(a);
  float_inventory["inventory"]["load"] = 0.5;
  expect_400(request_path, float_inventory.dump(), "inventory");

  // Over the body limit: the HTTP layer answers 413 before any handler.
  json huge = enroll_body(a);
  huge["inventory"] = {{"blob", std::string(kBodyLimit, 'x')}};
  EXPECT_EQ(client_->post(request_path, huge).status, 413);

  // Bearer endpoints validate too (after the token).
  Tokens t = enroll_approved(a);
  expect_400("/api/agent/heartbeat", "{", "", t.access);
  expect_400("/api/agent/heartbeat", R"({"rx_bytes":"1"})", "rx_bytes", t.access);
  expect_400("/api/agent/heartbeat", R"({"rx_bytes":-1})", "rx_bytes", t.access);
  expect_400("/api/agent/heartbeat", R"({"cpu":1})", "cpu", t.access);
  expect_400("/api/agent/details", "{}", "inventory", t.access);
  expect_400("/api/agent/vpn/ensure", R"({"address":"10.0.0.1"})", "address", t.access);
  expect_400("/api/agent/token/refresh", R"({"refresh_token":"short"})", "refresh_token");
  expect_400("/api/agent/token/refresh", R"({})", "refresh_token");

  // Paths are exact.
  Reply below = client_->post("/api/agent/heartbeat/extra", "{}", t.access);
  EXPECT_EQ(below.status, 404);
  EXPECT_EQ(below.error(), "not_found");
}

TEST_F(AgentApiTest, RefreshRotatesAndReuseRevokesTheFamily) {
  Agent a;
  std::string device_id;
  Tokens t1 = enroll_approved(a, &device_id);
  Reply r2 = client_->post("/api/agent/token/refresh", json{{"refresh_token", t1.refresh}});
  ASSERT_EQ(r2.status, 200) << r2.text;
  const std::string refresh2 = r2.body["refresh_token"];
  EXPECT_NE(refresh2, t1.refresh);
  EXPECT_EQ(client_->post("/api/agent/heartbeat", "{}", r2.body["access_token"]).status, 200);

  // The first token again: reuse. The whole family goes, including the newest token.
  Reply reuse = client_->post("/api/agent/token/refresh", json{{"refresh_token", t1.refresh}});
  EXPECT_EQ(reuse.status, 401) << reuse.text;
  EXPECT_EQ(reuse.error(), "refresh_token_reused");
  Reply after = client_->post("/api/agent/token/refresh", json{{"refresh_token", refresh2}});
  EXPECT_EQ(after.status, 401) << after.text;
  ASSERT_EQ(audit_events("token.reuse").size(), 1u);
  EXPECT_EQ(audit_events("token.reuse")[0].target, device_id);

  // Unknown token.
  Reply unknown =
      client_->post("/api/agent/token/refresh", json{{"refresh_token", random_base64url(32)}});
  EXPECT_EQ(unknown.status, 401);
  EXPECT_EQ(unknown.error(), "invalid_token");

  // Refresh tokens expire after 30 days.
  Tokens t3 = enroll_approved(Agent{});
  now_ += 30 * 24 * 3600;
  Reply expired = client_->post("/api/agent/token/refresh", json{{"refresh_token", t3.refresh}});
  EXPECT_EQ(expired.status, 401);
  EXPECT_EQ(expired.error(), "token_expired");
}

TEST_F(AgentApiTest, AccessTokensExpireAndForeignTokensAreRefused) {
  Agent a;
  std::string device_id;
  Tokens t = enroll_approved(a, &device_id);
  EXPECT_EQ(client_->post("/api/agent/heartbeat", "{}", t.access).status, 200);
  now_ += 899;
  EXPECT_EQ(client_->post("/api/agent/heartbeat", "{}", t.access).status, 200);
  now_ += 1;
  Reply expired = client_->post("/api/agent/heartbeat", "{}", t.access);
  EXPECT_EQ(expired.status, 401);
  EXPECT_EQ(expired.error(), "token_expired");
  Reply refreshed = client_->post("/api/agent/token/refresh", json{{"refresh_token", t.refresh}});
  ASSERT_EQ(refreshed.status, 200) << refreshed.text;
  EXPECT_EQ(client_->post("/api/agent/heartbeat", "{}", refreshed.body["access_token"]).status,
            200);

  // A token for the same device, signed by another gateway's key.
  SigningKey foreign = SigningKey::generate();
  Reply f = client_->post("/api/agent/vpn/ensure", "{}",
                          issue_access_token(foreign, device_id, now_).token);
  EXPECT_EQ(f.status, 401);
  EXPECT_EQ(f.error(), "invalid_token");
  // No token, garbage.
  Reply none = client_->post("/api/agent/vpn/ensure", "{}");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.error(), "missing_token");
  EXPECT_EQ(client_->post("/api/agent/vpn/ensure", "{}", "x.y.z").error(), "invalid_token");
  // Ours, for a device that does not exist.
  EXPECT_EQ(client_
                ->post("/api/agent/vpn/ensure", "{}",
                       issue_access_token(*signing_key_, "ghost", now_).token)
                .error(),
            "invalid_token");
}

TEST_F(AgentApiTest, EnsureAnswersASignedDocumentAndIsIdempotent) {
  Agent a;
  std::string device_id;
  Tokens t = enroll_approved(a, &device_id);
  Reply r = client_->post("/api/agent/vpn/ensure", "{}", t.access);
  ASSERT_EQ(r.status, 200) << r.text;
  ASSERT_TRUE(r.body["document"].is_string());
  const std::string document = r.body["document"];
  auto sig = decode_signature(r.body["signature"].get<std::string>());
  ASSERT_TRUE(sig);
  EXPECT_TRUE(ed25519_verify(signing_key_->public_key(), document, *sig));
  json doc = json::parse(document);
  EXPECT_EQ(doc["version"], 1);
  EXPECT_EQ(doc["device_id"], device_id);
  EXPECT_EQ(doc["gateway_endpoint"], "127.0.0.1:30000");
  EXPECT_EQ(doc["gateway_port"], 30000);
  EXPECT_EQ(doc["gateway_wg_public_key"], gateway_wg_key_.to_base64());
  EXPECT_EQ(doc["address"], "10.255.0.2/32");
  EXPECT_EQ(doc["allowed_ips"], json::array({"10.255.0.1/32"}));
  EXPECT_EQ(doc["persistent_keepalive"], 30);
  EXPECT_EQ(doc["allowed_ports"], json::parse(R"([{"port":5985,"protocol":"tcp"},
                                                   {"port":3478,"protocol":"udp"}])"));
  EXPECT_EQ(doc["issued_at"], now_.load());
  EXPECT_GT(doc["expires_at"].get<std::int64_t>(), now_.load());
  EXPECT_FALSE(doc["nonce"].get<std::string>().empty());
  EXPECT_GE(waiter_->wakes.load(), 1);

  auto device = store_->find_device(device_id);
  ASSERT_TRUE(device && *device);
  EXPECT_EQ((*device)->address->to_string(), "10.255.0.2");
  const auto generation = store_->generation().value();
  const auto device_generation = (*device)->generation;

  // 1,000 more over one keep-alive connection (a fresh client: count its connections).
  // Once applied, nothing is left to wake the reconciler for.
  ASSERT_EQ(client_->post("/api/agent/vpn/ready", "{}", t.access).status, 200);
  const int wakes_before = waiter_->wakes.load();
  Client keep_alive(server_->url(), server_->identity().public_key_pin());
  long connections = 0;
  std::string last_nonce;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) {
    Reply again = keep_alive.post("/api/agent/vpn/ensure", "{}", t.access);
    ASSERT_EQ(again.status, 200) << again.text;
    connections += again.new_connections;
    json d = json::parse(again.body["document"].get<std::string>());
    ASSERT_EQ(d["address"], "10.255.0.2/32");
    ASSERT_NE(d["nonce"], last_nonce);
    last_nonce = d["nonce"];
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  const double ms = std::chrono::duration<double, std::milli>(elapsed).count();
  std::printf("1000 vpn/ensure over one keep-alive connection: %.0f ms (%.2f ms each)\n", ms,
              ms / 1000);
  RecordProperty("ensure_1000_ms", static_cast<int>(ms));
  EXPECT_EQ(connections, 1);
  EXPECT_EQ(store_->generation().value(), generation) << "ensure changed the store";
  EXPECT_EQ((*store_->find_device(device_id))->generation, device_generation);
  EXPECT_EQ(waiter_->wakes.load(), wakes_before);
  EXPECT_EQ(observed("/api/agent/vpn/ensure 200"), 1001);

  // A second device gets the next address.
  Tokens t2 = enroll_approved(Agent{});
  Reply r2 = client_->post("/api/agent/vpn/ensure", "{}", t2.access);
  EXPECT_EQ(json::parse(r2.body["document"].get<std::string>())["address"], "10.255.0.3/32");
}

TEST_F(AgentApiTest, ReadyWaitsForTheReconciler) {
  Agent a;
  Tokens t = enroll_approved(a);
  Reply early = client_->post("/api/agent/vpn/ready", "{}", t.access);
  EXPECT_EQ(early.status, 409);
  EXPECT_EQ(early.error(), "not_ensured");
  ASSERT_EQ(client_->post("/api/agent/vpn/ensure", "{}", t.access).status, 200);

  waiter_->apply = false;
  const auto start = std::chrono::steady_clock::now();
  Reply late = client_->post("/api/agent/vpn/ready", "{}", t.access);
  EXPECT_EQ(late.status, 503);
  EXPECT_EQ(late.error(), "not_applied");
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));

  waiter_->apply = true;
  Reply ready = client_->post("/api/agent/vpn/ready", "{}", t.access);
  EXPECT_EQ(ready.status, 200) << ready.text;
  EXPECT_EQ(ready.body, json({{"ready", true}}));
  EXPECT_GE(store_->applied_generation().value(), store_->generation().value());
}

TEST_F(AgentApiTest, HeartbeatAndDetailsReachTheStore) {
  Agent a;
  std::string device_id;
  Tokens t = enroll_approved(a, &device_id);
  now_ += 42;
  ASSERT_EQ(
      client_
          ->post("/api/agent/heartbeat",
                 json{{"handshake_age_s", 12}, {"rx_bytes", 1000}, {"tx_bytes", 2000}}, t.access)
          .status,
      200);
  EXPECT_EQ((*store_->find_device(device_id))->last_heartbeat, kStart + 42);
  Reply d =
      client_->post("/api/agent/details", json{{"inventory", {{"os", "Windows 10"}}}}, t.access);
  ASSERT_EQ(d.status, 200) << d.text;
  EXPECT_EQ(json::parse((*store_->find_device(device_id))->inventory_json),
            json({{"os", "Windows 10"}}));
}

TEST_F(AgentApiTest, ARevokedDeviceIsRefusedEverywhere) {
  Agent a;
  std::string device_id;
  Tokens t = enroll_approved(a, &device_id);
  ASSERT_EQ(client_->post("/api/agent/vpn/ensure", "{}", t.access).status, 200);
  const std::string enrollment_id = enroll(a).body["enrollment_id"];
  ASSERT_TRUE(store_->revoke_device(device_id, now_));

  for (const char* path :
       {"/api/agent/vpn/ensure", "/api/agent/vpn/ready", "/api/agent/heartbeat"}) {
    Reply r = client_->post(path, "{}", t.access);
    EXPECT_EQ(r.status, 403) << path << " " << r.text;
    EXPECT_EQ(r.error(), "device_revoked") << path;
  }
  Reply details =
      client_->post("/api/agent/details", json{{"inventory", json::object()}}, t.access);
  EXPECT_EQ(details.error(), "device_revoked");
  Reply refresh = client_->post("/api/agent/token/refresh", json{{"refresh_token", t.refresh}});
  EXPECT_EQ(refresh.status, 403) << refresh.text;
  EXPECT_EQ(refresh.error(), "device_revoked");
  Reply p = poll(a, enrollment_id);
  EXPECT_EQ(p.status, 403) << p.text;
  EXPECT_EQ(p.error(), "device_revoked");
  Reply re_enroll = enroll(a);
  EXPECT_EQ(re_enroll.status, 403);
  EXPECT_EQ(re_enroll.error(), "enrollment_refused");
  EXPECT_EQ(audit_events("device.refused").size(), 6u);
}

}  // namespace
}  // namespace portcullis::api
