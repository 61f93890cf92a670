#pragma once
// The commands of the admin socket (see controlplane/admin/admin_socket.h): what
// `portcullisd enrollment-code create`, `portcullisd device revoke ID`, ... ask the running daemon.

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "controlplane/state/store.h"
#include "dataplane/base/result.h"

namespace portcullis::daemon {

struct AdminContext {
  state::Store& store;
  std::vector<state::PortRule> default_ports;
  std::function<std::int64_t()> clock;  // Unix seconds
  std::function<void()> wake;           // asks the reconciler for a pass
};

// enrollment-code.create {ttl_s}        -> {code, expires_at}
// enrollment.list {status?}             -> [{id, hostname, status, ...}]
// enrollment.approve {id} / .deny {id}  -> {device_id} / {}
// device.list                           -> [{id, hostname, address, status, ports}]
// device.revoke {id}                    -> {}
// device.ports {id, ports: ["5985/tcp", ...]} -> {ports}
Result<nlohmann::json> run_admin_command(AdminContext& ctx, const std::string& command,
                                         const nlohmann::json& args);

}  // namespace portcullis::daemon
