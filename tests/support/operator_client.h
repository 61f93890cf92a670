#pragma once
// The operator side of the operator API for end-to-end tests and benchmarks: an operator's
// browser over HTTPS (libcurl, the gateway's TLS public key pinned, one keep-alive connection)
// that keeps the session cookie and the CSRF token of its login.
//
//   OperatorClient op(url, pin);
//   op.setup("admin", "correct horse battery");   // POST /api/setup (first run only)
//   op.login("admin", "correct horse battery");   // keeps portcullis_session + csrf_token
//   op.post("/api/enrollments/" + id + "/approve");  // sends Cookie and X-CSRF-Token
//
// Like HttpsClient, sockets live in the calling thread's network namespace.

#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/agent_client.h"

namespace portcullis::testing {

class OperatorClient {
 public:
  OperatorClient(std::string base_url, std::string pin);
  OperatorClient(OperatorClient&&) = default;
  OperatorClient& operator=(OperatorClient&&) = default;

  HttpReply get(const std::string& path);
  HttpReply post(const std::string& path, const nlohmann::json& body = nlohmann::json::object());
  HttpReply put(const std::string& path, const nlohmann::json& body);

  // POST /api/setup: the first admin.
  HttpReply setup(const std::string& user, const std::string& password);
  // POST /api/login; on 200 keeps the session cookie and the CSRF token for later requests.
  HttpReply login(const std::string& user, const std::string& password);

  const std::string& csrf_token() const { return csrf_; }
  bool logged_in() const { return !session_.empty(); }

 private:
  HttpReply send(const char* method, const std::string& path, const std::string* body,
                 std::string* set_cookie = nullptr);

  std::string base_url_;
  std::string pin_;
  std::string session_;
  std::string csrf_;
  CurlPtr curl_;
};

}  // namespace portcullis::testing
