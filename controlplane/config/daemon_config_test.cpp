#include "controlplane/config/daemon_config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace portcullis::config {
namespace {

using filter::Protocol;
using state::PortRule;

const Environment kNoEnv;

Result<DaemonConfig> parse(std::string_view text, const Environment& env = kNoEnv) {
  return parse_config(text, "test.toml", env, "/work");
}

// The error message, or "" when the text parsed.
std::string rejection(std::string_view text, const Environment& env = kNoEnv) {
  auto c = parse(text, env);
  return c ? std::string() : c.error().message();
}

TEST(DaemonConfig, EmbeddedDefaults) {
  auto c = default_config(kNoEnv, "/srv/pcl");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->gateway.state_dir, "/srv/pcl/state");
  EXPECT_EQ(c->wireguard.interface, "portcullis0");
  EXPECT_EQ(c->wireguard.listen_port, 30000);
  EXPECT_EQ(c->wireguard.backend, WireguardBackend::kAuto);
  EXPECT_EQ(c->wireguard.endpoint, "");
  EXPECT_EQ(c->wireguard.mtu, 1420);
  EXPECT_EQ(c->pool.network.to_string(), "10.255.0.0/16");
  EXPECT_EQ(c->pool.gateway.to_string(), "10.255.0.1");
  EXPECT_EQ(c->api.listen.to_string(), "127.0.0.1");
  EXPECT_EQ(c->api.port, 8443);
  EXPECT_EQ(c->api.tls_cert, "/srv/pcl/state/tls/cert.pem");
  EXPECT_EQ(c->api.tls_key, "/srv/pcl/state/tls/key.pem");
  EXPECT_EQ(c->api.max_body_bytes, 65536);
  EXPECT_EQ(c->policy.default_ports.size(), 10u) << "5 ports, tcp and udp each";
  EXPECT_TRUE(std::binary_search(c->policy.default_ports.begin(), c->policy.default_ports.end(),
                                 PortRule{Protocol::kUdp, 47002}));
  EXPECT_TRUE(c->policy.operator_networks.empty());
  EXPECT_EQ(c->reconciler.resync_interval_s, 30);
  EXPECT_EQ(c->reconciler.min_interval_ms, 200);
  EXPECT_EQ(c->tunnel.fresh_after_s, 180);
  EXPECT_EQ(c->tunnel.dead_after_s, 600);
  EXPECT_EQ(c->log.level, LogLevel::kInfo);
}

TEST(DaemonConfig, EmptyFileIsDefaults) {
  auto c = parse("");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(describe(*c), describe(*default_config(kNoEnv, "/work")));
}

TEST(DaemonConfig, FullFile) {
  auto c = parse(R"(
[gateway]
state_dir = "/var/lib/portcullis"

[wireguard]
interface = "wg-pcl"
listen_port = 51820
backend = "userspace"
endpoint = "gw.example.com:51820"
mtu = 1380

[pool]
network = "10.77.0.0/20"
gateway = "10.77.0.1"

[api]
listen = "0.0.0.0"
port = 9443
tls_cert = "/etc/portcullis/cert.pem"
tls_key = "keys/key.pem"
max_body_bytes = 1048576

[policy]
default_ports = ["5985/tcp", "3478/udp", "22"]
operator_networks = ["192.168.10.0/24", "fd00:1::/64"]

[reconciler]
resync_interval_s = 60
min_interval_ms = 0

[tunnel]
fresh_after_s = 150
dead_after_s = 900

[log]
level = "debug"
)");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->gateway.state_dir, "/var/lib/portcullis");
  EXPECT_EQ(c->wireguard.interface, "wg-pcl");
  EXPECT_EQ(c->wireguard.listen_port, 51820);
  EXPECT_EQ(c->wireguard.backend, WireguardBackend::kUserspace);
  EXPECT_EQ(c->wireguard.endpoint, "gw.example.com:51820");
  EXPECT_EQ(c->wireguard.mtu, 1380);
  EXPECT_EQ(c->pool.network.to_string(), "10.77.0.0/20");
  EXPECT_EQ(c->pool.gateway.to_string(), "10.77.0.1");
  EXPECT_EQ(c->api.listen.to_string(), "0.0.0.0");
  EXPECT_EQ(c->api.port, 9443);
  EXPECT_EQ(c->api.tls_cert, "/etc/portcullis/cert.pem");
  EXPECT_EQ(c->api.tls_key, "/work/keys/key.pem") << "relative to the working directory";
  EXPECT_EQ(c->api.max_body_bytes, 1048576);
  EXPECT_EQ(c->policy.default_ports, (std::vector<PortRule>{{Protocol::kTcp, 22},
                                                            {Protocol::kTcp, 5985},
                                                            {Protocol::kUdp, 22},
                                                            {Protocol::kUdp, 3478}}));
  ASSERT_EQ(c->policy.operator_networks.size(), 2u);
  EXPECT_EQ(c->policy.operator_networks[1].to_string(), "fd00:1::/64");
  EXPECT_EQ(c->reconciler.resync_interval_s, 60);
  EXPECT_EQ(c->reconciler.min_interval_ms, 0);
  EXPECT_EQ(c->tunnel.fresh_after_s, 150);
  EXPECT_EQ(c->tunnel.dead_after_s, 900);
  EXPECT_EQ(c->log.level, LogLevel::kDebug);

  // describe() prints TOML that parses back to the same configuration.
  auto again = parse(describe(*c));
  ASSERT_TRUE(again) << again.error().message() << "\n" << describe(*c);
  EXPECT_EQ(describe(*again), describe(*c));
}

TEST(DaemonConfig, EndpointForms) {
  EXPECT_EQ(rejection("[wireguard]\nendpoint = \"192.0.2.1:30000\""), "");
  EXPECT_EQ(rejection("[wireguard]\nendpoint = \"[2001:db8::1]:30000\""), "");
  EXPECT_EQ(rejection("[wireguard]\nendpoint = \"gw-1.example.org:1\""), "");
}

struct Rejection {
  const char* toml;
  const char* message;  // the whole error context
};

class DaemonConfigRejects : public ::testing::TestWithParam<Rejection> {};

TEST_P(DaemonConfigRejects, WithKeyAndLine) {
  auto c = parse(GetParam().toml);
  ASSERT_FALSE(c) << GetParam().toml;
  EXPECT_EQ(c.error().errno_value(), EINVAL);
  EXPECT_EQ(c.error().context(), std::string("config 'test.toml': ") + GetParam().message);
}

INSTANTIATE_TEST_SUITE_P(
    All, DaemonConfigRejects,
    ::testing::Values(
        // Structure.
        Rejection{"[gateway]\nstate_dir = \"/x\"\n[apii]\nport = 1\n",
                  "[apii]: unknown section (line 3)"},
        Rejection{"port = 8443\n",
                  "port: unknown key outside any section; settings belong in a section such as "
                  "[api] (line 1)"},
        Rejection{"api = 5\n", "api: expected a table [api] (line 1)"},
        Rejection{"[[api]]\nport = 1\n", "api: expected a table [api] (line 1)"},
        Rejection{"[api]\nprot = 8443\n", "api.prot: unknown key (line 2)"},
        // Types.
        Rejection{"\n[api]\n\n\n\n\nport = \"8443\"\n",
                  "api.port: expected an integer from 1 to 65535 (line 7)"},
        Rejection{"[api]\nport = 8443.0\n",
                  "api.port: expected an integer from 1 to 65535 (line 2)"},
        Rejection{"[api]\nport = true\n", "api.port: expected an integer from 1 to 65535 (line 2)"},
        Rejection{"[gateway]\nstate_dir = 5\n", "gateway.state_dir: expected a string (line 2)"},
        Rejection{"[policy]\ndefault_ports = \"5985\"\n",
                  "policy.default_ports: expected an array of strings (line 2)"},
        Rejection{"[policy]\ndefault_ports = [5985]\n",
                  "policy.default_ports: expected an array of strings (line 2)"},
        Rejection{"[policy]\noperator_networks = [\"10.0.0.0/8\",\n  7]\n",
                  "policy.operator_networks: expected an array of strings (line 3)"},
        // Ranges.
        Rejection{"[api]\nport = 0\n",
                  "api.port: expected an integer from 1 to 65535, got 0 (line 2)"},
        Rejection{"[api]\nport = 65536\n",
                  "api.port: expected an integer from 1 to 65535, got 65536 (line 2)"},
        Rejection{"[wireguard]\nlisten_port = -1\n",
                  "wireguard.listen_port: expected an integer from 1 to 65535, got -1 (line 2)"},
        Rejection{"[wireguard]\nmtu = 100\n",
                  "wireguard.mtu: expected an integer from 576 to 9000, got 100 (line 2)"},
        Rejection{"[api]\nmax_body_bytes = 10\n",
                  "api.max_body_bytes: expected an integer from 1024 to 16777216, got 10 (line 2)"},
        Rejection{
            "[reconciler]\nresync_interval_s = 0\n",
            "reconciler.resync_interval_s: expected an integer from 1 to 86400, got 0 (line 2)"},
        Rejection{
            "[reconciler]\nmin_interval_ms = 60001\n",
            "reconciler.min_interval_ms: expected an integer from 0 to 60000, got 60001 (line 2)"},
        Rejection{"[tunnel]\nfresh_after_s = 0\n",
                  "tunnel.fresh_after_s: expected an integer from 1 to 86400, got 0 (line 2)"},
        Rejection{"[tunnel]\ndead_after_s = 604801\n",
                  "tunnel.dead_after_s: expected an integer from 1 to 604800, got 604801 (line 2)"},
        // Values.
        Rejection{"[gateway]\nstate_dir = \"\"\n", "gateway.state_dir: must not be empty (line 2)"},
        Rejection{"[wireguard]\ninterface = \"portcullis-gateway0\"\n",
                  "wireguard.interface: 'portcullis-gateway0' is not an interface name (1 to 15 "
                  "characters: letters, digits, '-', '_', '.') (line 2)"},
        Rejection{"[wireguard]\ninterface = \"wg/0\"\n",
                  "wireguard.interface: 'wg/0' is not an interface name (1 to 15 characters: "
                  "letters, digits, '-', '_', '.') (line 2)"},
        Rejection{"[wireguard]\nbackend = \"bpf\"\n",
                  "wireguard.backend: expected one of auto, kernel, userspace, got 'bpf' (line 2)"},
        Rejection{"[wireguard]\nendpoint = \"gw.example.com\"\n",
                  "wireguard.endpoint: 'gw.example.com' is not host:port (e.g. "
                  "\"gw.example.com:30000\") (line 2)"},
        Rejection{"[wireguard]\nendpoint = \"gw.example.com:0\"\n",
                  "wireguard.endpoint: 'gw.example.com:0' is not host:port (e.g. "
                  "\"gw.example.com:30000\") (line 2)"},
        Rejection{"[wireguard]\nendpoint = \"2001:db8::1:30000\"\n",
                  "wireguard.endpoint: '2001:db8::1:30000' is not host:port (e.g. "
                  "\"gw.example.com:30000\"); put an IPv6 address in brackets (line 2)"},
        Rejection{"[pool]\nnetwork = \"10.255.0.0\"\n",
                  "pool.network: '10.255.0.0' is not a network in CIDR form (e.g. \"10.0.0.0/8\") "
                  "(line 2)"},
        Rejection{"[pool]\nnetwork = \"10.255.0.1/16\"\n",
                  "pool.network: '10.255.0.1/16' has host bits set (did you mean 10.255.0.0/16?) "
                  "(line 2)"},
        Rejection{"[pool]\nnetwork = \"fd00::/64\"\n",
                  "pool.network: 'fd00::/64' is not an IPv4 network (line 2)"},
        Rejection{"[pool]\nnetwork = \"10.0.0.0/31\"\n",
                  "pool.network: '10.0.0.0/31': the prefix length must be from /8 to /30 (line 2)"},
        Rejection{"[pool]\ngateway = \"10.255.0.300\"\n",
                  "pool.gateway: '10.255.0.300' is not an IPv4 address (line 2)"},
        Rejection{"[api]\nlisten = \"localhost\"\n",
                  "api.listen: 'localhost' is not an IP address (host names are not resolved) "
                  "(line 2)"},
        Rejection{"[policy]\ndefault_ports = [\"5985\", \"70000\"]\n",
                  "policy.default_ports: port rule '70000': the port is out of range (expected "
                  "PORT, PORT/tcp or PORT/udp with PORT from 1 to 65535) (line 2)"},
        Rejection{"[policy]\ndefault_ports = [\"22/sctp\"]\n",
                  "policy.default_ports: port rule '22/sctp': the protocol must be tcp or udp "
                  "(expected PORT, PORT/tcp or PORT/udp with PORT from 1 to 65535) (line 2)"},
        Rejection{"[policy]\ndefault_ports = [\"5985\", \"5985/udp\"]\n",
                  "policy.default_ports: port rule '5985/udp' repeats 5985/udp from '5985' "
                  "(line 2)"},
        Rejection{"[policy]\noperator_networks = [\"192.168.1.1/24\"]\n",
                  "policy.operator_networks: '192.168.1.1/24' has host bits set (did you mean "
                  "192.168.1.0/24?) (line 2)"},
        Rejection{"[policy]\noperator_networks = [\"10.1.0.0/16\", \"10.1.0.0/16\"]\n",
                  "policy.operator_networks: '10.1.0.0/16' is listed twice (line 2)"},
        Rejection{"[log]\nlevel = \"verbose\"\n",
                  "log.level: expected one of error, warning, notice, info, debug, got 'verbose' "
                  "(line 2)"},
        // Across keys.
        Rejection{"[pool]\ngateway = \"10.1.0.1\"\n",
                  "pool.gateway: 10.1.0.1 is outside pool.network 10.255.0.0/16"},
        Rejection{"[pool]\ngateway = \"10.255.0.0\"\n",
                  "pool.gateway: 10.255.0.0 is the network or broadcast address of 10.255.0.0/16"},
        Rejection{"[pool]\ngateway = \"10.255.255.255\"\n",
                  "pool.gateway: 10.255.255.255 is the network or broadcast address of "
                  "10.255.0.0/16"},
        Rejection{"[policy]\noperator_networks = [\"10.0.0.0/8\"]\n",
                  "policy.operator_networks: 10.0.0.0/8 overlaps pool.network 10.255.0.0/16; "
                  "agents must never count as operators"},
        Rejection{"[policy]\noperator_networks = [\"10.255.3.0/24\"]\n",
                  "policy.operator_networks: 10.255.3.0/24 overlaps pool.network 10.255.0.0/16; "
                  "agents must never count as operators"},
        Rejection{"[tunnel]\nfresh_after_s = 600\ndead_after_s = 600\n",
                  "tunnel.dead_after_s: must be greater than tunnel.fresh_after_s (600), got 600"},
        Rejection{"[api]\ntls_cert = \"/x/tls.pem\"\ntls_key = \"/x/tls.pem\"\n",
                  "api.tls_key: must be a different file from api.tls_cert (/x/tls.pem)"}));

TEST(DaemonConfig, SyntaxErrorsNameTheLine) {
  auto c = parse("[api]\nport = 8443\nport = 9443\n");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("(line 3"), std::string::npos) << c.error().message();
  c = parse("[api\n");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("config 'test.toml': "), std::string::npos);
  EXPECT_NE(c.error().message().find("line 1"), std::string::npos) << c.error().message();
  c = parse("[api]\nport = \n");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("line 2"), std::string::npos) << c.error().message();
}

TEST(DaemonConfig, EnvironmentOverridesFile) {
  Environment env = {{"PORTCULLIS_API_PORT", "9443"},
                     {"PORTCULLIS_GATEWAY_STATE_DIR", "/srv/pcl"},
                     {"PORTCULLIS_POLICY_DEFAULT_PORTS", "5985/tcp, 3478/udp"},
                     {"PORTCULLIS_POLICY_OPERATOR_NETWORKS", ""},
                     {"PORTCULLIS_WIREGUARD_BACKEND", "kernel"},
                     {"PORTCULLIS_LOG_LEVEL", "warning"},
                     {"PORTCULLIS_CONFIG", "/not/ours/to/judge"},
                     {"HOME", "/root"}};
  auto c = parse("[api]\nport = 8000\n[policy]\noperator_networks = [\"192.0.2.0/24\"]\n", env);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->api.port, 9443);
  EXPECT_EQ(c->gateway.state_dir, "/srv/pcl");
  EXPECT_EQ(c->api.tls_cert, "/srv/pcl/tls/cert.pem") << "derived after the override";
  EXPECT_EQ(c->policy.default_ports,
            (std::vector<PortRule>{{Protocol::kTcp, 5985}, {Protocol::kUdp, 3478}}));
  EXPECT_TRUE(c->policy.operator_networks.empty()) << "an empty variable is an empty list";
  EXPECT_EQ(c->wireguard.backend, WireguardBackend::kKernel);
  EXPECT_EQ(c->log.level, LogLevel::kWarning);
}

TEST(DaemonConfig, EnvironmentRejections) {
  auto msg = [](Environment env) {
    auto c = default_config(env, "/work");
    return c ? std::string() : c.error().context();
  };
  EXPECT_EQ(msg({{"PORTCULLIS_API_PORT", "abc"}}),
            "api.port: expected an integer from 1 to 65535, got 'abc' (PORTCULLIS_API_PORT)");
  EXPECT_EQ(msg({{"PORTCULLIS_API_PORT", ""}}),
            "api.port: expected an integer from 1 to 65535, got '' (PORTCULLIS_API_PORT)");
  EXPECT_EQ(msg({{"PORTCULLIS_API_PORT", "8443 "}}),
            "api.port: expected an integer from 1 to 65535, got '8443 ' (PORTCULLIS_API_PORT)");
  EXPECT_EQ(msg({{"PORTCULLIS_API_PORT", "70000"}}),
            "api.port: expected an integer from 1 to 65535, got 70000 (PORTCULLIS_API_PORT)");
  EXPECT_EQ(msg({{"PORTCULLIS_API_PROT", "1"}}),
            "PORTCULLIS_API_PROT: unknown setting (environment)");
  EXPECT_EQ(msg({{"PORTCULLIS_POLICY_DEFAULT_PORTS", "5985,,22"}}),
            "policy.default_ports: empty entry in comma-separated list '5985,,22' "
            "(PORTCULLIS_POLICY_DEFAULT_PORTS)");
  EXPECT_EQ(msg({{"PORTCULLIS_POLICY_DEFAULT_PORTS", "5985,"}}),
            "policy.default_ports: empty entry in comma-separated list '5985,' "
            "(PORTCULLIS_POLICY_DEFAULT_PORTS)");
  EXPECT_EQ(msg({{"PORTCULLIS_POOL_GATEWAY", "10.0.0.1"}}),
            "pool.gateway: 10.0.0.1 is outside pool.network 10.255.0.0/16");
  EXPECT_EQ(msg({{"PORTCULLIS_WIREGUARD_BACKEND", "Kernel"}}),
            "wireguard.backend: expected one of auto, kernel, userspace, got 'Kernel' "
            "(PORTCULLIS_WIREGUARD_BACKEND)");
}

class ConfigFileTest : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    auto p = dir_.file(name);
    std::ofstream(p) << text;
    return p;
  }
  portcullis::testing::TempDir dir_{"pcl-config"};
};

TEST_F(ConfigFileTest, LoadsAFile) {
  auto path = write("portcullisd.toml", "[api]\nport = 9000\n");
  auto c = load_config(path, kNoEnv, "/work");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->api.port, 9000);
}

TEST_F(ConfigFileTest, ErrorsNameTheFile) {
  auto path = write("bad.toml", "[api]\nport = \"x\"\n");
  auto c = load_config(path, kNoEnv, "/work");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().context(),
            "config '" + path + "': api.port: expected an integer from 1 to 65535 (line 2)");
}

TEST_F(ConfigFileTest, MissingExplicitFileIsAnError) {
  auto c = load_config(dir_.file("nope.toml"), kNoEnv, "/work");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().errno_value(), ENOENT);
  EXPECT_NE(c.error().message().find("nope.toml"), std::string::npos);
}

TEST_F(ConfigFileTest, MissingDefaultFileMeansDefaults) {
  // Meaningful only where the default path does not exist (as on build machines).
  if (::access(kDefaultConfigPath, F_OK) == 0) GTEST_SKIP() << kDefaultConfigPath << " exists";
  auto c = load_config("", {{"PORTCULLIS_API_PORT", "9999"}}, "/work");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->api.port, 9999) << "the environment still applies";
  EXPECT_EQ(c->gateway.state_dir, "/work/state");
}

TEST_F(ConfigFileTest, DirectoryIsAnError) {
  auto c = load_config(dir_.path().string(), kNoEnv, "/work");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().errno_value(), EISDIR) << c.error().message();
}

TEST(Describe, ListsEverySectionAndNoSurprises) {
  auto c = default_config(kNoEnv, "/srv");
  ASSERT_TRUE(c);
  auto text = describe(*c);
  for (const char* s :
       {"[gateway]", "[wireguard]", "[pool]", "[api]", "[policy]", "[reconciler]", "[tunnel]",
        "[log]", "state_dir = \"/srv/state\"", "port = 8443", "network = \"10.255.0.0/16\"",
        "backend = \"auto\"", "5985/tcp", "47002/udp"}) {
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
  }
}

TEST(EnvironmentFrom, SplitsAtFirstEquals) {
  char a[] = "A=1";
  char b[] = "B=x=y";
  char c[] = "NOEQUALS";
  char* envp[] = {a, b, c, nullptr};
  auto env = environment_from(envp);
  EXPECT_EQ(env.size(), 2u);
  EXPECT_EQ(env["A"], "1");
  EXPECT_EQ(env["B"], "x=y");
}

}  // namespace
}  // namespace portcullis::config
