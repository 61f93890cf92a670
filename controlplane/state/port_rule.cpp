#include "controlplane/state/port_rule.h"

#include <algorithm>
#include <map>

namespace portcullis::state {

Result<std::vector<PortRule>> parse_port_rule(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return fail_invalid("port rule '" + std::string(text) + "': " + why +
                        " (expected PORT, PORT/tcp or PORT/udp with PORT from 1 to 65535)");
  };
  auto slash = text.find('/');
  std::string_view number = text.substr(0, slash);
  if (number.empty()) return bad("the port is missing");
  if (number.size() > 5) return bad("the port is out of range");
  std::uint32_t port = 0;
  for (char c : number) {
    if (c < '0' || c > '9') return bad("the port is not a decimal number");
    port = port * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (number.size() > 1 && number[0] == '0') return bad("the port has a leading zero");
  if (port < 1 || port > 65535) return bad("the port is out of range");
  auto p = static_cast<std::uint16_t>(port);
  if (slash == std::string_view::npos) {
    return std::vector<PortRule>{{filter::Protocol::kTcp, p}, {filter::Protocol::kUdp, p}};
  }
  std::string_view proto = text.substr(slash + 1);
  if (proto == "tcp") return std::vector<PortRule>{{filter::Protocol::kTcp, p}};
  if (proto == "udp") return std::vector<PortRule>{{filter::Protocol::kUdp, p}};
  return bad("the protocol must be tcp or udp");
}

Result<std::vector<PortRule>> parse_port_rules(const std::vector<std::string>& entries) {
  std::map<PortRule, const std::string*> seen;
  for (const auto& entry : entries) {
    auto rules = parse_port_rule(entry);
    if (!rules) return fail(std::move(rules.error()));
    for (const auto& r : *rules) {
      auto [it, inserted] = seen.emplace(r, &entry);
      if (!inserted) {
        return fail_invalid("port rule '" + entry + "' repeats " + format_port_rule(r) + " from '" +
                            *it->second + "'");
      }
    }
  }
  std::vector<PortRule> out;
  out.reserve(seen.size());
  for (const auto& [rule, entry] : seen) out.push_back(rule);
  return out;
}

std::string format_port_rule(const PortRule& rule) {
  return std::to_string(rule.port) + "/" + filter::protocol_name(rule.protocol);
}

}  // namespace portcullis::state
