#include "agent/agent_config.h"

#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <variant>

// Built header-only with TOML_EXCEPTIONS=0 (see CMakeLists.txt), as controlplane/config does:
// parse() returns a parse_result and nothing here throws.
#include <toml++/toml.h>

#include "dataplane/base/key.h"
#include "dataplane/link/links.h"

namespace portcullis::agent {
namespace {

using Value = std::variant<std::int64_t, std::string>;
using Setter = std::function<std::optional<std::string>(AgentConfig&, const Value&)>;

struct Field {
  std::string_view key;
  bool is_int;
  std::int64_t min = 0;
  std::int64_t max = 0;
  Setter set;
};

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

Field int_field(std::string_view key, std::int64_t min, std::int64_t max, int AgentConfig::*m) {
  return {key, true, min, max, [m](AgentConfig& c, const Value& v) -> std::optional<std::string> {
            c.*m = static_cast<int>(std::get<std::int64_t>(v));
            return std::nullopt;
          }};
}

Field string_field(std::string_view key,
                   std::function<std::optional<std::string>(AgentConfig&, const std::string&)> f) {
  return {key, false, 0, 0, [f = std::move(f)](AgentConfig& c, const Value& v) {
            return f(c, std::get<std::string>(v));
          }};
}

std::optional<std::string> check_url(const std::string& s) {
  const std::string why =
      in_quotes(s) + " is not an https:// URL (e.g. \"https://gw.example:8443\")";
  if (s.rfind("https://", 0) != 0 || s.size() <= 8) return why;
  for (unsigned char ch : s) {
    if (ch <= ' ' || ch >= 0x7f) return why + ": no spaces or control characters";
  }
  auto rest = std::string_view(s).substr(8);
  auto slash = rest.find('/');
  if (slash == 0) return why;
  if (slash != std::string_view::npos && slash + 1 != rest.size()) {
    return why + ": give the gateway's base URL without a path";
  }
  return std::nullopt;
}

std::optional<std::string> check_pin(const std::string& s) {
  constexpr std::string_view kPrefix = "sha256//";
  const std::string why =
      in_quotes(s) +
      " is not a public key pin: expected \"sha256//\" and 44 base64 characters, as portcullisd "
      "logs it at start (tls_pin=), or a certificate fingerprint \"AB:CD:...\" (32 bytes), as "
      "`openssl x509 -noout -fingerprint -sha256` prints it";
  if (s.rfind(kPrefix, 0) == 0) {
    // A SHA-256 digest is 32 bytes, like a WireGuard key: the same strict base64 rules apply.
    if (!decode_key_base64(std::string_view(s).substr(kPrefix.size()))) return why;
    return std::nullopt;
  }
  if (!parse_certificate_fingerprint(s)) return why;
  return std::nullopt;
}

// A user name as useradd and systemd-sysusers accept it: [a-z_][a-z0-9_-]*, at most 32.
std::optional<std::string> check_user(const std::string& s) {
  const std::string why = in_quotes(s) + " is not a user name (e.g. \"portcullis-agent\")";
  if (s.empty() || s.size() > 32) return why;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const bool ok =
        (ch >= 'a' && ch <= 'z') || ch == '_' || (i > 0 && ((ch >= '0' && ch <= '9') || ch == '-'));
    if (!ok) return why;
  }
  if (s == "root") return "must not be root: the worker is the part that does not need it";
  return std::nullopt;
}

const std::vector<Field>& fields() {
  using C = AgentConfig;
  using R = std::optional<std::string>;
  static const std::vector<Field> kFields = {
      string_field("gateway_url",
                   [](C& c, const std::string& s) -> R {
                     if (auto why = check_url(s)) return why;
                     c.gateway_url = s.back() == '/' ? s.substr(0, s.size() - 1) : s;
                     return std::nullopt;
                   }),
      string_field("gateway_pin",
                   [](C& c, const std::string& s) -> R {
                     if (auto why = check_pin(s)) return why;
                     c.gateway_pin = s;
                     return std::nullopt;
                   }),
      string_field("enrollment_code",
                   [](C& c, const std::string& s) -> R {
                     if (s.size() > 128) return "longer than 128 characters";
                     c.enrollment_code = s;
                     return std::nullopt;
                   }),
      string_field("hostname",
                   [](C& c, const std::string& s) -> R {
                     if (s.size() > 253) return "longer than 253 characters";
                     c.hostname = s;
                     return std::nullopt;
                   }),
      string_field("interface",
                   [](C& c, const std::string& s) -> R {
                     if (auto ok = link::validate_ifname(s); !ok) return ok.error().context();
                     c.interface = s;
                     return std::nullopt;
                   }),
      int_field("mtu", 1280, 9000, &C::mtu),
      string_field("backend",
                   [](C& c, const std::string& s) -> R {
                     auto b = wg::parse_backend(s);
                     if (!b) return "expected one of auto, kernel, userspace, got " + in_quotes(s);
                     c.backend = *b;
                     return std::nullopt;
                   }),
      string_field("wireguard_go",
                   [](C& c, const std::string& s) -> R {
                     if (s.empty()) return "must not be empty";
                     c.wireguard_go = s;
                     return std::nullopt;
                   }),
      string_field("state_dir",
                   [](C& c, const std::string& s) -> R {
                     if (s.empty()) return "must not be empty";
                     c.state_dir = s;
                     return std::nullopt;
                   }),
      string_field("user",
                   [](C& c, const std::string& s) -> R {
                     if (auto why = check_user(s)) return why;
                     c.user = s;
                     return std::nullopt;
                   }),
      int_field("health_port", 0, 65535, &C::health_port),
      int_field("ensure_interval_s", 5, 86400, &C::ensure_interval_s),
      int_field("heartbeat_interval_s", 1, 86400, &C::heartbeat_interval_s),
      int_field("poll_max_interval_s", 1, 3600, &C::poll_max_interval_s),
      int_field("handshake_max_age_s", 30, 86400, &C::handshake_max_age_s),
      string_field(
          "log_level",
          [](C& c, const std::string& s) -> R {
            static const std::map<std::string, LogLevel> kLevels = {{"error", LogLevel::kError},
                                                                    {"warning", LogLevel::kWarning},
                                                                    {"notice", LogLevel::kNotice},
                                                                    {"info", LogLevel::kInfo},
                                                                    {"debug", LogLevel::kDebug}};
            auto it = kLevels.find(s);
            if (it == kLevels.end()) {
              return "expected one of error, warning, notice, info, debug, got " + in_quotes(s);
            }
            c.log_level = it->second;
            return std::nullopt;
          }),
  };
  return kFields;
}

const Field* find_field(std::string_view key) {
  for (const auto& f : fields()) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

std::string env_name(std::string_view key) {
  std::string name = "PORTCULLIS_AGENT_";
  for (char ch : key) name.push_back(ch >= 'a' && ch <= 'z' ? static_cast<char>(ch - 32) : ch);
  return name;
}

Status apply(AgentConfig& c, const Field& f, const Value& v, const std::string& where) {
  auto error = [&](const std::string& why) {
    return fail_invalid(std::string(f.key) + ": " + why + " (" + where + ")");
  };
  if (f.is_int) {
    auto n = std::get<std::int64_t>(v);
    if (n < f.min || n > f.max) {
      return error("expected an integer from " + std::to_string(f.min) + " to " +
                   std::to_string(f.max) + ", got " + std::to_string(n));
    }
  }
  if (auto why = f.set(c, v)) return error(*why);
  return {};
}

Status apply_toml(AgentConfig& c, const toml::table& root) {
  for (auto&& [key, node] : root) {
    const std::string name(key.str());
    const std::string where = "line " + std::to_string(node.source().begin.line);
    const Field* f = find_field(name);
    if (f == nullptr) {
      if (node.is_table()) {
        return fail_invalid("[" + name + "]: unknown section; agent settings are top-level keys (" +
                            where + ")");
      }
      return fail_invalid(name + ": unknown key (" + where + ")");
    }
    Value v;
    if (f->is_int) {
      auto n = node.value_exact<std::int64_t>();
      if (!n) return fail_invalid(name + ": expected an integer (" + where + ")");
      v = *n;
    } else {
      auto s = node.value_exact<std::string>();
      if (!s) return fail_invalid(name + ": expected a string (" + where + ")");
      v = *s;
    }
    if (auto r = apply(c, *f, v, where); !r) return r;
  }
  return {};
}

Status apply_env(AgentConfig& c, const Environment& env) {
  for (const auto& [name, text] : env) {
    if (name.rfind("PORTCULLIS_AGENT_", 0) != 0) continue;
    const Field* f = nullptr;
    for (const auto& candidate : fields()) {
      if (env_name(candidate.key) == name) f = &candidate;
    }
    if (f == nullptr) return fail_invalid(name + ": unknown setting (environment)");
    Value v = text;
    if (f->is_int) {
      std::int64_t n = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
      if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
        return fail_invalid(std::string(f->key) + ": expected an integer, got " + in_quotes(text) +
                            " (" + name + ")");
      }
      v = n;
    }
    if (auto r = apply(c, *f, v, name); !r) return r;
  }
  return {};
}

}  // namespace

std::optional<std::array<std::uint8_t, 32>> parse_certificate_fingerprint(std::string_view s) {
  // "AB:CD:...:EF": 32 pairs of hex digits, 31 colons.
  if (s.size() != 32 * 3 - 1) return std::nullopt;
  auto nibble = [](char ch) -> int {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
  };
  std::array<std::uint8_t, 32> out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(s[i * 3]), lo = nibble(s[i * 3 + 1]);
    if (hi < 0 || lo < 0 || (i + 1 < out.size() && s[i * 3 + 2] != ':')) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

Environment environment_from(char** envp) {
  Environment env;
  for (char** e = envp; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

Result<AgentConfig> load_agent_config(const std::string& path, const Environment& env,
                                      const std::string& cwd) {
  AgentConfig c;
  const std::string file = path.empty() ? kDefaultConfigPath : path;
  std::error_code ec;
  const bool exists = std::filesystem::exists(file, ec);
  if (exists || !path.empty()) {
    toml::parse_result parsed = toml::parse_file(file);
    if (!parsed) {
      const auto& err = parsed.error();
      if (!exists) {
        return fail_errno(ENOENT, "config file '" + file + "' does not exist");
      }
      return fail_invalid("config file '" + file + "': " + std::string(err.description()) +
                          " (line " + std::to_string(err.source().begin.line) + ")");
    }
    if (auto r = apply_toml(c, parsed.table()); !r) {
      return fail(std::move(r.error()).wrap("config file '" + file + "'"));
    }
  }
  if (auto r = apply_env(c, env); !r) return fail(std::move(r.error()));

  if (c.gateway_url.empty()) {
    return fail_invalid("gateway_url: not set; give the gateway's HTTPS API URL in " + file +
                        " or PORTCULLIS_AGENT_GATEWAY_URL");
  }
  if (c.gateway_pin.empty()) {
    return fail_invalid(
        "gateway_pin: not set; copy tls_pin=sha256//... from the gateway's start "
        "log into " +
        file + " or PORTCULLIS_AGENT_GATEWAY_PIN");
  }
  std::filesystem::path dir(c.state_dir);
  if (dir.is_relative()) {
    dir = (cwd.empty() ? std::filesystem::current_path(ec) : std::filesystem::path(cwd)) / dir;
  }
  c.state_dir = dir.lexically_normal().string();
  if (c.state_dir.size() > 1 && c.state_dir.back() == '/') c.state_dir.pop_back();
  return c;
}

std::string describe(const AgentConfig& c) {
  std::ostringstream s;
  s << "gateway_url = \"" << c.gateway_url << "\"\n"
    << "gateway_pin = \"" << c.gateway_pin << "\"\n"
    << "enrollment_code = " << (c.enrollment_code.empty() ? "(unset)" : "(set)") << "\n"
    << "hostname = \"" << c.hostname << "\"\n"
    << "interface = \"" << c.interface << "\"\n"
    << "mtu = " << c.mtu << "\n"
    << "backend = \"" << wg::backend_name(c.backend) << "\"\n"
    << "wireguard_go = \"" << c.wireguard_go << "\"\n"
    << "state_dir = \"" << c.state_dir << "\"\n"
    << "user = \"" << c.user << "\"\n"
    << "health_port = " << c.health_port << "\n"
    << "ensure_interval_s = " << c.ensure_interval_s << "\n"
    << "heartbeat_interval_s = " << c.heartbeat_interval_s << "\n"
    << "poll_max_interval_s = " << c.poll_max_interval_s << "\n"
    << "handshake_max_age_s = " << c.handshake_max_age_s << "\n";
  return s.str();
}

}  // namespace portcullis::agent
