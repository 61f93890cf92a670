#include "controlplane/config/daemon_config.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>
#include <variant>

// Built header-only with TOML_EXCEPTIONS=0 (see CMakeLists.txt): parse() returns a parse_result
// and nothing here throws.
#include <toml++/toml.h>

#include "controlplane/state/port_rule.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::config {
namespace {

using List = std::vector<std::string>;
using Value = std::variant<std::int64_t, std::string, List>;
enum class Kind { kInt, kString, kList };

// Stores a value into the config; returns what is wrong with it (without key or location), or
// nothing.
using Setter = std::function<std::optional<std::string>(DaemonConfig&, const Value&)>;

struct Field {
  std::string_view section;
  std::string_view key;
  Kind kind;
  std::int64_t min = 0;  // kInt only
  std::int64_t max = 0;
  Setter set;
};

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string int_expectation(const Field& f) {
  return "expected an integer from " + std::to_string(f.min) + " to " + std::to_string(f.max);
}

std::string expectation(const Field& f) {
  switch (f.kind) {
    case Kind::kInt:
      return int_expectation(f);
    case Kind::kString:
      return "expected a string";
    case Kind::kList:
      return "expected an array of strings";
  }
  return "";
}

template <class T>
Setter int_setter(T DaemonConfig::*section, auto member) {
  return [section, member](DaemonConfig& c, const Value& v) -> std::optional<std::string> {
    (c.*section).*member = static_cast<std::remove_reference_t<decltype((c.*section).*member)>>(
        std::get<std::int64_t>(v));
    return std::nullopt;
  };
}

Field int_field(std::string_view section, std::string_view key, std::int64_t min, std::int64_t max,
                Setter set) {
  return Field{section, key, Kind::kInt, min, max, std::move(set)};
}

Field string_field(std::string_view section, std::string_view key,
                   std::function<std::optional<std::string>(DaemonConfig&, const std::string&)> f) {
  return Field{
      section, key, Kind::kString, 0, 0, [f = std::move(f)](DaemonConfig& c, const Value& v) {
        return f(c, std::get<std::string>(v));
      }};
}

Field list_field(std::string_view section, std::string_view key,
                 std::function<std::optional<std::string>(DaemonConfig&, const List&)> f) {
  return Field{
      section, key, Kind::kList, 0, 0, [f = std::move(f)](DaemonConfig& c, const Value& v) {
        return f(c, std::get<List>(v));
      }};
}

bool valid_interface_name(std::string_view name) {
  // IFNAMSIZ is 16 with the terminating NUL; '/' and whitespace are refused by the kernel, and
  // ':' marks an alias.
  if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool valid_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    if (!ok) return false;
  }
  return host.front() != '-' && host.front() != '.';
}

std::optional<std::uint16_t> parse_port_number(std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > 65535) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

std::optional<std::string> check_endpoint(std::string_view text) {
  if (text.empty()) return std::nullopt;  // derived
  const std::string why = in_quotes(text) + " is not host:port (e.g. \"gw.example.com:30000\")";
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return why;
  auto host = text.substr(0, colon);
  if (!parse_port_number(text.substr(colon + 1))) return why;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto a = IpAddress::parse(host.substr(1, host.size() - 2));
    if (!a || a->is_v4()) return why;
    return std::nullopt;
  }
  if (host.find(':') != std::string_view::npos) return why + "; put an IPv6 address in brackets";
  if (!valid_host_name(host)) return why;
  return std::nullopt;
}

Result<IpPrefix> parse_network(std::string_view text) {
  if (text.find('/') == std::string_view::npos) {
    return fail_invalid(in_quotes(text) + " is not a network in CIDR form (e.g. \"10.0.0.0/8\")");
  }
  auto p = IpPrefix::parse(text);
  if (!p) return fail_invalid(in_quotes(text) + " is not a network in CIDR form");
  if (p->masked() != *p) {
    return fail_invalid(in_quotes(text) + " has host bits set (did you mean " +
                        p->masked().to_string() + "?)");
  }
  return *p;
}

const std::vector<Field>& fields() {
  using C = DaemonConfig;
  static const std::vector<Field> kFields = {
      string_field("gateway", "state_dir",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     if (s.empty()) return "must not be empty";
                     c.gateway.state_dir = s;
                     return std::nullopt;
                   }),
      string_field("wireguard", "interface",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     if (!valid_interface_name(s)) {
                       return in_quotes(s) +
                              " is not an interface name (1 to 15 characters: letters, digits, "
                              "'-', '_', '.')";
                     }
                     c.wireguard.interface = s;
                     return std::nullopt;
                   }),
      int_field("wireguard", "listen_port", 1, 65535,
                int_setter(&C::wireguard, &C::Wireguard::listen_port)),
      string_field("wireguard", "backend",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     if (s == "auto") {
                       c.wireguard.backend = WireguardBackend::kAuto;
                     } else if (s == "kernel") {
                       c.wireguard.backend = WireguardBackend::kKernel;
                     } else if (s == "userspace") {
                       c.wireguard.backend = WireguardBackend::kUserspace;
                     } else {
                       return "expected one of auto, kernel, userspace, got " + in_quotes(s);
                     }
                     return std::nullopt;
                   }),
      string_field("wireguard", "endpoint",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     if (auto why = check_endpoint(s)) return why;
                     c.wireguard.endpoint = s;
                     return std::nullopt;
                   }),
      int_field("wireguard", "mtu", 576, 9000, int_setter(&C::wireguard, &C::Wireguard::mtu)),
      string_field("pool", "network",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     auto p = parse_network(s);
                     if (!p) return p.error().context();
                     if (!p->address().is_v4()) return in_quotes(s) + " is not an IPv4 network";
                     if (p->cidr() < 8 || p->cidr() > 30) {
                       return in_quotes(s) + ": the prefix length must be from /8 to /30";
                     }
                     c.pool.network = *p;
                     return std::nullopt;
                   }),
      string_field("pool", "gateway",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     auto a = IpAddress::parse(s);
                     if (!a || !a->is_v4()) return in_quotes(s) + " is not an IPv4 address";
                     c.pool.gateway = *a;
                     return std::nullopt;
                   }),
      string_field("api", "listen",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     auto a = IpAddress::parse(s);
                     if (!a)
                       return in_quotes(s) + " is not an IP address (host names are not resolved)";
                     c.api.listen = *a;
                     return std::nullopt;
                   }),
      int_field("api", "port", 1, 65535, int_setter(&C::api, &C::Api::port)),
      string_field("api", "tls_cert",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     c.api.tls_cert = s;
                     return std::nullopt;
                   }),
      string_field("api", "tls_key",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     c.api.tls_key = s;
                     return std::nullopt;
                   }),
      int_field("api", "max_body_bytes", 1024, 16 * 1024 * 1024,
                int_setter(&C::api, &C::Api::max_body_bytes)),
      list_field("policy", "default_ports",
                 [](C& c, const List& l) -> std::optional<std::string> {
                   auto rules = state::parse_port_rules(l);
                   if (!rules) return rules.error().context();
                   c.policy.default_port_entries = l;
                   c.policy.default_ports = std::move(*rules);
                   return std::nullopt;
                 }),
      list_field("policy", "operator_networks",
                 [](C& c, const List& l) -> std::optional<std::string> {
                   std::vector<IpPrefix> nets;
                   for (const auto& s : l) {
                     auto p = parse_network(s);
                     if (!p) return p.error().context();
                     if (std::find(nets.begin(), nets.end(), *p) != nets.end()) {
                       return in_quotes(s) + " is listed twice";
                     }
                     nets.push_back(*p);
                   }
                   c.policy.operator_networks = std::move(nets);
                   return std::nullopt;
                 }),
      int_field("reconciler", "resync_interval_s", 1, 86400,
                int_setter(&C::reconciler, &C::Reconciler::resync_interval_s)),
      int_field("reconciler", "min_interval_ms", 0, 60000,
                int_setter(&C::reconciler, &C::Reconciler::min_interval_ms)),
      int_field("tunnel", "fresh_after_s", 1, 86400,
                int_setter(&C::tunnel, &C::Tunnel::fresh_after_s)),
      int_field("tunnel", "dead_after_s", 1, 7 * 86400,
                int_setter(&C::tunnel, &C::Tunnel::dead_after_s)),
      string_field("log", "level",
                   [](C& c, const std::string& s) -> std::optional<std::string> {
                     auto l = parse_log_level(s);
                     if (!l) return l.error().context();
                     c.log.level = *l;
                     return std::nullopt;
                   }),
  };
  return kFields;
}

bool known_section(std::string_view s) {
  for (const auto& f : fields()) {
    if (f.section == s) return true;
  }
  return false;
}

const Field* find_field(std::string_view section, std::string_view key) {
  for (const auto& f : fields()) {
    if (f.section == section && f.key == key) return &f;
  }
  return nullptr;
}

std::string line_of(const toml::source_region& r) { return "line " + std::to_string(r.begin.line); }

Error field_error(const Field& f, const std::string& why, const std::string& where) {
  return Error::invalid(std::string(f.section) + "." + std::string(f.key) + ": " + why + " (" +
                        where + ")");
}

// Applies one value after checking its type and range.
Status apply(DaemonConfig& c, const Field& f, const Value& v, const std::string& where) {
  if (f.kind == Kind::kInt) {
    auto n = std::get<std::int64_t>(v);
    if (n < f.min || n > f.max) {
      return fail(field_error(f, int_expectation(f) + ", got " + std::to_string(n), where));
    }
  }
  if (auto why = f.set(c, v)) return fail(field_error(f, *why, where));
  return {};
}

Status apply_toml(DaemonConfig& c, const toml::table& root) {
  for (auto&& [section_key, section_node] : root) {
    const std::string name(section_key.str());
    const std::string where = line_of(section_key.source());
    if (!known_section(name)) {
      if (section_node.is_table()) {
        return fail_invalid("[" + name + "]: unknown section (" + where + ")");
      }
      return fail_invalid(name + ": unknown key outside any section; settings belong in a " +
                          "section such as [api] (" + where + ")");
    }
    const toml::table* table = section_node.as_table();
    if (table == nullptr)
      return fail_invalid(name + ": expected a table [" + name + "] (" + where + ")");
    for (auto&& [key, node] : *table) {
      const std::string key_name(key.str());
      const Field* f = find_field(name, key_name);
      if (f == nullptr) {
        return fail_invalid(name + "." + key_name + ": unknown key (" + line_of(key.source()) +
                            ")");
      }
      const std::string at = line_of(node.source());
      Value v;
      switch (f->kind) {
        case Kind::kInt: {
          auto n = node.value_exact<std::int64_t>();
          if (!n) return fail(field_error(*f, expectation(*f), at));
          v = *n;
          break;
        }
        case Kind::kString: {
          auto s = node.value_exact<std::string>();
          if (!s) return fail(field_error(*f, expectation(*f), at));
          v = *s;
          break;
        }
        case Kind::kList: {
          const toml::array* a = node.as_array();
          if (a == nullptr) return fail(field_error(*f, expectation(*f), at));
          List l;
          for (const auto& element : *a) {
            auto s = element.value_exact<std::string>();
            if (!s) return fail(field_error(*f, expectation(*f), line_of(element.source())));
            l.push_back(*s);
          }
          v = std::move(l);
          break;
        }
      }
      if (auto r = apply(c, *f, v, at); !r) return r;
    }
  }
  return {};
}

std::string env_name(const Field& f) {
  std::string name = "PORTCULLIS_";
  for (char ch : std::string(f.section) + "_" + std::string(f.key)) {
    name.push_back(static_cast<char>(ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch));
  }
  return name;
}

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return "";
  auto e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

Status apply_env(DaemonConfig& c, const Environment& env) {
  // Typos first: PORTCULLIS_<KNOWN SECTION>_<UNKNOWN KEY>.
  for (const auto& [name, value] : env) {
    if (name.rfind("PORTCULLIS_", 0) != 0) continue;
    bool matched = false;
    bool section_matched = false;
    for (const auto& f : fields()) {
      if (env_name(f) == name) matched = true;
      std::string prefix = "PORTCULLIS_";
      for (char ch : f.section) prefix.push_back(static_cast<char>(ch - 'a' + 'A'));
      prefix.push_back('_');
      if (name.rfind(prefix, 0) == 0) section_matched = true;
    }
    if (section_matched && !matched) {
      return fail_invalid(name + ": unknown setting (environment)");
    }
  }
  for (const auto& f : fields()) {
    const std::string name = env_name(f);
    auto it = env.find(name);
    if (it == env.end()) continue;
    const std::string& text = it->second;
    Value v;
    switch (f.kind) {
      case Kind::kInt: {
        std::int64_t n = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
          return fail(field_error(f, expectation(f) + ", got " + in_quotes(text), name));
        }
        v = n;
        break;
      }
      case Kind::kString:
        v = text;
        break;
      case Kind::kList: {
        List l;
        std::string_view rest = text;
        while (!trim(rest).empty()) {
          auto comma = rest.find(',');
          auto item = trim(rest.substr(0, comma));
          if (item.empty()) {
            return fail(
                field_error(f, "empty entry in comma-separated list " + in_quotes(text), name));
          }
          l.push_back(item);
          if (comma == std::string_view::npos) break;
          rest = rest.substr(comma + 1);
          if (trim(rest).empty()) {
            return fail(
                field_error(f, "empty entry in comma-separated list " + in_quotes(text), name));
          }
        }
        v = std::move(l);
        break;
      }
    }
    if (auto r = apply(c, f, v, name); !r) return r;
  }
  return {};
}

std::string absolute(const std::string& path, const std::string& cwd) {
  std::filesystem::path p(path);
  if (p.is_absolute()) return p.lexically_normal().string();
  return (std::filesystem::path(cwd) / p).lexically_normal().string();
}

bool overlaps(const IpPrefix& a, const IpPrefix& b) {
  if (a.family() != b.family()) return false;
  return a.contains(b.address()) || b.contains(a.address());
}

// Defaults that depend on other keys, relative paths, and rules across keys.
Status finish(DaemonConfig& c, const std::string& cwd_in) {
  std::string cwd = cwd_in;
  if (cwd.empty()) {
    std::error_code ec;
    cwd = std::filesystem::current_path(ec).string();
    if (ec) return fail_errno(ec.value(), "resolve relative paths: read the working directory");
  }
  if (c.policy.default_ports.empty() && !c.policy.default_port_entries.empty()) {
    auto rules = state::parse_port_rules(c.policy.default_port_entries);
    if (!rules) return fail(std::move(rules.error()).wrap("policy.default_ports"));
    c.policy.default_ports = std::move(*rules);
  }
  c.gateway.state_dir = absolute(c.gateway.state_dir, cwd);
  if (c.api.tls_cert.empty()) c.api.tls_cert = c.gateway.state_dir + "/tls/cert.pem";
  if (c.api.tls_key.empty()) c.api.tls_key = c.gateway.state_dir + "/tls/key.pem";
  c.api.tls_cert = absolute(c.api.tls_cert, cwd);
  c.api.tls_key = absolute(c.api.tls_key, cwd);
  if (c.api.tls_cert == c.api.tls_key) {
    return fail_invalid("api.tls_key: must be a different file from api.tls_cert (" +
                        c.api.tls_key + ")");
  }

  const auto& net = c.pool.network;
  const auto gw = c.pool.gateway;
  if (!net.contains(gw)) {
    return fail_invalid("pool.gateway: " + gw.to_string() + " is outside pool.network " +
                        net.to_string());
  }
  std::uint32_t host_mask = (1u << (32 - net.cidr())) - 1;
  std::uint32_t base = net.address().v4_host_order();
  if (gw.v4_host_order() == base || gw.v4_host_order() == (base | host_mask)) {
    return fail_invalid("pool.gateway: " + gw.to_string() +
                        " is the network or broadcast address of " + net.to_string());
  }
  for (const auto& op : c.policy.operator_networks) {
    if (overlaps(op, net)) {
      return fail_invalid("policy.operator_networks: " + op.to_string() +
                          " overlaps pool.network " + net.to_string() +
                          "; agents must never count as operators");
    }
  }
  if (c.tunnel.fresh_after_s >= c.tunnel.dead_after_s) {
    return fail_invalid("tunnel.dead_after_s: must be greater than tunnel.fresh_after_s (" +
                        std::to_string(c.tunnel.fresh_after_s) + "), got " +
                        std::to_string(c.tunnel.dead_after_s));
  }
  return {};
}

Result<DaemonConfig> from_table(const toml::table* root, const Environment& env,
                                const std::string& cwd) {
  DaemonConfig c;
  if (root != nullptr) {
    if (auto r = apply_toml(c, *root); !r) return fail(std::move(r.error()));
  }
  if (auto r = apply_env(c, env); !r) return fail(std::move(r.error()));
  if (auto r = finish(c, cwd); !r) return fail(std::move(r.error()));
  return c;
}

std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  return out + "\"";
}

template <class T, class F>
std::string toml_list(const std::vector<T>& items, F text) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    out += toml_string(text(items[i]));
  }
  return out + "]";
}

}  // namespace

const char* wireguard_backend_name(WireguardBackend b) {
  switch (b) {
    case WireguardBackend::kAuto:
      return "auto";
    case WireguardBackend::kKernel:
      return "kernel";
    case WireguardBackend::kUserspace:
      return "userspace";
  }
  return "auto";
}

Result<LogLevel> parse_log_level(std::string_view text) {
  if (text == "error") return LogLevel::kError;
  if (text == "warning") return LogLevel::kWarning;
  if (text == "notice") return LogLevel::kNotice;
  if (text == "info") return LogLevel::kInfo;
  if (text == "debug") return LogLevel::kDebug;
  return fail_invalid("expected one of error, warning, notice, info, debug, got " +
                      in_quotes(text));
}

const char* log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kNotice:
      return "notice";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "info";
}

Environment environment_from(char** envp) {
  Environment env;
  for (char** e = envp; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}

Result<DaemonConfig> parse_config(std::string_view toml_text, std::string_view source_name,
                                  const Environment& env, const std::string& cwd) {
  toml::parse_result parsed = toml::parse(toml_text, source_name);
  if (!parsed) {
    const auto& err = parsed.error();
    return fail_invalid("config " + in_quotes(source_name) + ": " + std::string(err.description()) +
                        " (line " + std::to_string(err.source().begin.line) + ", column " +
                        std::to_string(err.source().begin.column) + ")");
  }
  auto c = from_table(&parsed.table(), env, cwd);
  if (!c) return fail(std::move(c.error()).wrap("config " + in_quotes(source_name)));
  return c;
}

Result<DaemonConfig> default_config(const Environment& env, const std::string& cwd) {
  return from_table(nullptr, env, cwd);
}

Result<DaemonConfig> load_config(const std::string& path, const Environment& env,
                                 const std::string& cwd) {
  const bool explicit_path = !path.empty();
  const std::string file = explicit_path ? path : kDefaultConfigPath;
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT && !explicit_path) return default_config(env, cwd);
    return fail(Error::last_errno("read config " + in_quotes(file)));
  }
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::last_errno("read config " + in_quotes(file)));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > 1024 * 1024) {
      return fail_errno(EFBIG, "read config " + in_quotes(file) + ": larger than 1 MiB");
    }
  }
  return parse_config(text, file, env, cwd);
}

std::string describe(const DaemonConfig& c) {
  std::ostringstream o;
  o << "# portcullisd effective configuration (defaults, then file, then environment)\n";
  o << "[gateway]\n";
  o << "state_dir = " << toml_string(c.gateway.state_dir) << "\n\n";
  o << "[wireguard]\n";
  o << "interface = " << toml_string(c.wireguard.interface) << "\n";
  o << "listen_port = " << c.wireguard.listen_port << "\n";
  o << "backend = " << toml_string(wireguard_backend_name(c.wireguard.backend)) << "\n";
  o << "endpoint = " << toml_string(c.wireguard.endpoint);
  if (c.wireguard.endpoint.empty())
    o << "  # derived: the API host name agents use, port listen_port";
  o << "\n";
  o << "mtu = " << c.wireguard.mtu << "\n\n";
  o << "[pool]\n";
  o << "network = " << toml_string(c.pool.network.to_string()) << "\n";
  o << "gateway = " << toml_string(c.pool.gateway.to_string()) << "\n\n";
  o << "[api]\n";
  o << "listen = " << toml_string(c.api.listen.to_string()) << "\n";
  o << "port = " << c.api.port << "\n";
  o << "tls_cert = " << toml_string(c.api.tls_cert) << "\n";
  o << "tls_key = " << toml_string(c.api.tls_key) << "\n";
  o << "max_body_bytes = " << c.api.max_body_bytes << "\n\n";
  o << "[policy]\n";
  o << "default_ports = "
    << toml_list(c.policy.default_port_entries, [](const std::string& s) { return s; });
  o << "  # " << c.policy.default_ports.size() << " rules:";
  for (const auto& r : c.policy.default_ports) o << " " << state::format_port_rule(r);
  o << "\n";
  o << "operator_networks = " << toml_list(c.policy.operator_networks, [](const IpPrefix& p) {
    return p.to_string();
  }) << "\n\n";
  o << "[reconciler]\n";
  o << "resync_interval_s = " << c.reconciler.resync_interval_s << "\n";
  o << "min_interval_ms = " << c.reconciler.min_interval_ms << "\n\n";
  o << "[tunnel]\n";
  o << "fresh_after_s = " << c.tunnel.fresh_after_s << "\n";
  o << "dead_after_s = " << c.tunnel.dead_after_s << "\n\n";
  o << "[log]\n";
  o << "level = " << toml_string(log_level_name(c.log.level)) << "\n";
  return o.str();
}

}  // namespace portcullis::config
