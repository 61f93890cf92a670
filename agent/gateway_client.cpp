#include "agent/gateway_client.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdio>
#include <mutex>

#include "agent/agent_config.h"

namespace portcullis::agent {
namespace {

constexpr std::size_t kMaxReplyBytes = 256 * 1024;

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

struct Sink {
  std::string text;
  bool too_large = false;
};

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  if (sink->text.size() + size * n > kMaxReplyBytes) {
    sink->too_large = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  sink->text.append(data, size * n);
  return size * n;
}

// The SSL_CTX ex_data slot that carries the GatewayClient::CertificatePin to the verify callback.
int certificate_pin_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

std::string fingerprint_text(const unsigned char* md, unsigned int n) {
  std::string out;
  char hex[4];
  for (unsigned int i = 0; i < n; ++i) {
    std::snprintf(hex, sizeof hex, i + 1 < n ? "%02X:" : "%02X", md[i]);
    out += hex;
  }
  return out;
}

// OpenSSL calls this for every certificate of the chain, the leaf (depth 0) last. The pin is the
// only trust: errors about the chain (self-signed, unknown issuer, expired) are ignored, and the
// leaf passes only when its SHA-256 is the pinned one. Returning 0 aborts the handshake.
int verify_certificate_pin(int /*preverify_ok*/, X509_STORE_CTX* store) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl == nullptr) return 0;
  auto* pin = static_cast<GatewayClient::CertificatePin*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), certificate_pin_index()));
  if (pin == nullptr) return 0;
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
  X509* leaf = X509_STORE_CTX_get_current_cert(store);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (leaf == nullptr || X509_digest(leaf, EVP_sha256(), md, &n) != 1 || n != pin->want.size()) {
    pin->mismatch = true;
    pin->seen = "unreadable";
    return 0;
  }
  if (CRYPTO_memcmp(md, pin->want.data(), n) != 0) {
    pin->mismatch = true;
    pin->seen = fingerprint_text(md, n);
    return 0;
  }
  X509_STORE_CTX_set_error(store, X509_V_OK);
  return 1;
}

// CURLOPT_SSL_CTX_FUNCTION: curl has set SSL_VERIFY_NONE (VERIFYPEER off) before calling this, so
// the mode set here is the one the handshake uses.
CURLcode install_certificate_pin(CURL*, void* ssl_ctx, void* user) {
  auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
  if (certificate_pin_index() < 0 || SSL_CTX_set_ex_data(ctx, certificate_pin_index(), user) != 1) {
    return CURLE_SSL_CERTPROBLEM;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_certificate_pin);
  return CURLE_OK;
}

// The host part of `url` ("gateway.invalid" of "https://gateway.invalid:8443/api/..."), or the
// whole url when curl cannot parse it.
std::string host_of(const std::string& url) {
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(), curl_url_cleanup);
  char* host = nullptr;
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK ||
      curl_url_get(u.get(), CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    return url;
  }
  std::string out(host);
  curl_free(host);
  return out;
}

Error transport_error(CURLcode code, const std::string& url, const char* detail) {
  const std::string what =
      std::string(curl_easy_strerror(code)) +
      (detail != nullptr && *detail != '\0' ? std::string(" (") + detail + ")" : std::string());
  switch (code) {
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return Error::from_errno(
          EKEYREJECTED,
          "the gateway at " + url +
              " presented a TLS public key that does not match gateway_pin: refusing to talk to "
              "it (nothing was sent); check the pin against the gateway's tls_pin= log line");
    case CURLE_COULDNT_RESOLVE_HOST: {
      const std::string host = host_of(url);
      return Error::from_errno(
          EHOSTUNREACH,
          "cannot resolve gateway host '" + host +
              "' (check gateway_url and this machine's DNS: /etc/resolv.conf, `getent hosts " +
              host + "`; curl: " + (detail != nullptr && *detail != '\0' ? detail : what) +
              "), so " + url + " is unreachable");
    }
    case CURLE_COULDNT_RESOLVE_PROXY:
      return Error::from_errno(EHOSTUNREACH,
                               "cannot resolve the proxy for " + url + " (" + what +
                                   "): check https_proxy / all_proxy and this machine's DNS");
    case CURLE_COULDNT_CONNECT:
      return Error::from_errno(ECONNREFUSED, "connect to the gateway at " + url + ": " + what);
    case CURLE_OPERATION_TIMEDOUT:
      return Error::from_errno(ETIMEDOUT, "request to the gateway at " + url + ": " + what);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
      return Error::from_errno(EPROTO, "TLS with the gateway at " + url + ": " + what);
    default:
      return Error::from_errno(EIO, "request to the gateway at " + url + ": " + what);
  }
}

}  // namespace

std::string ApiReply::describe() const {
  std::string s = std::to_string(status);
  if (!error.empty()) s += " " + error;
  if (!message.empty()) s += ": " + message;
  return s;
}

GatewayClient::GatewayClient(GatewayClientOptions options) : options_(std::move(options)) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_.reset(curl_easy_init());
  if (auto fp = parse_certificate_fingerprint(options_.pin)) certificate_pin_.emplace().want = *fp;
}

GatewayClient::~GatewayClient() = default;

Result<ApiReply> GatewayClient::post(const std::string& path, const nlohmann::json& body,
                                     const std::string& bearer) {
  CURL* c = curl_.get();
  if (c == nullptr) return fail_errno(ENOMEM, "curl_easy_init");
  curl_easy_reset(c);
  const std::string url = options_.base_url + path;
  const std::string text = body.dump();
  Sink sink;
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
  // The gateway's certificate is self-signed: trust is the pinned public key alone, checked by
  // curl in the handshake before the request is written. No CA store is read.
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  curl_easy_setopt(c, CURLOPT_CAINFO, nullptr);
  curl_easy_setopt(c, CURLOPT_CAPATH, nullptr);
  if (certificate_pin_) {
    certificate_pin_->mismatch = false;
    if (curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, install_certificate_pin) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, &*certificate_pin_) != CURLE_OK) {
      return fail_errno(ENOTSUP,
                        "this libcurl cannot check a certificate fingerprint pin (needs the "
                        "OpenSSL backend): use the public key pin (sha256//..., tls_pin= in the "
                        "gateway's log) as gateway_pin");
    }
  } else {
    curl_easy_setopt(c, CURLOPT_PINNEDPUBLICKEY, options_.pin.c_str());
  }
  curl_easy_setopt(c, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_2);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options_.connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, text.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(text.size()));
  curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
  list = curl_slist_append(list, "Accept: application/json");
  // CivetWeb does not answer "Expect: 100-continue": curl would wait a second for nothing.
  list = curl_slist_append(list, "Expect:");
  const std::string auth = "Authorization: Bearer " + bearer;
  if (!bearer.empty()) list = curl_slist_append(list, auth.c_str());
  std::unique_ptr<curl_slist, SlistDeleter> headers(list);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

  CURLcode code = curl_easy_perform(c);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  if (sink.too_large) {
    return fail_errno(EMSGSIZE, "answer of the gateway at " + url + " is over " +
                                    std::to_string(kMaxReplyBytes) + " bytes");
  }
  if (code != CURLE_OK && certificate_pin_ && certificate_pin_->mismatch) {
    return fail_errno(EKEYREJECTED,
                      "the gateway at " + url + " presented a TLS certificate with SHA-256 " +
                          certificate_pin_->seen +
                          " that does not match gateway_pin: refusing to talk to it (nothing was "
                          "sent); check the pin against `openssl x509 -noout -fingerprint "
                          "-sha256` of the gateway's certificate");
  }
  if (code != CURLE_OK) return fail(transport_error(code, url, errbuf));

  ApiReply reply;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  reply.body = nlohmann::json::parse(sink.text, nullptr, false);
  if (reply.body.is_discarded()) reply.body = nullptr;
  if (!reply.ok()) {
    if (reply.body.is_object()) {
      if (auto e = reply.body.find("error"); e != reply.body.end() && e->is_string()) {
        reply.error = e->get<std::string>();
      }
      if (auto m = reply.body.find("message"); m != reply.body.end() && m->is_string()) {
        reply.message = m->get<std::string>();
      }
    } else {
      reply.message = sink.text.substr(0, 200);
    }
  }
  return reply;
}

}  // namespace portcullis::agent
