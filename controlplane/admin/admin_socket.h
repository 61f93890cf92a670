#pragma once
// The root-only local admin path of portcullisd: a unix stream socket (default
// /run/portcullis/admin.sock, mode 0600 in a 0700 directory) carrying one JSON request line and one
// JSON reply line per connection. The peer's credentials (SO_PEERCRED) must be root or the
// daemon's own user. Used by `portcullisd enrollment-code create`, `portcullisd device revoke`, ...
//
//   request:  {"command": "device.revoke", "args": {"id": "…"}}
//   reply:    {"ok": true, "result": …}  |  {"ok": false, "error": "…"}

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "dataplane/base/result.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::admin {

inline constexpr const char* kDefaultSocketPath = "/run/portcullis/admin.sock";
inline constexpr std::size_t kMaxRequestBytes = 64 * 1024;

// Returns the result on success, or an error whose message goes back to the caller.
using AdminHandler =
    std::function<Result<nlohmann::json>(const std::string& command, const nlohmann::json& args)>;

class AdminServer {
 public:
  // Binds the socket (replacing a stale one nobody listens on; refusing if a daemon answers) and
  // serves requests on a thread of its own until destroyed.
  static Result<std::unique_ptr<AdminServer>> start(const std::string& path, AdminHandler handler);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

 private:
  AdminServer(std::string path, UniqueFd listener, UniqueFd stop_read, UniqueFd stop_write,
              AdminHandler handler);
  void serve();
  void handle(int fd);

  std::string path_;
  UniqueFd listener_;
  UniqueFd stop_read_, stop_write_;
  AdminHandler handler_;
  std::thread thread_;
};

// Sends one request to the daemon and returns its "result". Errors say whether the daemon is not
// running, refused us, or answered with an error.
Result<nlohmann::json> admin_request(const std::string& path, const std::string& command,
                                     const nlohmann::json& args);

}  // namespace portcullis::admin
