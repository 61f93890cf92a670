#include "controlplane/daemon/admin_commands.h"

#include "controlplane/operator/operator_actions.h"
#include "controlplane/state/port_rule.h"

namespace portcullis::daemon {
namespace {

constexpr const char* kActor = "admin-socket";

Result<std::string> string_arg(const nlohmann::json& args, const char* name) {
  auto it = args.find(name);
  if (it == args.end() || !it->is_string() || it->get<std::string>().empty()) {
    return fail_invalid(std::string("missing string argument '") + name + "'");
  }
  return it->get<std::string>();
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

operator_api::ActionContext actions(AdminContext& ctx) {
  return {ctx.store, ctx.default_ports, ctx.clock, ctx.wake};
}

const operator_api::Actor kAdminSocket{kActor, "local"};

}  // namespace

Result<nlohmann::json> run_admin_command(AdminContext& ctx, const std::string& command,
                                         const nlohmann::json& args) {
  if (command == "enrollment-code.create") {
    std::int64_t ttl = 24 * 3600;
    if (auto it = args.find("ttl_s"); it != args.end()) {
      if (!it->is_number_integer()) return fail_invalid("ttl_s must be a whole number of seconds");
      ttl = it->get<std::int64_t>();
    }
    auto ctx_actions = actions(ctx);
    auto code = operator_api::create_enrollment_code(ctx_actions, kAdminSocket, ttl);
    if (!code) return fail(std::move(code.error()));
    return nlohmann::json{{"code", code->code}, {"expires_at", code->expires_at}};
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
    auto ctx_actions = actions(ctx);
    auto dev = operator_api::approve_enrollment(ctx_actions, kAdminSocket, *id);
    if (!dev) return fail(dev.error());
    return nlohmann::json{{"device_id", dev->id}};
  }
  if (command == "enrollment.deny") {
    auto id = string_arg(args, "id");
    if (!id) return fail(id.error());
    auto ctx_actions = actions(ctx);
    if (auto s = operator_api::deny_enrollment(ctx_actions, kAdminSocket, *id); !s) {
      return fail(s.error());
    }
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
    auto ctx_actions = actions(ctx);
    if (auto s = operator_api::revoke_device(ctx_actions, kAdminSocket, *id); !s) {
      return fail(s.error());
    }
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
    auto ctx_actions = actions(ctx);
    if (auto s = operator_api::set_device_ports(ctx_actions, kAdminSocket, *id, *norm); !s) {
      return fail(s.error());
    }
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : *norm) out.push_back(state::format_port_rule(p));
    return nlohmann::json{{"ports", out}};
  }
  return fail_invalid("unknown command '" + command + "'");
}

}  // namespace portcullis::daemon
