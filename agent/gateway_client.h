#pragma once
// The HTTPS client for the gateway's agent API: HTTP/1.1 over OpenSSL's libssl on a plain TCP
// socket. (Not libcurl: Debian's build of it loads 30 more shared libraries, 4.6 MiB of the
// agent's RSS, bench/README.md.) Trust comes only from the pin of the gateway's self-signed
// certificate; no CA store is read. Two pin forms:
//   "sha256//<base64>"  SHA-256 of the certificate's public key (DER SubjectPublicKeyInfo), as
//                       portcullisd logs it (tls_pin=);
//   "AB:CD:...:EF"      SHA-256 of the whole certificate (DER), as `openssl x509 -fingerprint
//                       -sha256` prints it.
// Either is compared with the leaf certificate right after the TLS handshake, before the first
// byte of the request is written. A mismatch is its own error (EKEYREJECTED) so the agent can say
// exactly that.
//
// One connection is kept alive between requests. A kept connection that the gateway has closed
// meanwhile is replaced: before reuse when the close is already visible, or once when it turns
// out closed before any byte of the reply arrived (the request is then sent again on a new
// connection); never after reply bytes arrived.

#include <chrono>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "dataplane/base/result.h"

namespace portcullis::agent {

struct ApiReply {
  long status = 0;
  nlohmann::json body;  // null when the answer was not JSON
  std::string error;    // body["error"] for non-2xx answers ("" when absent)
  std::string message;  // body["message"], or the start of a non-JSON body

  bool ok() const { return status >= 200 && status < 300; }
  // "401 token_expired: the access token expired: use the refresh token"
  std::string describe() const;
};

struct GatewayClientOptions {
  std::string base_url;  // "https://10.0.9.1:8443", "https://[fd00::1]:8443", "https://gw.example"
  std::string pin;       // "sha256//<base64 SPKI digest>" or "AB:CD:..." (certificate SHA-256)
  std::chrono::milliseconds connect_timeout{5000};  // TCP connect and TLS handshake
  std::chrono::milliseconds timeout{20000};         // whole request; vpn/ready may wait up to 5 s
};

class TlsConnection;  // one TLS connection to the gateway (gateway_client.cpp)

class GatewayClient {
 public:
  explicit GatewayClient(GatewayClientOptions options);
  ~GatewayClient();
  GatewayClient(const GatewayClient&) = delete;
  GatewayClient& operator=(const GatewayClient&) = delete;

  // POSTs `body` as JSON. A transport failure (no HTTP answer) is an Error:
  //   EKEYREJECTED  the gateway's certificate does not match the pin (nothing was sent)
  //   EHOSTUNREACH  the host name did not resolve / no route
  //   ECONNREFUSED, ETIMEDOUT, EPROTO (TLS failure, malformed answer), EMSGSIZE (answer header
  //   over 16 KiB or body over 1 MiB), EINVAL (base_url, pin or path malformed), EIO (other)
  // An HTTP answer of any status is a value (ApiReply).
  Result<ApiReply> post(const std::string& path, const nlohmann::json& body,
                        const std::string& bearer = "");

  const std::string& base_url() const { return options_.base_url; }

 private:
  GatewayClientOptions options_;
  std::unique_ptr<TlsConnection> connection_;  // kept alive between requests; null when none
};

}  // namespace portcullis::agent
