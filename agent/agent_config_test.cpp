#include "agent/agent_config.h"

#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace portcullis::agent {
namespace {

constexpr const char* kPin = "sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
// `openssl x509 -noout -fingerprint -sha256` form (SHA-256 of the whole certificate).
constexpr const char* kFingerprint =
    "0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:"
    "FF";

class AgentConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("pcl-agent-config-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& text) {
    const std::string path = (dir_ / "agent.toml").string();
    std::ofstream(path) << text;
    return path;
  }
  Result<AgentConfig> load(const std::string& body, const Environment& env = {}) {
    return load_agent_config(write(body), env, "/srv");
  }
  static std::string base() {
    return std::string("gateway_url = \"https://gw.example:8443\"\ngateway_pin = \"") + kPin +
           "\"\n";
  }
  // The error text, or "" when it loaded.
  std::string error_of(const std::string& body, const Environment& env = {}) {
    auto c = load(body, env);
    return c ? "" : c.error().context();
  }

  std::filesystem::path dir_;
};

TEST_F(AgentConfigTest, DefaultsWithTheRequiredKeys) {
  auto c = load(base());
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->gateway_url, "https://gw.example:8443");
  EXPECT_EQ(c->gateway_pin, kPin);
  EXPECT_EQ(c->interface, "portcullis");
  EXPECT_EQ(c->mtu, 1420);
  EXPECT_EQ(c->backend, wg::Backend::kAuto);
  EXPECT_EQ(c->state_dir, "/var/lib/portcullis-agent");
  EXPECT_EQ(c->user, "portcullis-agent");
  EXPECT_EQ(c->health_port, 9273);
  EXPECT_EQ(c->ensure_interval_s, 300);
  EXPECT_EQ(c->handshake_max_age_s, 180);
}

TEST_F(AgentConfigTest, EveryKeyFromTheFile) {
  auto c = load(base() +
                "enrollment_code = \"abc\"\nhostname = \"ws1\"\ninterface = \"pcl-a\"\n"
                "mtu = 1380\nbackend = \"userspace\"\nwireguard_go = \"/usr/bin/wireguard-go\"\n"
                "state_dir = \"state\"\nhealth_port = 0\nensure_interval_s = 10\n"
                "heartbeat_interval_s = 2\npoll_max_interval_s = 3\nhandshake_max_age_s = 60\n"
                "log_level = \"debug\"\nuser = \"pcl_agent2\"\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->user, "pcl_agent2");
  EXPECT_EQ(c->enrollment_code, "abc");
  EXPECT_EQ(c->hostname, "ws1");
  EXPECT_EQ(c->interface, "pcl-a");
  EXPECT_EQ(c->mtu, 1380);
  EXPECT_EQ(c->backend, wg::Backend::kUserspace);
  EXPECT_EQ(c->wireguard_go, "/usr/bin/wireguard-go");
  EXPECT_EQ(c->state_dir, "/srv/state");  // relative to cwd
  EXPECT_EQ(c->health_port, 0);
  EXPECT_EQ(c->ensure_interval_s, 10);
  EXPECT_EQ(c->heartbeat_interval_s, 2);
  EXPECT_EQ(c->poll_max_interval_s, 3);
  EXPECT_EQ(c->handshake_max_age_s, 60);
  EXPECT_EQ(c->log_level, LogLevel::kDebug);
}

TEST_F(AgentConfigTest, EnvironmentOverridesTheFile) {
  auto c = load(base() + "mtu = 1380\n", {{"PORTCULLIS_AGENT_MTU", "1300"},
                                          {"PORTCULLIS_AGENT_INTERFACE", "pcl9"},
                                          {"PORTCULLIS_AGENT_USER", "nobody"},
                                          {"PORTCULLIS_OTHER", "ignored"}});
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->mtu, 1300);
  EXPECT_EQ(c->user, "nobody");
  EXPECT_EQ(c->interface, "pcl9");
}

TEST_F(AgentConfigTest, EnvironmentAloneWithoutTheDefaultFile) {
  // An explicit path must exist; the default path may be absent when the environment has all.
  auto missing = load_agent_config((dir_ / "nope.toml").string(), {});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().errno_value(), ENOENT);
}

TEST_F(AgentConfigTest, Rejections) {
  struct Case {
    std::string body;
    Environment env;
    std::string expect;  // substring of the error
  };
  const std::vector<Case> cases = {
      {"gateway_pin = \"" + std::string(kPin) + "\"\n", {}, "gateway_url: not set"},
      {"gateway_url = \"https://gw:8443\"\n", {}, "gateway_pin: not set"},
      {base() + "gateway_url = \"http://gw:8443\"\n", {}, "cannot redefine"},
      {"gateway_url = \"http://gw:8443\"\n", {}, "gateway_url: 'http://gw:8443' is not an https"},
      {"gateway_url = \"https://gw:8443/api\"\n", {}, "without a path"},
      {"gateway_url = \"https://gw 1:8443\"\n", {}, "no spaces"},
      {"gateway_url = 5\n", {}, "gateway_url: expected a string (line 1)"},
      {"gateway_pin = \"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n",
       {},
       "not a public key pin"},
      {"gateway_pin = \"sha256//abc\"\n", {}, "not a public key pin"},
      // A certificate fingerprint one byte short, and one with a stray character.
      {"gateway_pin = \"" + std::string(kFingerprint).substr(3) + "\"\n",
       {},
       "not a public key pin"},
      {"gateway_pin = \"" + std::string(kFingerprint).replace(2, 1, "-") + "\"\n",
       {},
       "not a public key pin"},
      {base() + "mtu = 100\n", {}, "mtu: expected an integer from 1280 to 9000, got 100 (line 3)"},
      {base() + "mtu = \"1420\"\n", {}, "mtu: expected an integer (line 3)"},
      {base() + "backend = \"magic\"\n", {}, "backend: expected one of auto, kernel, userspace"},
      {base() + "interface = \"this-name-is-too-long\"\n", {}, "interface:"},
      {base() + "interface = \"a/b\"\n", {}, "interface:"},
      {base() + "health_port = 70000\n", {}, "health_port: expected an integer from 0 to 65535"},
      {base() + "ensure_interval_s = 1\n", {}, "ensure_interval_s: expected an integer from 5"},
      {base() + "handshake_max_age_s = 5\n", {}, "handshake_max_age_s"},
      {base() + "heartbeat_interval_s = 0\n", {}, "heartbeat_interval_s"},
      {base() + "poll_max_interval_s = 0\n", {}, "poll_max_interval_s"},
      {base() + "state_dir = \"\"\n", {}, "state_dir: must not be empty"},
      {base() + "wireguard_go = \"\"\n", {}, "wireguard_go: must not be empty"},
      {base() + "log_level = \"loud\"\n", {}, "log_level: expected one of"},
      {base() + "user = \"root\"\n", {}, "user: must not be root"},
      {base() + "user = \"\"\n", {}, "user: '' is not a user name"},
      {base() + "user = \"Agent\"\n", {}, "user: 'Agent' is not a user name"},
      {base() + "user = \"-x\"\n", {}, "is not a user name"},
      {base() + "user = \"" + std::string(33, 'a') + "\"\n", {}, "is not a user name"},
      {base() + "user = 7\n", {}, "user: expected a string (line 3)"},
      {base(), {{"PORTCULLIS_AGENT_USER", "a b"}}, "(PORTCULLIS_AGENT_USER)"},
      {base() + "enrollment_code = \"" + std::string(200, 'x') + "\"\n", {}, "enrollment_code:"},
      {base() + "unknown = 1\n", {}, "unknown: unknown key (line 3)"},
      {base() + "[gateway]\nurl = \"x\"\n", {}, "[gateway]: unknown section"},
      {base() + "mtu = \n", {}, "config file"},  // TOML syntax error
      {base(), {{"PORTCULLIS_AGENT_MTU", "big"}}, "mtu: expected an integer, got 'big'"},
      {base(), {{"PORTCULLIS_AGENT_MTU", "99999"}}, "(PORTCULLIS_AGENT_MTU)"},
      {base(), {{"PORTCULLIS_AGENT_GATEWAY_URLL", "x"}}, "PORTCULLIS_AGENT_GATEWAY_URLL: unknown"},
      {base(), {{"PORTCULLIS_AGENT_BACKEND", "fast"}}, "(PORTCULLIS_AGENT_BACKEND)"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of(c.body, c.env);
    EXPECT_NE(err.find(c.expect), std::string::npos)
        << "config:\n"
        << c.body << "error: " << (err.empty() ? "(loaded)" : err);
  }
}

TEST_F(AgentConfigTest, CertificateFingerprintPin) {
  auto c = load("gateway_url = \"https://gw:8443\"\ngateway_pin = \"" + std::string(kFingerprint) +
                "\"\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->gateway_pin, kFingerprint);
  auto bytes = parse_certificate_fingerprint(kFingerprint);
  ASSERT_TRUE(bytes);
  EXPECT_EQ((*bytes)[0], 0x0a);
  EXPECT_EQ((*bytes)[9], 0x93);
  EXPECT_EQ((*bytes)[31], 0xff);
  std::string lower = kFingerprint;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  EXPECT_EQ(parse_certificate_fingerprint(lower), bytes);
  EXPECT_FALSE(parse_certificate_fingerprint(std::string(kFingerprint) + ":00"));
  EXPECT_FALSE(parse_certificate_fingerprint(kPin));
}

TEST_F(AgentConfigTest, DescribeHidesTheEnrollmentCode) {
  auto c = load(base() + "enrollment_code = \"s3cret\"\n");
  ASSERT_TRUE(c);
  const std::string text = describe(*c);
  EXPECT_EQ(text.find("s3cret"), std::string::npos);
  EXPECT_NE(text.find("enrollment_code = (set)"), std::string::npos);
  EXPECT_NE(text.find("user = \"portcullis-agent\"\n"), std::string::npos);
}

}  // namespace
}  // namespace portcullis::agent
