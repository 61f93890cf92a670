#pragma once
// An HTTPS server over CivetWeb (built for OpenSSL 3 by scripts/build-civetweb.sh). Routes are
// fixed at start: (method, path prefix) -> handler; the longest matching prefix wins. The layer
// answers 404, 405, 413 and 500 itself; handlers see whole, size-checked bodies and return plain
// data. Types here carry no JSON and no CivetWeb: the API layer above decides the formats.
//
//   auto server = HttpsServer::start(config, {{"GET", "/health", health_handler}});
//   if (!server) { log_error(server.error().message()); return 1; }
//   (*server)->port();  // the bound port, also when config.port was 0

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "controlplane/http/tls_identity.h"
#include "dataplane/base/result.h"

namespace portcullis::http {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;
  std::string path;   // decoded, without the query
  std::string query;  // raw, without '?'
  std::string remote_address;
  HeaderList headers;
  std::string body;

  // The first header of that name (case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  HeaderList headers;  // extra headers; Content-Type and Content-Length are set from the fields
};

using Handler = std::function<Response(const Request&)>;

struct Route {
  std::string method;       // "GET", "POST", …
  std::string path_prefix;  // "/api/agent/": matches itself and every path below it
  Handler handler;
};

struct HttpsServerConfig {
  std::string address = "127.0.0.1";  // IPv4 or IPv6 literal
  std::uint16_t port = 8443;          // 0: the kernel picks one, see HttpsServer::port()
  std::filesystem::path cert_file;
  std::filesystem::path key_file;
  TlsIdentityOptions identity;  // used only when both files are missing
  std::size_t max_body_bytes = 64 * 1024;
  int worker_threads = 16;
  int request_timeout_ms = 30'000;
  int keep_alive_timeout_ms = 15'000;
};

class HttpsServer {
 public:
  // Ensures the TLS identity (generating it on first start), then listens. Fails, naming the
  // cause, when TLS did not come up: no TLS in the CivetWeb build, unusable certificate or key,
  // or a port that cannot be bound.
  static Result<std::unique_ptr<HttpsServer>> start(HttpsServerConfig config,
                                                    std::vector<Route> routes);

  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;
  // Stops accepting, waits for requests in flight, then returns.
  ~HttpsServer();

  std::uint16_t port() const { return port_; }
  const TlsIdentity& identity() const { return identity_; }
  // "https://127.0.0.1:8443" ([…] around IPv6).
  std::string url() const;

  // Called from CivetWeb's worker threads; public only for the C callback trampolines.
  struct Context;

 private:
  HttpsServer() = default;

  std::unique_ptr<Context> context_;
  std::uint16_t port_ = 0;
  TlsIdentity identity_;
};

}  // namespace portcullis::http
