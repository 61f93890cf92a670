#include "controlplane/operator/operator_actions.h"

#include <sodium.h>

#include "controlplane/state/port_rule.h"
#include "dataplane/base/log.h"

namespace portcullis::operator_api {
namespace {

void audit(ActionContext& ctx, const Actor& actor, const std::string& action,
           const std::string& target, const std::string& detail = "") {
  // The change itself is committed; a failed audit row must not undo it.
  if (auto r = ctx.store.audit({0, ctx.clock(), actor.name, action, target, detail, actor.source});
      !r) {
    log_warning("audit event not recorded, ignoring",
                {{"action", action}, {"error", r.error().message()}});
  }
}

}  // namespace

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

Result<EnrollmentCode> create_enrollment_code(ActionContext& ctx, const Actor& actor,
                                              std::int64_t ttl_s) {
  if (ttl_s < kMinCodeTtlS || ttl_s > kMaxCodeTtlS) {
    return fail_invalid("ttl_s must be a whole number of seconds from " +
                        std::to_string(kMinCodeTtlS) + " to " + std::to_string(kMaxCodeTtlS));
  }
  EnrollmentCode out{new_enrollment_code(), ctx.clock() + ttl_s};
  if (auto s = ctx.store.add_enrollment_code(out.code, out.expires_at, actor.name); !s) {
    return fail(std::move(s.error()));
  }
  audit(ctx, actor, "enrollment_code.create", "", "expires_at=" + std::to_string(out.expires_at));
  return out;
}

Result<state::Device> approve_enrollment(ActionContext& ctx, const Actor& actor,
                                         const std::string& enrollment_id) {
  auto dev =
      ctx.store.approve_enrollment(enrollment_id, actor.name, ctx.default_ports, ctx.clock());
  if (!dev) return fail(std::move(dev.error()));
  audit(ctx, actor, "enrollment.approve", enrollment_id, "device=" + dev->id);
  ctx.wake();
  return dev;
}

Status deny_enrollment(ActionContext& ctx, const Actor& actor, const std::string& enrollment_id) {
  if (auto s = ctx.store.deny_enrollment(enrollment_id, actor.name, ctx.clock()); !s) return s;
  audit(ctx, actor, "enrollment.deny", enrollment_id);
  return {};
}

Status revoke_device(ActionContext& ctx, const Actor& actor, const std::string& device_id) {
  if (auto s = ctx.store.revoke_device(device_id, ctx.clock()); !s) return s;
  audit(ctx, actor, "device.revoke", device_id);
  ctx.wake();
  return {};
}

Result<std::int64_t> set_device_ports(ActionContext& ctx, const Actor& actor,
                                      const std::string& device_id,
                                      const std::vector<state::PortRule>& ports) {
  if (auto s = ctx.store.set_device_ports(device_id, ports); !s) return fail(std::move(s.error()));
  auto after = ctx.store.generation();
  if (!after) return fail(std::move(after.error()));
  std::string detail;
  for (const auto& p : ports) {
    if (!detail.empty()) detail += ',';
    detail += state::format_port_rule(p);
  }
  if (detail.size() > 200) detail = std::to_string(ports.size()) + " entries";
  audit(ctx, actor, "device.ports", device_id, detail);
  ctx.wake();
  return *after;
}

}  // namespace portcullis::operator_api
