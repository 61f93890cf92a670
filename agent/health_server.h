#pragma once
// The agent's local health endpoint: a minimal HTTP/1.0 responder on 127.0.0.1:<port>, one
// connection at a time in its own thread. Bounded: requests over 4 KiB are refused (431), a client
// gets 2 s to send its request line and headers, and every answer closes the connection.
// Only GET is served; the answers come from a callback (path -> response).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "dataplane/base/result.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::agent {

struct HealthResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

using HealthHandler = std::function<HealthResponse(const std::string& path)>;

class HealthServer {
 public:
  // Binds 127.0.0.1:port (port 0: an ephemeral port, see port()) and starts serving.
  static Result<std::unique_ptr<HealthServer>> start(std::uint16_t port, HealthHandler handler);
  ~HealthServer();  // stops the thread
  HealthServer(const HealthServer&) = delete;
  HealthServer& operator=(const HealthServer&) = delete;

  std::uint16_t port() const { return port_; }

 private:
  HealthServer(UniqueFd listener, UniqueFd stop, std::uint16_t port, HealthHandler handler);
  void serve();
  void answer(int fd);

  UniqueFd listener_;
  UniqueFd stop_;  // eventfd: written once to stop serve()
  std::uint16_t port_;
  HealthHandler handler_;
  std::thread thread_;
};

// Parses "GET /path HTTP/1.x"; the path, or "" when the request line is not that.
std::string parse_get_path(const std::string& request);

}  // namespace portcullis::agent
