#pragma once
// The API under test behind a real HttpsServer on 127.0.0.1:<port 0 → kernel-chosen>, with a
// self-signed certificate generated into <dir>/tls, as portcullisd would serve it.

#include <cstddef>
#include <filesystem>
#include <memory>
#include <vector>

#include "controlplane/http/https_server.h"

namespace portcullis::testing {

inline Result<std::unique_ptr<http::HttpsServer>> start_loopback_https(
    const std::filesystem::path& dir, std::vector<http::Route> routes, std::size_t body_limit) {
  http::HttpsServerConfig config;
  config.address = "127.0.0.1";
  config.port = 0;
  config.cert_file = dir / "tls" / "cert.pem";
  config.key_file = dir / "tls" / "key.pem";
  std::filesystem::create_directories(dir / "tls");
  config.max_body_bytes = body_limit;
  config.worker_threads = 4;
  return http::HttpsServer::start(std::move(config), std::move(routes));
}

}  // namespace portcullis::testing
