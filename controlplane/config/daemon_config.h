#pragma once
// portcullisd's configuration: embedded defaults, then the TOML file, then PORTCULLIS_* environment
// overrides, then cross-field validation. Every rejection names the key and where the value came
// from: "api.port: expected an integer from 1 to 65535 (line 7)", "... (PORTCULLIS_API_PORT)".
//
// The file (every key optional; these are the embedded defaults):
//   [gateway]
//   state_dir = "./state"            # relative paths are resolved against the working directory
//   [wireguard]
//   interface = "portcullis0"
//   listen_port = 30000              # UDP
//   backend = "auto"                 # auto | kernel | userspace (wireguard-go)
//   endpoint = ""                    # host:port agents dial; "" = derived, see Wireguard::endpoint
//   mtu = 1420
//   [pool]
//   network = "10.255.0.0/16"
//   gateway = "10.255.0.1"
//   [api]
//   listen = "127.0.0.1"
//   port = 8443
//   tls_cert = ""                    # "" = <state_dir>/tls/cert.pem
//   tls_key = ""                     # "" = <state_dir>/tls/key.pem
//   max_body_bytes = 65536
//   [policy]
//   default_ports = ["5985", "5986", "5900", "3478", "47002"]  # "N" = tcp and udp
//   operator_networks = []           # CIDRs forwarded to agents besides the gateway itself
//   [reconciler]
//   resync_interval_s = 30
//   min_interval_ms = 200
//   [tunnel]
//   fresh_after_s = 180              # handshake at most this old: fresh
//   dead_after_s = 600               # older than this: dead; in between: stale
//   [log]
//   level = "info"                   # error | warning | notice | info | debug
//
// Environment: PORTCULLIS_<SECTION>_<KEY> in upper case (PORTCULLIS_API_PORT=9443,
// PORTCULLIS_GATEWAY_STATE_DIR=/srv/pcl); lists are comma-separated
// (PORTCULLIS_POLICY_DEFAULT_PORTS=5985/tcp,3478/udp). A variable that names a known section but
// an unknown key is an error (a typo should not be silently ignored); other PORTCULLIS_*
// variables are not ours to judge and are left alone.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "controlplane/state/store.h"
#include "dataplane/base/ip.h"
#include "dataplane/base/log.h"
#include "dataplane/base/result.h"

namespace portcullis::config {

inline constexpr const char* kDefaultConfigPath = "/etc/portcullis/portcullisd.toml";

enum class WireguardBackend { kAuto, kKernel, kUserspace };
const char* wireguard_backend_name(WireguardBackend b);  // "auto", "kernel", "userspace"

struct DaemonConfig {
  struct Gateway {
    std::string state_dir = "./state";  // absolute after loading
  } gateway;

  struct Wireguard {
    std::string interface = "portcullis0";
    std::uint16_t listen_port = 30000;
    WireguardBackend backend = WireguardBackend::kAuto;
    // "host:port" or "[v6]:port" that agents dial. Empty: derived at run time by the API, from
    // the host name the agent used to reach the HTTPS API, with listen_port.
    std::string endpoint;
    int mtu = 1420;
  } wireguard;

  struct Pool {
    IpPrefix network = *IpPrefix::parse("10.255.0.0/16");
    IpAddress gateway = *IpAddress::parse("10.255.0.1");
  } pool;

  struct Api {
    IpAddress listen = *IpAddress::parse("127.0.0.1");
    std::uint16_t port = 8443;
    std::string tls_cert;  // <state_dir>/tls/cert.pem after loading if not set
    std::string tls_key;   // <state_dir>/tls/key.pem after loading if not set
    std::int64_t max_body_bytes = 64 * 1024;
  } api;

  struct Policy {
    // The entries as written, and what they mean (sorted, unique).
    std::vector<std::string> default_port_entries = {"5985", "5986", "5900", "3478", "47002"};
    std::vector<state::PortRule> default_ports;  // filled by loading
    std::vector<IpPrefix> operator_networks;     // masked
  } policy;

  struct Reconciler {
    int resync_interval_s = 30;
    int min_interval_ms = 200;
  } reconciler;

  struct Tunnel {
    int fresh_after_s = 180;
    int dead_after_s = 600;
  } tunnel;

  struct Log {
    LogLevel level = LogLevel::kInfo;
  } log;
};

// Environment variables by name (injected so tests control them).
using Environment = std::map<std::string, std::string>;
Environment environment_from(char** envp);

// `path` empty: the default path, whose absence means embedded defaults. A path given explicitly
// must exist. `cwd` resolves relative paths (state_dir, tls_cert, tls_key); empty: the process's
// working directory.
Result<DaemonConfig> load_config(const std::string& path, const Environment& env,
                                 const std::string& cwd = "");

// The TOML text itself (no file); `source_name` names it in errors.
Result<DaemonConfig> parse_config(std::string_view toml_text, std::string_view source_name,
                                  const Environment& env, const std::string& cwd = "");

// Embedded defaults plus environment overrides (no file), validated.
Result<DaemonConfig> default_config(const Environment& env, const std::string& cwd = "");

// The effective configuration as TOML, for `portcullisd --check-config`. The configuration holds
// no secrets (key material lives in 0600 files named by path only).
std::string describe(const DaemonConfig& config);

Result<LogLevel> parse_log_level(std::string_view text);
const char* log_level_name(LogLevel level);

}  // namespace portcullis::config
