#pragma once
// portcullis-agent's configuration: embedded defaults, then the TOML file, then
// PORTCULLIS_AGENT_* environment overrides, then cross-field checks. Every rejection names the key
// and where the value came from: "mtu: expected an integer from 1280 to 9000 (line 4)",
// "... (PORTCULLIS_AGENT_MTU)".
//
// The file (/etc/portcullis/agent.toml; keys at the top level, all optional except the first two):
//   gateway_url = "https://gw.example.net:8443"   # the gateway's HTTPS API
//   gateway_pin = "sha256//<base64>"              # SHA-256 of the gateway's TLS public key
//                                                 # (SPKI), as portcullisd logs it (tls_pin=),
//                 or "AB:CD:...:EF"               # SHA-256 of its whole certificate (DER), as
//                                                 # `openssl x509 -fingerprint -sha256` prints it
//   enrollment_code = ""          # single-use code: approval without waiting for an operator
//   hostname = ""                 # "" = this machine's host name
//   interface = "portcullis"
//   mtu = 1420
//   backend = "auto"              # auto | kernel | userspace (wireguard-go)
//   wireguard_go = "wireguard-go" # the userspace implementation (path or name in PATH)
//   state_dir = "/var/lib/portcullis-agent"
//   user = "portcullis-agent"     # the worker runs as this user after the split (privileges.h);
//                                 # missing: "nobody", with a warning. Never root.
//   health_port = 9273            # GET /healthz, /metrics on 127.0.0.1; 0 = off
//   ensure_interval_s = 300       # periodic re-ensure (±10 % jitter)
//   heartbeat_interval_s = 60
//   poll_max_interval_s = 60      # cap of the enrollment poll backoff
//   handshake_max_age_s = 180     # a tunnel whose last handshake is older is re-ensured
//   log_level = "info"            # error | warning | notice | info | debug
//
// Environment: PORTCULLIS_AGENT_<KEY> in upper case (PORTCULLIS_AGENT_GATEWAY_URL=...). An
// unknown PORTCULLIS_AGENT_* variable is an error (a typo should not be silently ignored).

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "dataplane/base/log.h"
#include "dataplane/base/result.h"
#include "dataplane/wireguard/open_device.h"

namespace portcullis::agent {

inline constexpr const char* kDefaultConfigPath = "/etc/portcullis/agent.toml";

struct AgentConfig {
  std::string gateway_url;
  std::string gateway_pin;  // "sha256//<44 base64 characters>" or "AB:CD:...:EF" (32 bytes)
  std::string enrollment_code;
  std::string hostname;
  std::string interface = "portcullis";
  int mtu = 1420;
  wg::Backend backend = wg::Backend::kAuto;
  std::string wireguard_go = "wireguard-go";
  std::string state_dir = "/var/lib/portcullis-agent";
  std::string user = "portcullis-agent";
  int health_port = 9273;
  int ensure_interval_s = 300;
  int heartbeat_interval_s = 60;
  int poll_max_interval_s = 60;
  int handshake_max_age_s = 180;
  LogLevel log_level = LogLevel::kInfo;
};

// The 32 bytes of a certificate fingerprint pin "AB:CD:...:EF" (either case); none otherwise.
std::optional<std::array<std::uint8_t, 32>> parse_certificate_fingerprint(std::string_view s);

using Environment = std::map<std::string, std::string>;
Environment environment_from(char** envp);

// `path` empty: the default path. The file must exist unless every required key comes from the
// environment and `path` is empty. `cwd` resolves a relative state_dir; empty: the working
// directory.
Result<AgentConfig> load_agent_config(const std::string& path, const Environment& env,
                                      const std::string& cwd = "");

// The effective configuration as "key = value" lines (the enrollment code shown as set / unset).
std::string describe(const AgentConfig& config);

}  // namespace portcullis::agent
