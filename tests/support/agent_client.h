#pragma once
// The agent side of the agent API for end-to-end tests and benchmarks: an HTTPS client as agents
// use it (libcurl, the gateway's TLS public key pinned, one keep-alive connection per client)
// and a simulated agent (Ed25519 identity, WireGuard key, tokens) that enrolls, polls, ensures
// and verifies the signed orchestration document.
//
// Sockets are created in the calling thread's network namespace when a request first connects:
// enter the namespace (NetnsGuard) around the calls, or for the life of a worker thread.

#include <curl/curl.h>

#include <string>

#include <nlohmann/json.hpp>

#include "controlplane/api/crypto.h"
#include "dataplane/base/key.h"
#include "tests/support/pinned_curl.h"

namespace portcullis::testing {

struct HttpReply {
  long status = 0;           // 0: no answer (see curl_error)
  std::string curl_error;    // empty when the transfer worked
  std::string text;          // the body as received
  nlohmann::json body;       // parsed; discarded (null) when not JSON
  long new_connections = 0;  // connections this request had to open (0 = kept alive)

  std::string error() const;  // body["error"] or ""
};

// Runs the request set up on `c` (its body written to reply->text) and fills in the rest of
// *reply: curl_error when the transfer failed, else status, new_connections and body.
void perform_into(CURL* c, HttpReply* reply);

class HttpsClient {
 public:
  // base_url "https://10.0.9.1:8443"; pin "sha256//<base64 SPKI digest>".
  HttpsClient(std::string base_url, std::string pin);
  HttpsClient(HttpsClient&&) = default;
  HttpsClient& operator=(HttpsClient&&) = default;

  HttpReply post(const std::string& path, const nlohmann::json& body,
                 const std::string& bearer = "");
  HttpReply get(const std::string& path);

 private:
  HttpReply perform(const std::string& path, const std::string* body, const std::string& bearer);

  std::string base_url_;
  std::string pin_;
  CurlPtr curl_;
};

class SimulatedAgent {
 public:
  explicit SimulatedAgent(std::string hostname);

  // enroll/request, signed; remembers the enrollment id.
  HttpReply enroll(HttpsClient& client, const std::string& code = "");
  // enroll/poll, signed; when approved remembers device id, tokens and the gateway signing key.
  HttpReply poll(HttpsClient& client);
  HttpReply ensure(HttpsClient& client);
  HttpReply ready(HttpsClient& client);
  HttpReply heartbeat(HttpsClient& client);

  // Checks a vpn/ensure answer: the signature over the exact bytes of "document" with the
  // gateway signing key from the poll, then parses those bytes. Returns "" and sets *document,
  // or says what is wrong.
  std::string verify_document(const HttpReply& ensure_reply, nlohmann::json* document) const;

  std::string hostname;
  api::SigningKey identity = api::SigningKey::generate();
  SecretKey wg_private_key = SecretKey::generate_private();
  std::string enrollment_id;
  std::string device_id;
  std::string access_token;
  std::string refresh_token;
  Key gateway_signing_key;

 private:
  HttpReply signed_post(HttpsClient& client, const std::string& path, nlohmann::json body);
};

}  // namespace portcullis::testing
