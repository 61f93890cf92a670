#pragma once
// The HTTPS client for the gateway's agent API (libcurl over OpenSSL). Trust comes only from the
// pin of the gateway's self-signed certificate; the CA store is not used. Two pin forms:
//   "sha256//<base64>"  SHA-256 of the certificate's public key (SPKI): CURLOPT_PINNEDPUBLICKEY,
//                       which curl checks at the end of the TLS handshake;
//   "AB:CD:...:EF"      SHA-256 of the whole certificate (DER): checked by our OpenSSL verify
//                       callback (installed through CURLOPT_SSL_CTX_FUNCTION) on the leaf
//                       certificate, so a mismatch fails the handshake itself.
// Either way the check happens before curl writes the first byte of the request. A mismatch is its
// own error (EKEYREJECTED) so the agent can say exactly that.

#include <curl/curl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
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
  std::string base_url;  // "https://10.0.9.1:8443"
  std::string pin;       // "sha256//<base64 SPKI digest>" or "AB:CD:..." (certificate SHA-256)
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds timeout{20000};  // whole request; vpn/ready may wait up to 5 s
};

class GatewayClient {
 public:
  explicit GatewayClient(GatewayClientOptions options);
  ~GatewayClient();
  GatewayClient(const GatewayClient&) = delete;
  GatewayClient& operator=(const GatewayClient&) = delete;

  // POSTs `body` as JSON. A transport failure (no HTTP answer) is an Error:
  //   EKEYREJECTED  the gateway's TLS public key does not match the pin (nothing was sent)
  //   EHOSTUNREACH  the host name did not resolve / no route
  //   ECONNREFUSED, ETIMEDOUT, EPROTO (TLS failure), EIO (other)
  // An HTTP answer of any status is a value (ApiReply).
  Result<ApiReply> post(const std::string& path, const nlohmann::json& body,
                        const std::string& bearer = "");

  const std::string& base_url() const { return options_.base_url; }

  // What the verify callback of a certificate-fingerprint pin compares and records.
  struct CertificatePin {
    std::array<std::uint8_t, 32> want{};
    bool mismatch = false;  // the last handshake presented another certificate
    std::string seen;       // its fingerprint, "AB:CD:..."
  };

 private:
  struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
  };
  GatewayClientOptions options_;
  std::unique_ptr<CURL, CurlDeleter> curl_;
  std::optional<CertificatePin> certificate_pin_;
};

}  // namespace portcullis::agent
