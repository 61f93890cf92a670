#include "controlplane/daemon/admin_commands.h"

#include <sodium.h>

#include "controlplane/state/port_rule.h"

namespace portcullis::daemon {
namespace {

constexpr const char* kActor = "admin-socket";
constexpr std::int64_t kMaxCodeTtlS = 30 * 24 * 3600;

Result<std::string> string_arg(const nlohmann::json& args, const char* name) {
  auto it = args.find(name);
  if (it == args.end() || !it->is_string() || it->get<std::string>().empty()) {
    return fail_invalid(std::string("missing string argument '") + name + "'");
  }
  return it->get<std::string>();
}

// 20 random bytes as 32 base32 characters in groups of 4: easy to read out and type.
std::string new_enrollment_code() {
  static constexpr char kAlphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  unsigned char raw[32];
  randombytes_buf(raw, sizeof raw);
  std::string code;
  for (int i = 0; i < 32; ++i) {
    if (i && i % 4 == 0) code.push_back('-');
    code.push_back(kAlphabet[raw[i] & 31]);
  }
  sodium_memzero(raw, sizeof raw);
  return code;
}

nlohmann::json device_json(const state::Device& d) {
  nlohmann::json ports = nlohmann::json::array();
  for (const auto& p : d.ports) ports.push_back(state::format_port_rule(p));
  return {{"id", d.id},
          {"hostname", d.hostname},
          {"address", d.address ? nlohmann::json(d.address->to_string()) : nlohmann::json()},
          {"status", state::device_status_name(d.status)},
          {"wg_public_key", d.wg_key.to_base64()},
          {"ports", std::move(ports)},
          {"last_heartbeat", d.last_heartbeat}};
}

nlohmann::json enrollment_json(const state::Enrollment& e) {
  return {{"id", e.id},
          {"hostname", e.hostname},
          {"status", state::enrollment_status_name(e.status)},
          {"agent_public_key", e.agent_key.to_base64()},
          {"source", e.source_address},
          {"created_at", e.created_at},
          {"device_id", e.device_id}};
}

void audit(AdminContext& ctx, const std::string& action, const std::string& target,
           const std::string& detail = "") {
  // The change itself is committed; a failed audit row must not undo it.
  (void)ctx.store.audit({0, ctx.clock(), kActor, action, target, detail, "local"});
}

}  // namespace

Result<nlohmann::json> run_admin_command(AdminContext& ctx, const std::string& command,
                                         const nlohmann::json& args) {
  if (command == "enrollment-code.create") {
    std::int64_t ttl = 24 * 3600;
    if (auto it = args.find("ttl_s"); it != args.end()) {
      if (!it->is_number_integer() || *it <= 0 || *it > kMaxCodeTtlS) {
        return fail_invalid("ttl_s must be a whole number of seconds from 1 to 2592000");
      }
      ttl = it->get<std::int64_t>();
    }
    auto code = new_enrollment_code();
    std::int64_t expires = ctx.clock() + ttl;
    if (auto s = ctx.store.add_enrollment_code(code, expires, kActor); !s) return fail(s.error());
    audit(ctx, "enrollment_code.create", "", "expires_at=" + std::to_string(expires));
    return nlohmann::json{{"code", code}, {"expires_at", expires}};
  }
  if (command == "enrollment.list") {
    auto list = ctx.store.list_enrollments(std::nullopt);
    if (!list) return fail(list.error());
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : *list) out.push_back(enrollment_json(e));
    return out;
  }
  if (command == "enrollment.approve") {
    auto id = string_arg(args, "id");
    if (!id) return fail(id.error());
    auto dev = ctx.store.approve_enrollment(*id, kActor, ctx.default_ports, ctx.clock());
    if (!dev) return fail(dev.error());
    audit(ctx, "enrollment.approve", *id, "device=" + dev->id);
    ctx.wake();
    return nlohmann::json{{"device_id", dev->id}};
  }
  if (command == "enrollment.deny") {
    auto id = string_arg(args, "id");
    if (!id) return fail(id.error());
    if (auto s = ctx.store.deny_enrollment(*id, kActor, ctx.clock()); !s) return fail(s.error());
    audit(ctx, "enrollment.deny", *id);
    return nlohmann::json::object();
  }
  if (command == "device.list") {
    auto list = ctx.store.list_devices();
    if (!list) return fail(list.error());
    nlohmann::json out = nlohmann::json::array();
    for (const auto& d : *list) out.push_back(device_json(d));
    return out;
  }
  if (command == "device.revoke") {
    auto id = string_arg(args, "id");
    if (!id) return fail(id.error());
    if (auto s = ctx.store.revoke_device(*id, ctx.clock()); !s) return fail(s.error());
    audit(ctx, "device.revoke", *id);
    ctx.wake();
    return nlohmann::json::object();
  }
  if (command == "device.ports") {
    auto id = string_arg(args, "id");
    if (!id) return fail(id.error());
    auto list = args.find("ports");
    if (list == args.end() || !list->is_array()) return fail_invalid("missing list 'ports'");
    std::vector<std::string> entries;
    for (const auto& entry : *list) {
      if (!entry.is_string()) return fail_invalid("ports: every entry must be a string");
      entries.push_back(entry.get<std::string>());
    }
    auto norm = state::parse_port_rules(entries);
    if (!norm) return fail(norm.error());
    if (auto s = ctx.store.set_device_ports(*id, *norm); !s) return fail(s.error());
    audit(ctx, "device.ports", *id, std::to_string(norm->size()) + " entries");
    ctx.wake();
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : *norm) out.push_back(state::format_port_rule(p));
    return nlohmann::json{{"ports", out}};
  }
  return fail_invalid("unknown command '" + command + "'");
}

}  // namespace portcullis::daemon
