// The operator API end to end over HTTPS, with a real SqliteStore and fakes for the reconciler
// (apply waiter, health snapshot, last report), the kernel filter lookups and the agent probe:
//
//   libcurl (operator: session cookie + X-CSRF-Token) ──TLS──► 127.0.0.1:<port 0> HttpsServer
//        └─ OperatorApi routes ─► SqliteStore (temp dir) ; FakeExplainer ; injected clock
//
// Agents' enrollments and devices are created straight through the Store.

#include <curl/curl.h>
#include <sodium.h>
#include <stdlib.h>
#include <yaml.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "controlplane/api/crypto.h"
#include "controlplane/http/https_server.h"
#include "controlplane/operator/operator_api.h"
#include "controlplane/state/ids.h"
#include "controlplane/state/sqlite_store.h"
#include "tests/api/loopback_https.h"
#include "tests/support/pinned_curl.h"
#include "tests/support/temp_dir.h"

namespace portcullis::operator_api {
namespace {

using nlohmann::json;
using portcullis::testing::TempDir;

constexpr std::int64_t kStart = 1'700'000'000;
constexpr std::size_t kBodyLimit = 64 * 1024;
constexpr const char* kAdminPassword = "correct horse battery";

// Applies everything at once: records the store generation as applied.
class FakeApplyWaiter : public api::ApplyWaiter {
 public:
  explicit FakeApplyWaiter(state::Store& store) : store_(store) {}
  void wake() override { ++wakes; }
  bool wait_applied(std::int64_t generation, std::chrono::milliseconds) override {
    if (!apply) return false;
    auto g = store_.generation();
    if (!g || !store_.set_applied_generation(*g)) return false;
    return *g >= generation;
  }
  std::atomic<int> wakes{0};
  std::atomic<bool> apply{true};

 private:
  state::Store& store_;
};

// Holds exactly the flows in `allowed` in layer "nftables", and none in "ebpf" unless mirrored.
class FakeExplainer : public FlowExplainer {
 public:
  std::vector<LayerSummary> summarize() override {
    std::lock_guard lock(mu);
    return {{"nftables", true, 1, nft.size(), ""}, {"ebpf", true, 1, ebpf.size(), ""}};
  }
  std::vector<LayerLookup> lookup(const filter::AllowEntry& flow) override {
    std::lock_guard lock(mu);
    return {{"nftables", true, nft.contains(flow), ""}, {"ebpf", true, ebpf.contains(flow), ""}};
  }
  std::vector<LayerDevice> device_entries(const IpAddress& agent) override {
    std::lock_guard lock(mu);
    auto of = [&](const std::set<filter::AllowEntry>& held, const char* name) {
      LayerDevice d{name, false, {}, ""};
      for (const auto& e : held) {
        if (e.agent == agent) d.allowed.push_back(e);
      }
      d.agent_known = !d.allowed.empty();
      return d;
    };
    return {of(nft, "nftables"), of(ebpf, "ebpf")};
  }
  std::mutex mu;
  std::set<filter::AllowEntry> nft, ebpf;
};

struct Reply {
  long status = 0;
  std::string text;
  json body;
  std::vector<std::string> headers;  // "Name: value"

  std::string error() const { return body.is_object() ? body.value("error", "") : ""; }
  std::string field() const { return body.is_object() ? body.value("field", "") : ""; }
  std::string header(std::string_view name) const {
    for (const auto& h : headers) {
      if (h.size() > name.size() && h[name.size()] == ':' &&
          strncasecmp(h.data(), name.data(), name.size()) == 0) {
        auto v = h.substr(name.size() + 1);
        while (!v.empty() && (v.front() == ' ')) v.erase(0, 1);
        while (!v.empty() && (v.back() == '\r' || v.back() == '\n')) v.pop_back();
        return v;
      }
    }
    return {};
  }
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  static_cast<std::vector<std::string>*>(user)->emplace_back(data, size * n);
  return size * n;
}

// An operator's browser: keeps the session cookie and the CSRF token.
class Client {
 public:
  Client(std::string base_url, std::string pin)
      : base_url_(std::move(base_url)), pin_(std::move(pin)), curl_(testing::new_curl()) {}

  Reply send(const std::string& method, const std::string& path, const std::string& body = "",
             bool with_csrf = true, bool parse = true) {
    Reply reply;
    CURL* c = curl_.get();
    curl_easy_reset(c);
    testing::pin_request(c, base_url_ + path, pin_, 20'000);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, testing::append_to_string);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.text);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply.headers);
    if (method == "GET") {
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    testing::SlistPtr headers =
        testing::json_headers({session.empty() ? "" : "Cookie: portcullis_session=" + session,
                               with_csrf && !csrf.empty() ? "X-CSRF-Token: " + csrf : ""});
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    CURLcode code = curl_easy_perform(c);
    EXPECT_EQ(code, CURLE_OK) << curl_easy_strerror(code);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
    if (parse) reply.body = json::parse(reply.text, nullptr, false);
    return reply;
  }
  Reply get(const std::string& path) { return send("GET", path); }
  // Without parsing the answer (timing the server, not the client's JSON parser).
  Reply get_text(const std::string& path) { return send("GET", path, "", true, false); }
  Reply post(const std::string& path, const json& body = json::object()) {
    return send("POST", path, body.dump());
  }
  Reply put(const std::string& path, const json& body) { return send("PUT", path, body.dump()); }

  // Logs in; keeps the cookie and the CSRF token.
  Reply login(const std::string& user, const std::string& password) {
    Reply r = post("/api/login", {{"username", user}, {"password", password}});
    if (r.status == 200) {
      std::string cookie = r.header("Set-Cookie");
      auto eq = cookie.find('=');
      auto semi = cookie.find(';');
      session = cookie.substr(eq + 1, semi - eq - 1);
      csrf = r.body.value("csrf_token", "");
    }
    return r;
  }

  std::string session;
  std::string csrf;

 private:
  std::string base_url_;
  std::string pin_;
  testing::CurlPtr curl_;
};

// YAML (the OpenAPI document) as JSON, through libyaml's event parser. Scalars stay strings.
class YamlToJson {
 public:
  static std::optional<json> parse(const std::string& text) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return std::nullopt;
    yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    YamlToJson builder;
    bool ok = true;
    for (bool done = false; !done;) {
      yaml_event_t event;
      if (!yaml_parser_parse(&parser, &event)) {
        ok = false;
        break;
      }
      done = event.type == YAML_STREAM_END_EVENT;
      ok = builder.on(event);
      yaml_event_delete(&event);
      if (!ok) break;
    }
    yaml_parser_delete(&parser);
    if (!ok || builder.root_.is_null()) return std::nullopt;
    return builder.root_;
  }

 private:
  bool on(const yaml_event_t& e) {
    switch (e.type) {
      case YAML_MAPPING_START_EVENT:
        return open(json::object());
      case YAML_SEQUENCE_START_EVENT:
        return open(json::array());
      case YAML_MAPPING_END_EVENT:
      case YAML_SEQUENCE_END_EVENT: {
        json done = std::move(stack_.back().value);
        stack_.pop_back();
        return add(std::move(done));
      }
      case YAML_SCALAR_EVENT:
        return add(json(
            std::string(reinterpret_cast<const char*>(e.data.scalar.value), e.data.scalar.length)));
      case YAML_ALIAS_EVENT:
        return false;
      default:
        return true;
    }
  }
  bool open(json value) {
    stack_.push_back({std::move(value), std::nullopt});
    return true;
  }
  bool add(json value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return true;
    }
    Frame& top = stack_.back();
    if (top.value.is_array()) {
      top.value.push_back(std::move(value));
    } else if (!top.key) {
      if (!value.is_string()) return false;
      top.key = value.get<std::string>();
    } else {
      if (top.value.contains(*top.key)) return false;  // duplicate key
      top.value[*top.key] = std::move(value);
      top.key.reset();
    }
    return true;
  }
  struct Frame {
    json value;
    std::optional<std::string> key;
  };
  std::vector<Frame> stack_;
  json root_;
};

class OperatorApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = state::SqliteStore::open((dir_.path() / "portcullis.db").string());
    ASSERT_TRUE(store) << store.error().message();
    store_ = std::move(*store);
    waiter_ = std::make_unique<FakeApplyWaiter>(*store_);
    health_ = std::make_shared<reconciler::HealthSnapshot>();

    OperatorApiConfig config;
    config.pool = IpPrefix::parse("10.255.0.0/16").value();
    config.gateway_address = IpAddress::parse("10.255.0.1").value();
    config.default_ports = {{filter::Protocol::kTcp, 5985}, {filter::Protocol::kUdp, 3478}};
    config.password_cost = PasswordCost::minimum();
    config.login_limits = {.max_failures = 3, .window_s = 600, .lockout_s = 120};
    config.max_failed_login_audits_per_minute = 4;
    OperatorApiDeps deps{*store_,
                         *store_,
                         *waiter_,
                         explainer_,
                         {[this] {
                            std::lock_guard lock(mu_);
                            return std::shared_ptr<const reconciler::HealthSnapshot>(health_);
                          },
                          [this] {
                            std::lock_guard lock(mu_);
                            return report_;
                          }},
                         [this](const IpAddress& a, std::uint16_t port, std::chrono::milliseconds) {
                           probed_ = a.to_string() + ":" + std::to_string(port);
                           return true;
                         },
                         [this] { return now_.load(); }};
    api_ = std::make_unique<OperatorApi>(config, deps);

    auto server = testing::start_loopback_https(dir_.path(), api_->routes(), kBodyLimit);
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
    client_ = new_client();
  }

  void TearDown() override {
    server_.reset();
    client_.reset();
  }

  std::unique_ptr<Client> new_client() {
    return std::make_unique<Client>(server_->url(), server_->identity().public_key_pin());
  }

  void set_up_admin() {
    Reply r = client_->post("/api/setup", {{"username", "root"}, {"password", kAdminPassword}});
    ASSERT_EQ(r.status, 201) << r.text;
    r = client_->login("root", kAdminPassword);
    ASSERT_EQ(r.status, 200) << r.text;
  }

  // A client logged in as a new user of `role`.
  std::unique_ptr<Client> user(const std::string& name, const std::string& role) {
    Reply r = client_->post("/api/users",
                            {{"username", name}, {"password", "password-" + name}, {"role", role}});
    EXPECT_EQ(r.status, 201) << r.text;
    auto c = new_client();
    r = c->login(name, "password-" + name);
    EXPECT_EQ(r.status, 200) << r.text;
    return c;
  }

  state::Enrollment pending_enrollment(const std::string& hostname) {
    state::Enrollment e;
    e.hostname = hostname;
    e.agent_key = SecretKey::generate_private().public_key();
    e.wg_key = SecretKey::generate_private().public_key();
    e.inventory_json = R"({"os":"Windows 11"})";
    e.source_address = "192.0.2.9";
    e.created_at = now_;
    auto added = store_->add_enrollment(e);
    EXPECT_TRUE(added) << added.error().message();
    return *added;
  }

  state::Device device(const std::string& hostname, bool with_address = true) {
    auto e = pending_enrollment(hostname);
    auto d = store_->approve_enrollment(e.id, "test", {{filter::Protocol::kTcp, 5985}}, now_);
    EXPECT_TRUE(d) << d.error().message();
    if (with_address) {
      auto a = store_->ensure_device_address(d->id, IpPrefix::parse("10.255.0.0/16").value(),
                                             IpAddress::parse("10.255.0.1").value());
      EXPECT_TRUE(a);
    }
    // The fake reconciler applied it.
    EXPECT_TRUE(store_->set_applied_generation(*store_->generation()));
    return **store_->find_device(d->id);
  }

  void set_health(std::vector<reconciler::TunnelHealth> tunnels) {
    auto snap = std::make_shared<reconciler::HealthSnapshot>();
    std::sort(tunnels.begin(), tunnels.end(),
              [](const auto& a, const auto& b) { return a.device < b.device; });
    snap->tunnels = std::move(tunnels);
    snap->taken_at = now_;
    std::lock_guard lock(mu_);
    health_ = std::move(snap);
  }

  json last_audit() {
    auto events = store_->list_audit_newest(0, 1);
    EXPECT_TRUE(events && !events->empty());
    return events && !events->empty() ? json{{"actor", (*events)[0].actor},
                                             {"action", (*events)[0].action},
                                             {"target", (*events)[0].target},
                                             {"source", (*events)[0].source}}
                                      : json();
  }

  TempDir dir_{"pcl-operator-api"};
  std::atomic<std::int64_t> now_{kStart};
  std::unique_ptr<state::SqliteStore> store_;
  std::unique_ptr<FakeApplyWaiter> waiter_;
  FakeExplainer explainer_;
  std::mutex mu_;
  std::shared_ptr<reconciler::HealthSnapshot> health_;
  std::optional<reconciler::ReconcileReport> report_;
  std::string probed_;
  std::unique_ptr<OperatorApi> api_;
  std::unique_ptr<http::HttpsServer> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(OperatorApiTest, FirstRunAnswers428UntilSetup) {
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/api/devices"},
                                                        {"POST", "/api/login"},
                                                        {"GET", "/api/nothing-here"},
                                                        {"PUT", "/api/device/vpn_config/abc"}}) {
    Reply r = client_->send(method, path, "{}");
    EXPECT_EQ(r.status, 428) << method << " " << path << " " << r.text;
    EXPECT_EQ(r.error(), "setup_required");
    EXPECT_NE(r.body.value("message", "").find("/api/setup"), std::string::npos);
  }
  // The agent API is not gated; unknown agent paths are 404.
  EXPECT_EQ(client_->post("/api/agent/nope").status, 404);

  Reply r = client_->post("/api/setup", {{"username", "root"}, {"password", "short"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.field(), "password");
  r = client_->post("/api/setup",
                    {{"username", "root"}, {"password", kAdminPassword}, {"admin", true}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.field(), "admin");
  r = client_->post("/api/setup", {{"username", "ro ot"}, {"password", kAdminPassword}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.field(), "username");
  r = client_->send("POST", "/api/setup", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.error(), "invalid_request");

  r = client_->post("/api/setup", {{"username", "root"}, {"password", kAdminPassword}});
  ASSERT_EQ(r.status, 201) << r.text;
  EXPECT_EQ(r.body["role"], "admin");
  r = client_->post("/api/setup", {{"username", "second"}, {"password", kAdminPassword}});
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.error(), "already_set_up");
  // Now unauthenticated, not 428.
  EXPECT_EQ(client_->get("/api/devices").status, 401);
  EXPECT_EQ(client_->get("/api/nothing-here").status, 404);
  auto admin = store_->find_operator("root");
  ASSERT_TRUE(admin && admin->has_value());
  EXPECT_TRUE((*admin)->password_hash.starts_with("$argon2id$"));
  EXPECT_EQ((*admin)->password_hash.find(kAdminPassword), std::string::npos);
}

TEST_F(OperatorApiTest, LoginSetsAHardenedCookieAndCsrfIsRequired) {
  ASSERT_EQ(
      client_->post("/api/setup", {{"username", "root"}, {"password", kAdminPassword}}).status,
      201);
  Reply r = client_->post("/api/login", {{"username", "root"}, {"password", "wrong password!"}});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.error(), "invalid_credentials");
  r = client_->post("/api/login", {{"username", "nobody"}, {"password", kAdminPassword}});
  EXPECT_EQ(r.status, 401);
  r = client_->post("/api/login", {{"username", "root"}, {"password", 5}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.field(), "password");

  r = client_->login("root", kAdminPassword);
  ASSERT_EQ(r.status, 200) << r.text;
  const std::string cookie = r.header("Set-Cookie");
  for (const char* attr : {"HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age="}) {
    EXPECT_NE(cookie.find(attr), std::string::npos) << cookie;
  }
  EXPECT_EQ(client_->session.size(), 43u);  // 32 bytes, base64url
  EXPECT_EQ(client_->csrf.size(), 43u);
  EXPECT_EQ(r.body["role"], "admin");
  // The token is stored only as its SHA-256.
  auto stored = store_->find_session(state::sha256(std::string_view(client_->session)), now_);
  ASSERT_TRUE(stored && stored->has_value());
  EXPECT_EQ(last_audit()["action"], "operator.login");

  EXPECT_EQ(client_->get("/api/session").body["username"], "root");
  // No CSRF, wrong CSRF: 403; the GET needs none.
  r = client_->send("POST", "/api/enrollment-codes", "{}", /*with_csrf=*/false);
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.error(), "csrf_failed");
  const std::string good = client_->csrf;
  client_->csrf = api::random_base64url(32);
  r = client_->post("/api/enrollment-codes");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.error(), "csrf_failed");
  // Another session's token does not fit this one.
  auto other = new_client();
  ASSERT_EQ(other->login("root", kAdminPassword).status, 200);
  client_->csrf = other->csrf;
  EXPECT_EQ(client_->post("/api/enrollment-codes").status, 403);
  client_->csrf = good;
  EXPECT_EQ(client_->post("/api/enrollment-codes").status, 201);

  // No session, a made-up session, an expired one: 401.
  auto anonymous = new_client();
  EXPECT_EQ(anonymous->get("/api/devices").status, 401);
  anonymous->session = api::random_base64url(32);
  EXPECT_EQ(anonymous->get("/api/devices").error(), "unauthenticated");
  now_ += 8 * 3600;
  EXPECT_EQ(client_->get("/api/devices").status, 401);
  now_ -= 8 * 3600;

  // Logout ends the session.
  r = client_->post("/api/logout");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.header("Set-Cookie").find("Max-Age=0"), std::string::npos);
  EXPECT_EQ(client_->get("/api/devices").status, 401);
  EXPECT_EQ(other->get("/api/devices").status, 200);
}

TEST_F(OperatorApiTest, LoginIsRateLimitedPerUserAndSource) {
  set_up_admin();
  auto c = new_client();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(
        c->post("/api/login", {{"username", "root"}, {"password", "not the password"}}).status,
        401);
  }
  Reply r = c->post("/api/login", {{"username", "root"}, {"password", kAdminPassword}});
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.error(), "rate_limited");
  EXPECT_EQ(r.header("Retry-After"), "120");
  now_ += 60;
  EXPECT_EQ(c->post("/api/login", {{"username", "root"}, {"password", kAdminPassword}})
                .header("Retry-After"),
            "60");
  now_ += 61;
  EXPECT_EQ(c->login("root", kAdminPassword).status, 200);
}

TEST_F(OperatorApiTest, FailedLoginsAreAuditedWithinABudget) {
  set_up_admin();
  auto c = new_client();
  EXPECT_EQ(c->post("/api/login", {{"username", "root"}, {"password", "wrong password!"}}).status,
            401);
  EXPECT_EQ(c->post("/api/login", {{"username", "mallory"}, {"password", "a guess"}}).status, 401);
  Reply r = client_->get("/api/audit?limit=2");
  ASSERT_EQ(r.status, 200) << r.text;
  const auto& unknown = r.body["events"][0];
  EXPECT_EQ(unknown["action"], "operator.login_failed");
  EXPECT_EQ(unknown["actor"], "anonymous");
  EXPECT_EQ(unknown["target"], "mallory");
  EXPECT_EQ(unknown["detail"], "unknown user");
  EXPECT_EQ(unknown["source"], "127.0.0.1");
  EXPECT_EQ(r.body["events"][1]["target"], "root");
  EXPECT_EQ(r.body["events"][1]["detail"], "wrong password");

  // The third failure for root from here locks it out: the event says so.
  c->post("/api/login", {{"username", "root"}, {"password", "wrong password!"}});
  c->post("/api/login", {{"username", "root"}, {"password", "wrong password!"}});
  r = client_->get("/api/audit?limit=1");
  EXPECT_EQ(r.body["events"][0]["detail"],
            "wrong password; this user is locked out from this address for 120 s");

  // Over the budget of 4 a minute: no more rows this minute, one summary with the next minute's
  // first failure.
  const auto count = [&] {
    int n = 0;
    Reply all = client_->get("/api/audit?limit=1000");
    for (const auto& e : all.body["events"]) {
      n += e["action"] == "operator.login_failed";
    }
    return n;
  };
  EXPECT_EQ(count(), 4);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(
        c->post("/api/login", {{"username", "u" + std::to_string(i)}, {"password", "x"}}).status,
        401);
  }
  EXPECT_EQ(count(), 4);
  now_ += 60;
  c->post("/api/login", {{"username", "late"}, {"password", "x"}});
  r = client_->get("/api/audit?limit=2");
  EXPECT_EQ(r.body["events"][0]["target"], "late");
  EXPECT_EQ(r.body["events"][1]["detail"],
            "3 more failed logins in the previous minute, not audited one by one (their names and "
            "addresses are in the gateway log)");
  EXPECT_EQ(count(), 6);
}

TEST_F(OperatorApiTest, RolesLimitWhatUsersMayDo) {
  set_up_admin();
  auto op = user("olga", "operator");
  auto aud = user("otto", "auditor");
  Reply r = client_->post(
      "/api/users", {{"username", "olga"}, {"password", "another-password"}, {"role", "auditor"}});
  EXPECT_EQ(r.status, 409);
  r = client_->post("/api/users",
                    {{"username", "x"}, {"password", "another-password"}, {"role", "root"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.field(), "role");
  r = client_->get("/api/users");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["users"].size(), 3u);
  EXPECT_EQ(r.body.dump().find("argon2"), std::string::npos);

  EXPECT_EQ(op->get("/api/users").status, 403);
  EXPECT_EQ(op->get("/api/users").error(), "forbidden");
  EXPECT_EQ(op->post("/api/users",
                     {{"username", "y"}, {"password", "another-password"}, {"role", "admin"}})
                .status,
            403);
  EXPECT_EQ(op->post("/api/enrollment-codes", {{"ttl_s", 600}}).status, 201);
  EXPECT_EQ(last_audit()["actor"], "operator:olga");

  EXPECT_EQ(aud->get("/api/devices").status, 200);
  EXPECT_EQ(aud->get("/api/audit").status, 200);
  EXPECT_EQ(aud->post("/api/enrollment-codes").status, 403);
  const auto d = device("host-a");
  EXPECT_EQ(aud->post("/api/devices/" + d.id + "/revoke").status, 403);
  EXPECT_EQ(aud->put("/api/device/vpn_config/" + d.id, {{"allowed_ports", {"22/tcp"}}}).status,
            403);
  EXPECT_EQ(aud->get("/api/users").status, 403);
}

TEST_F(OperatorApiTest, EnrollmentsListApproveDenyAndCodes) {
  set_up_admin();
  auto a = pending_enrollment("win-a");
  auto b = pending_enrollment("win-b");
  Reply r = client_->get("/api/enrollments?status=pending");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["enrollments"].size(), 2u);
  EXPECT_EQ(client_->get("/api/enrollments?status=maybe").field(), "status");
  EXPECT_EQ(client_->get("/api/enrollments?color=red").field(), "color");

  const int wakes = waiter_->wakes;
  r = client_->post("/api/enrollments/" + a.id + "/approve");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["allowed_ports"], json({"5985/tcp", "3478/udp"}));
  EXPECT_GT(waiter_->wakes, wakes);
  EXPECT_EQ(last_audit(), json({{"actor", "operator:root"},
                                {"action", "enrollment.approve"},
                                {"target", a.id},
                                {"source", "127.0.0.1"}}));
  ASSERT_TRUE((*store_->find_device(r.body["device_id"].get<std::string>())).has_value());

  EXPECT_EQ(client_->post("/api/enrollments/" + b.id + "/deny").status, 200);
  EXPECT_EQ(client_->post("/api/enrollments/" + a.id + "/deny").status, 409);
  EXPECT_EQ(client_->post("/api/enrollments/" + b.id + "/approve").status, 409);
  EXPECT_EQ(client_->post("/api/enrollments/unknownid/approve").status, 404);
  EXPECT_EQ(client_->post("/api/enrollments/bad%20id/approve").status, 404);
  EXPECT_EQ(client_->post("/api/enrollments/" + a.id + "/approve", {{"x", 1}}).field(), "x");
  EXPECT_EQ(client_->get("/api/enrollments/" + a.id + "/approve").status, 405);
  EXPECT_EQ(client_->get("/api/enrollments?status=pending").body["enrollments"].size(), 0u);

  r = client_->post("/api/enrollment-codes", {{"ttl_s", 3600}});
  ASSERT_EQ(r.status, 201) << r.text;
  EXPECT_EQ(r.body["expires_at"], now_ + 3600);
  const std::string code = r.body["code"];
  EXPECT_EQ(code.size(), 39u);
  auto c = pending_enrollment("win-c");
  EXPECT_EQ(*store_->consume_enrollment_code(code, now_, c.id), true);
  EXPECT_EQ(*store_->consume_enrollment_code(code, now_, c.id), false);  // single use
  EXPECT_EQ(client_->post("/api/enrollment-codes", {{"ttl_s", 1}}).field(), "ttl_s");
  EXPECT_EQ(client_->post("/api/enrollment-codes", {{"ttl_s", "1h"}}).field(), "ttl_s");
  EXPECT_EQ(client_->post("/api/enrollment-codes", {{"ttl_s", 1e3}}).field(), "ttl_s");
  // The code never reaches the audit log.
  auto events = store_->list_audit_newest(0, 100);
  for (const auto& e : *events) EXPECT_EQ(e.detail.find(code), std::string::npos);
}

TEST_F(OperatorApiTest, DevicesPageSortSearchDetailAndRevoke) {
  set_up_admin();
  std::vector<state::Device> devices;
  for (int i = 0; i < 7; ++i) devices.push_back(device("host-" + std::to_string(i)));
  devices.push_back(device("zeta", /*with_address=*/false));
  set_health({{devices[3].id, reconciler::TunnelState::kFresh, kStart, kStart - 5, 100, 200},
              {devices[5].id, reconciler::TunnelState::kStale, kStart, kStart - 300, 1, 2}});

  Reply r = client_->get("/api/devices?limit=3");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["total"], 8);
  ASSERT_EQ(r.body["devices"].size(), 3u);
  EXPECT_EQ(r.body["devices"][0]["hostname"], "host-0");
  EXPECT_EQ(r.body["next_offset"], 3);
  r = client_->get("/api/devices?limit=3&offset=6");
  EXPECT_EQ(r.body["devices"].size(), 2u);
  EXPECT_TRUE(r.body["next_offset"].is_null());
  r = client_->get("/api/devices?sort=last_handshake&order=desc&limit=2");
  ASSERT_EQ(r.body["devices"].size(), 2u);
  EXPECT_EQ(r.body["devices"][0]["id"], devices[3].id);
  EXPECT_EQ(r.body["devices"][0]["tunnel"]["state"], "up");
  EXPECT_EQ(r.body["devices"][0]["tunnel"]["handshake_age_s"], 5);
  EXPECT_EQ(r.body["devices"][1]["id"], devices[5].id);
  EXPECT_EQ(r.body["devices"][1]["tunnel"]["state"], "pending");
  r = client_->get("/api/devices?search=HOST-4");
  ASSERT_EQ(r.body["total"], 1);
  r = client_->get("/api/devices?search=" + devices[2].address->to_string());
  ASSERT_EQ(r.body["total"], 1);
  EXPECT_EQ(r.body["devices"][0]["id"], devices[2].id);
  r = client_->get("/api/devices?sort=address&order=desc&limit=1");
  EXPECT_EQ(r.body["devices"][0]["id"], devices[6].id);
  for (const char* bad : {"limit=0", "limit=501", "limit=ten", "offset=-1", "sort=color",
                          "order=up", "status=gone", "page=2", "limit=1&limit=2"}) {
    r = client_->get(std::string("/api/devices?") + bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_FALSE(r.field().empty()) << bad;
  }
  EXPECT_EQ(client_->get("/api/devices?search=" + std::string(300, 'a')).field(), "search");

  r = client_->get("/api/devices/" + devices[3].id);
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["inventory"]["os"], "Windows 11");
  EXPECT_EQ(r.body["tunnel"]["rx_bytes"], 100);
  EXPECT_EQ(r.body["allowed_ports"], json({"5985/tcp"}));
  EXPECT_EQ(client_->get("/api/devices/nosuchdevice").status, 404);
  EXPECT_EQ(client_->get("/api/devices/" + devices[7].id).body["tunnel"]["state"], "down");

  const int wakes = waiter_->wakes;
  r = client_->post("/api/devices/" + devices[3].id + "/revoke");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_GT(waiter_->wakes, wakes);
  EXPECT_EQ(last_audit()["action"], "device.revoke");
  EXPECT_EQ(client_->get("/api/devices/" + devices[3].id).body["status"], "revoked");
  EXPECT_EQ(client_->get("/api/devices/" + devices[3].id).body["tunnel"]["state"], "down");
  EXPECT_EQ(client_->get("/api/devices?status=revoked").body["total"], 1);
  EXPECT_EQ(client_->post("/api/devices/nosuchdevice/revoke").status, 404);
  // A revoked agent cannot come back with its key.
  state::Enrollment again;
  again.hostname = "host-3";
  again.agent_key = devices[3].agent_key;
  again.wg_key = SecretKey::generate_private().public_key();
  again.inventory_json = "{}";
  auto refused = store_->add_enrollment(again);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().errno_value(), EPERM);
}

TEST_F(OperatorApiTest, VpnConfigIsValidated) {
  set_up_admin();
  const auto d = device("host-a");
  Reply r = client_->get("/api/device/vpn_config/" + d.id);
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["allowed_ports"], json({"5985/tcp"}));
  r = client_->put("/api/device/vpn_config/" + d.id, {{"allowed_ports", {"5986/tcp", "3478"}}});
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["allowed_ports"], json({"3478/tcp", "5986/tcp", "3478/udp"}));
  EXPECT_EQ(r.body["applied"], true);
  EXPECT_EQ((*store_->find_device(d.id))->ports.size(), 3u);
  EXPECT_EQ(last_audit()["action"], "device.ports");

  for (const json& bad : {json{{"allowed_ports", {"70000/tcp"}}}, json{{"allowed_ports", {5985}}},
                          json{{"allowed_ports", "5985"}}, json{{"allowed_ports", {"22/sctp"}}},
                          json{{"allowed_ports", {"22/tcp", "22/tcp"}}}, json::object()}) {
    r = client_->put("/api/device/vpn_config/" + d.id, bad);
    EXPECT_EQ(r.status, 400) << bad.dump();
    EXPECT_EQ(r.field(), "allowed_ports") << bad.dump();
  }
  EXPECT_EQ(
      client_
          ->put("/api/device/vpn_config/" + d.id, {{"allowed_ports", json::array()}, {"extra", 1}})
          .field(),
      "extra");
  EXPECT_EQ(client_->send("PUT", "/api/device/vpn_config/" + d.id, "[1,2]").status, 400);
  EXPECT_EQ(client_->send("PUT", "/api/device/vpn_config/" + d.id, "{\"allowed_ports\":").status,
            400);
  EXPECT_EQ(client_
                ->send("PUT", "/api/device/vpn_config/" + d.id,
                       "{\"allowed_ports\":[\"" + std::string(kBodyLimit, '1') + "\"]}")
                .status,
            413);
  json many = json::array();
  for (int p = 1; p <= 300; ++p) many.push_back(std::to_string(p) + "/tcp");
  EXPECT_EQ(client_->put("/api/device/vpn_config/" + d.id, {{"allowed_ports", many}}).field(),
            "allowed_ports");
  EXPECT_EQ(
      client_->put("/api/device/vpn_config/nosuchdevice", {{"allowed_ports", {"22/tcp"}}}).status,
      404);
  EXPECT_EQ(client_->get("/api/device/vpn_config/nosuchdevice").status, 404);
  ASSERT_EQ(client_->post("/api/devices/" + d.id + "/revoke").status, 200);
  EXPECT_EQ(client_->put("/api/device/vpn_config/" + d.id, {{"allowed_ports", {"22/tcp"}}}).status,
            409);
}

TEST_F(OperatorApiTest, TunnelConnectStatusAndActive) {
  set_up_admin();
  const auto d = device("host-a", /*with_address=*/false);
  Reply r = client_->get("/api/tunnel/status?device=" + d.id);
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["state"], "down");
  EXPECT_TRUE(r.body["address"].is_null());

  r = client_->post("/api/tunnel/connect", {{"device_id", d.id}});
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["address"], "10.255.0.2");
  EXPECT_EQ(r.body["applied"], true);
  EXPECT_EQ(r.body["state"], "pending");  // applied, no handshake yet
  EXPECT_EQ(last_audit()["action"], "tunnel.connect");
  EXPECT_EQ(client_->post("/api/tunnel/connect", {{"device_id", "nosuchdevice"}}).status, 404);
  EXPECT_EQ(client_->post("/api/tunnel/connect", {{"device", d.id}}).field(), "device");
  EXPECT_EQ(client_->post("/api/tunnel/connect", {{"device_id", 7}}).field(), "device_id");

  set_health({{d.id, reconciler::TunnelState::kFresh, kStart, kStart - 30, 1000, 2000}});
  r = client_->get("/api/tunnel/status?device=" + d.id + "&probe=true");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["state"], "up");
  EXPECT_EQ(r.body["handshake_age_s"], 30);
  EXPECT_EQ(r.body["agent_socket"]["reachable"], true);
  EXPECT_EQ(r.body["agent_socket"]["port"], 5985);
  EXPECT_EQ(probed_, "10.255.0.2:5985");
  EXPECT_EQ(client_->get("/api/tunnel/status").field(), "device");
  EXPECT_EQ(client_->get("/api/tunnel/status?device=" + d.id + "&probe=yes").field(), "probe");
  EXPECT_EQ(client_->get("/api/tunnel/status?device=nosuchdevice").status, 404);

  r = client_->get("/api/tunnel/active");
  ASSERT_EQ(r.status, 200) << r.text;
  ASSERT_EQ(r.body["tunnels"].size(), 1u);
  EXPECT_EQ(r.body["tunnels"][0], json({{"tunnel_id", d.id},
                                        {"agent_id", d.id},
                                        {"hostname", "host-a"},
                                        {"virtual_ip", "10.255.0.2"},
                                        {"last_activity", kStart - 30},
                                        {"rx", 1000},
                                        {"tx", 2000}}));
  // The same health snapshot with a new device list (the page is cached per snapshot pair).
  ASSERT_EQ(client_->post("/api/devices/" + d.id + "/revoke").status, 200);
  EXPECT_EQ(client_->get("/api/tunnel/active").body["tunnels"].size(), 0u);
  set_health({{d.id, reconciler::TunnelState::kDead, kStart, kStart - 3000, 1, 1}});
  EXPECT_EQ(client_->get("/api/tunnel/active").body["tunnels"].size(), 0u);
  EXPECT_EQ(client_->get("/api/tunnel/status?device=" + d.id).body["state"], "down");
  EXPECT_EQ(client_->get("/api/tunnel/active?limit=0").field(), "limit");
}

TEST_F(OperatorApiTest, AuditIsNewestFirstAndPaged) {
  set_up_admin();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(client_->post("/api/enrollment-codes").status, 201);
  Reply r = client_->get("/api/audit?limit=3");
  ASSERT_EQ(r.status, 200) << r.text;
  ASSERT_EQ(r.body["events"].size(), 3u);
  const auto& first = r.body["events"][0];
  EXPECT_EQ(first["actor"], "operator:root");
  EXPECT_EQ(first["action"], "enrollment_code.create");
  EXPECT_EQ(first["source"], "127.0.0.1");
  EXPECT_EQ(first["at"], kStart);
  EXPECT_GT(first["id"].get<int>(), r.body["events"][1]["id"].get<int>());
  r = client_->get("/api/audit?limit=100&before=" + r.body["next_before"].dump());
  // 2 more codes, the login and the setup.
  EXPECT_EQ(r.body["events"].size(), 4u);
  EXPECT_EQ(r.body["events"].back()["action"], "operator.setup");
  EXPECT_EQ(client_->get("/api/audit?limit=1001").field(), "limit");
}

TEST_F(OperatorApiTest, RulesetAndExplainPerLayer) {
  set_up_admin();
  const auto d = device("host-a");
  {
    std::lock_guard lock(explainer_.mu);
    explainer_.nft.insert({*d.address, filter::Protocol::kTcp, 5985, d.id});
    explainer_.ebpf.insert({*d.address, filter::Protocol::kTcp, 5985, d.id});
  }
  reconciler::ReconcileReport report;
  report.generation = 4;
  report.applied = true;
  report.drift = true;
  reconciler::LayerReport wg_layer, nft_layer;
  wg_layer.name = "wireguard";
  nft_layer.name = "nftables";
  nft_layer.added = 1;
  nft_layer.detail = "+1";
  report.layers = {wg_layer, nft_layer};
  {
    std::lock_guard lock(mu_);
    report_ = report;
  }
  Reply r = client_->get("/api/ruleset");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["layers"][0]["name"], "nftables");
  EXPECT_EQ(r.body["layers"][0]["allowed"], 1);
  EXPECT_EQ(r.body["last_pass"]["drift_repaired"], true);
  EXPECT_EQ(r.body["last_pass"]["layers"][1]["added"], 1);
  EXPECT_EQ(client_->get("/api/ruleset?x=1").field(), "x");
  EXPECT_FALSE(r.body.contains("device"));

  // One device: its entries per layer against its allowlist (5985/tcp by default). The eBPF
  // layer lacks it and holds a port it should not.
  {
    std::lock_guard lock(explainer_.mu);
    explainer_.ebpf.clear();
    explainer_.ebpf.insert({*d.address, filter::Protocol::kUdp, 3478, d.id});
  }
  r = client_->get("/api/ruleset?device=" + d.id);
  ASSERT_EQ(r.status, 200) << r.text;
  const json& dev = r.body["device"];
  EXPECT_EQ(dev["id"], d.id);
  EXPECT_EQ(dev["address"], d.address->to_string());
  EXPECT_EQ(dev["intent"], json::array({"5985/tcp"}));
  ASSERT_EQ(dev["layers"].size(), 2u);
  EXPECT_EQ(dev["layers"][0]["name"], "nftables");
  EXPECT_EQ(dev["layers"][0]["in_sync"], true);
  EXPECT_EQ(dev["layers"][0]["allowed"], json::array({"5985/tcp"}));
  EXPECT_EQ(dev["layers"][1]["in_sync"], false);
  EXPECT_EQ(dev["layers"][1]["missing"], json::array({"5985/tcp"}));
  EXPECT_EQ(dev["layers"][1]["unexpected"], json::array({"3478/udp"}));
  EXPECT_EQ(client_->get("/api/ruleset?device=nosuchdevice").status, 404);
  EXPECT_EQ(client_->get("/api/ruleset?device=" + std::string(65, 'a')).field(), "device");
  {
    std::lock_guard lock(explainer_.mu);
    explainer_.ebpf = explainer_.nft;
  }

  set_health({{d.id, reconciler::TunnelState::kFresh, kStart, kStart - 1, 0, 0}});
  r = client_->get("/api/explain?device=" + d.id + "&port=5985&proto=tcp");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["allowed"], true);
  EXPECT_EQ(r.body["reachable"], true);
  EXPECT_TRUE(r.body["blocked_by"].is_null());
  ASSERT_EQ(r.body["layers"].size(), 4u);
  EXPECT_EQ(r.body["layers"][0]["layer"], "intent");
  EXPECT_EQ(r.body["layers"][3]["layer"], "tunnel");

  r = client_->get("/api/explain?device=" + d.id + "&port=22&proto=tcp");
  EXPECT_EQ(r.body["allowed"], false);
  EXPECT_EQ(r.body["blocked_by"], "intent");
  EXPECT_NE(r.body["layers"][0]["why"].get<std::string>().find("22/tcp"), std::string::npos);

  // Intent allows, the eBPF map lacks the key: the layer is named.
  ASSERT_EQ(
      client_->put("/api/device/vpn_config/" + d.id, {{"allowed_ports", {"5985/tcp", "22/tcp"}}})
          .status,
      200);
  {
    std::lock_guard lock(explainer_.mu);
    explainer_.nft.insert({*d.address, filter::Protocol::kTcp, 22, d.id});
  }
  r = client_->get("/api/explain?device=" + d.id + "&port=22");
  EXPECT_EQ(r.body["allowed"], false);
  EXPECT_EQ(r.body["blocked_by"], "ebpf");
  EXPECT_EQ(r.body["layers"][1]["allowed"], true);
  EXPECT_EQ(r.body["layers"][2]["allowed"], false);

  EXPECT_EQ(client_->get("/api/explain?device=" + d.id + "&port=0").field(), "port");
  EXPECT_EQ(client_->get("/api/explain?device=" + d.id).field(), "port");
  EXPECT_EQ(client_->get("/api/explain?device=" + d.id + "&port=22&proto=icmp").field(), "proto");
  EXPECT_EQ(client_->get("/api/explain?port=22").field(), "device");
  EXPECT_EQ(client_->get("/api/explain?device=nosuchdevice&port=22").status, 404);
}

// 10,000 devices, all with a fresh tunnel: a page of 100 sorted by last handshake and the
// active tunnel list, over HTTPS on one keep-alive connection. Prints p50/p99 (this build:
// Debug with sanitizers, so the figures are upper bounds of a release build's). Creating the
// devices takes ~20 s under the sanitizers: run with PORTCULLIS_SCALE_TESTS=1.
TEST_F(OperatorApiTest, TenThousandDevicesListAndActiveTunnels) {
  if (std::getenv("PORTCULLIS_SCALE_TESTS") == nullptr) {
    GTEST_SKIP() << "set PORTCULLIS_SCALE_TESTS=1 to run the 10,000-device measurement";
  }
  set_up_admin();
  constexpr int kDevices = 10'000;
  const auto pool = IpPrefix::parse("10.255.0.0/16").value();
  const auto gw = IpAddress::parse("10.255.0.1").value();
  std::vector<reconciler::TunnelHealth> tunnels;
  const auto setup_start = std::chrono::steady_clock::now();
  for (int i = 0; i < kDevices; ++i) {
    state::Enrollment e;
    e.hostname = "host-" + std::to_string(i);
    KeyBytes a{}, w{};
    randombytes_buf(a.data(), a.size());
    randombytes_buf(w.data(), w.size());
    e.agent_key = Key(a);
    e.wg_key = Key(w);
    e.inventory_json = "{}";
    auto added = store_->add_enrollment(e);
    ASSERT_TRUE(added);
    auto d = store_->approve_enrollment(added->id, "test", {{filter::Protocol::kTcp, 5985}}, now_);
    ASSERT_TRUE(d);
    ASSERT_TRUE(store_->ensure_device_address(d->id, pool, gw));
    tunnels.push_back({d->id, reconciler::TunnelState::kFresh, kStart, kStart - (i % 170),
                       static_cast<std::uint64_t>(i), 2});
  }
  ASSERT_TRUE(store_->set_applied_generation(*store_->generation()));
  set_health(std::move(tunnels));
  std::printf(
      "setup of %d devices: %.1f s\n", kDevices,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - setup_start).count());

  // Round trips as the server answers them (the answer is parsed and checked once, outside the
  // timing). fresh: a new health snapshot before every request, so every answer is rendered
  // (the daemon replaces it after each health read, every 10 s).
  auto measure = [&](const std::string& path, std::size_t expect_items, const char* key,
                     bool fresh = false) {
    Reply first = client_->get(path);
    ASSERT_EQ(first.status, 200);
    ASSERT_EQ(first.body[key].size(), expect_items);
    std::vector<double> ms;
    for (int i = 0; i < 60; ++i) {
      if (fresh) {
        std::lock_guard lock(mu_);
        health_ = std::make_shared<reconciler::HealthSnapshot>(*health_);
      }
      const auto t0 = std::chrono::steady_clock::now();
      Reply r = client_->get_text(path);
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      ASSERT_EQ(r.status, 200);
    }
    std::sort(ms.begin(), ms.end());
    std::printf("%s%s: %zu bytes, p50 %.1f ms, p99 %.1f ms\n", path.c_str(),
                fresh ? " (rendered each time)" : "", first.text.size(), ms[ms.size() / 2],
                ms[ms.size() * 99 / 100]);
  };
  measure("/api/devices?limit=100&sort=last_handshake&order=desc", 100, "devices");
  measure("/api/devices?limit=100&sort=hostname&search=host-99", 100, "devices");
  measure("/api/tunnel/active", 1000, "tunnels");
  measure("/api/tunnel/active", 1000, "tunnels", true);
  measure("/api/tunnel/active?limit=10000", kDevices, "tunnels");
  measure("/api/tunnel/active?limit=10000", kDevices, "tunnels", true);
}

TEST(OperatorOpenApi, DocumentListsExactlyTheRegisteredRoutes) {
  std::ifstream in(PORTCULLIS_OPENAPI_FILE);
  ASSERT_TRUE(in) << PORTCULLIS_OPENAPI_FILE;
  std::stringstream text;
  text << in.rdbuf();
  auto doc = YamlToJson::parse(text.str());
  ASSERT_TRUE(doc) << "openapi.yaml does not parse";
  EXPECT_TRUE((*doc)["openapi"].get<std::string>().starts_with("3."));
  std::set<std::string> documented;
  for (const auto& [path, item] : (*doc)["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      std::string m = method;
      std::transform(m.begin(), m.end(), m.begin(), ::toupper);
      documented.insert(m + " " + path);
      EXPECT_TRUE(op.contains("responses")) << m << " " << path;
    }
  }
  std::set<std::string> registered;
  for (const auto& e : OperatorApi::endpoints()) registered.insert(e.method + " " + e.path);
  EXPECT_EQ(documented, registered);
}

}  // namespace
}  // namespace portcullis::operator_api
