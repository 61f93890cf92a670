#pragma once
// The operator actions that change desired state, shared by the operator API (HTTPS) and the
// admin socket (controlplane/daemon/admin_commands.cpp): each is one Store change, one audit
// event naming the actor and where the request came from, and a reconciler wake when the change
// programs something.
//
// Errors are the Store's (errno as in store.h): ENOENT unknown id, EPERM refused by the row's
// state (a denied enrollment, a revoked device), EEXIST conflicts, EINVAL bad arguments.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "controlplane/state/store.h"
#include "dataplane/base/result.h"

namespace portcullis::operator_api {

inline constexpr std::int64_t kMinCodeTtlS = 60;
inline constexpr std::int64_t kMaxCodeTtlS = 30 * 24 * 3600;
inline constexpr std::int64_t kDefaultCodeTtlS = 24 * 3600;

// Who asks: the audit actor ("operator:alice", "admin-socket") and source ("192.0.2.4", "local").
struct Actor {
  std::string name;
  std::string source;
};

struct ActionContext {
  state::Store& store;
  std::vector<state::PortRule> default_ports;  // given to a device when its enrollment is approved
  std::function<std::int64_t()> clock;         // Unix seconds
  std::function<void()> wake;                  // asks the reconciler for a pass; never blocks
};

// 20 random bytes as 32 base32 characters in groups of 4 ("ABCD-EFGH-..."): easy to read out.
std::string new_enrollment_code();

struct EnrollmentCode {
  std::string code;  // shown once; stored only as SHA-256
  std::int64_t expires_at = 0;
};

// ttl_s from kMinCodeTtlS to kMaxCodeTtlS (EINVAL otherwise).
Result<EnrollmentCode> create_enrollment_code(ActionContext& ctx, const Actor& actor,
                                              std::int64_t ttl_s);
Result<state::Device> approve_enrollment(ActionContext& ctx, const Actor& actor,
                                         const std::string& enrollment_id);
Status deny_enrollment(ActionContext& ctx, const Actor& actor, const std::string& enrollment_id);
// Removes the peer, its filter entries and live flows (through the reconciler) and revokes its
// tokens; the agent key cannot enroll again (the store refuses it with EPERM).
Status revoke_device(ActionContext& ctx, const Actor& actor, const std::string& device_id);
// Replaces the allowlist; returns the store generation after the change (wait for it to be
// applied to know the kernel holds the new list).
Result<std::int64_t> set_device_ports(ActionContext& ctx, const Actor& actor,
                                      const std::string& device_id,
                                      const std::vector<state::PortRule>& ports);

}  // namespace portcullis::operator_api
