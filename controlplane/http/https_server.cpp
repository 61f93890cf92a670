#include "controlplane/http/https_server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <strings.h>

#include <atomic>
#include <cerrno>
#include <ctime>
#include <exception>
#include <mutex>
#include <string_view>

// mg_start2() (start with an error text) is declared under this gate in CivetWeb 1.15.
#define MG_EXPERIMENTAL_INTERFACES 1
#include <civetweb.h>

#include "dataplane/base/log.h"

namespace portcullis::http {

struct HttpsServer::Context {
  HttpsServerConfig config;
  std::vector<Route> routes;
  std::atomic<bool> tls_ready{false};
  std::string tls_error;  // written by init_ssl during mg_start2(), read after it returns
  // CivetWeb's messages while mg_start2() runs (its error text alone says only "Failed to set
  // up server ports"); after start they go to the debug log.
  std::mutex start_messages_mutex;
  bool starting = true;
  std::vector<std::string> start_messages;
  mg_context* mg = nullptr;

  ~Context() {
    // Joins CivetWeb's threads before routes and config go away.
    if (mg != nullptr) mg_stop(mg);
  }
};

namespace {

constexpr unsigned kFeatureTls = 2;  // mg_check_feature() bit: compiled with TLS

std::string openssl_reason() {
  std::string out;
  if (unsigned long code = ERR_peek_last_error(); code != 0) {
    char reason[256];
    ERR_error_string_n(code, reason, sizeof(reason));
    out = reason;
  }
  ERR_clear_error();
  return out;
}

// CivetWeb calls this once while it builds its SSL_CTX, before it listens. We load the pair
// ourselves (CivetWeb's own option wants key and certificate in one file) and return 1 ("done").
// Returning -1 makes mg_start2() fail.
int init_ssl(void* ssl_ctx, void* user_data) {
  auto* ctx = static_cast<HttpsServer::Context*>(user_data);
  auto* ssl = static_cast<SSL_CTX*>(ssl_ctx);
  const std::string cert = ctx->config.cert_file.string();
  const std::string key = ctx->config.key_file.string();
  if (SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION) != 1) {
    ctx->tls_error = "set minimum protocol TLS 1.2: " + openssl_reason();
    return -1;
  }
  if (SSL_CTX_use_certificate_chain_file(ssl, cert.c_str()) != 1) {
    ctx->tls_error = "load certificate '" + cert + "': " + openssl_reason();
    return -1;
  }
  if (SSL_CTX_use_PrivateKey_file(ssl, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ssl) != 1) {
    ctx->tls_error = "load key '" + key + "': " + openssl_reason();
    return -1;
  }
  ctx->tls_ready = true;
  return 1;
}

// CivetWeb's own diagnostics (failed handshakes, plain HTTP on the TLS port): debug only, they
// carry client addresses and library text, never key material.
int log_civetweb_message(const mg_connection* conn, const char* message) {
  const std::string text = message != nullptr ? message : "";
  auto* ctx = static_cast<HttpsServer::Context*>(
      conn != nullptr ? mg_get_user_data(mg_get_context(conn)) : nullptr);
  if (ctx != nullptr) {
    std::lock_guard lock(ctx->start_messages_mutex);
    if (ctx->starting) {
      ctx->start_messages.push_back(text);
      return 1;
    }
  }
  log_debug("civetweb", {{"message", text}});
  return 1;
}

// The errno behind CivetWeb's listen failure, from its message text ("cannot bind to
// 127.0.0.1:8443: 98 (Address already in use)").
int listen_errno(const std::vector<std::string>& messages) {
  for (const std::string& m : messages) {
    for (int err : {EADDRINUSE, EADDRNOTAVAIL, EACCES}) {
      if (m.find(std::generic_category().message(err)) != std::string::npos) return err;
    }
  }
  return 0;
}

// "/api/agent/" matches itself and everything below; "/health" matches "/health" and
// "/health/…" but not "/healthz".
bool prefix_matches(std::string_view prefix, std::string_view path) {
  if (path.substr(0, prefix.size()) != prefix) return false;
  return path.size() == prefix.size() || prefix.ends_with('/') || path[prefix.size()] == '/';
}

int send_error(mg_connection* conn, int status, const char* text) {
  mg_send_http_error(conn, status, "%s", text);
  return status;
}

bool is_header_safe(std::string_view s) {
  return s.find_first_of("\r\n") == std::string_view::npos && !s.empty();
}

// RFC 9110 date ("Sun, 06 Nov 1994 08:49:37 GMT").
std::string http_date() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[64];
  std::strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return text;
}

// True if the comma-separated header value holds `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item.size() == token.size() && strncasecmp(item.data(), token.data(), token.size()) == 0) {
      return true;
    }
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

// The rule CivetWeb applies after the handler (keep-alive is enabled): the client's Connection
// header decides, else HTTP/1.1 keeps the connection and HTTP/1.0 closes it.
bool keeps_alive(const mg_connection* conn, const mg_request_info* ri) {
  if (const char* c = mg_get_header(conn, "Connection"); c != nullptr) {
    return has_token(c, "keep-alive");
  }
  return ri->http_version != nullptr && std::string_view(ri->http_version) == "1.1";
}

// The status line, headers and (for bodies up to kCoalesceBytes) the body go out in ONE
// mg_write: CivetWeb's mg_response_header_send() writes every header line with its own
// SSL_write, i.e. a TLS record and a TCP segment per line (TCP_NODELAY is on), which cost an
// eighth of the daemon's CPU in an ensure storm. Returning the status from the handler tells
// CivetWeb the code (access log, keep-alive).
constexpr size_t kCoalesceBytes = 256 * 1024;

int send_response(mg_connection* conn, const Response& response, bool head) {
  if (response.status < 200 || response.status > 599) {
    return send_error(conn, 500, "Internal error");
  }
  for (const auto& [name, value] : response.headers) {
    if (!is_header_safe(name) || value.find_first_of("\r\n") != std::string::npos) {
      return send_error(conn, 500, "Internal error");
    }
  }
  const mg_request_info* ri = mg_get_request_info(conn);
  std::string out;
  const bool with_body = !head && !response.body.empty();
  const bool coalesce = with_body && response.body.size() <= kCoalesceBytes;
  out.reserve(512 + (coalesce ? response.body.size() : 0));
  out += "HTTP/";
  out += ri->http_version != nullptr ? ri->http_version : "1.1";
  out += ' ';
  out += std::to_string(response.status);
  out += ' ';
  out += mg_get_response_code_text(conn, response.status);
  out += "\r\n";
  const auto add = [&out](std::string_view name, std::string_view value) {
    out.append(name).append(": ").append(value).append("\r\n");
  };
  if (!response.content_type.empty()) add("Content-Type", response.content_type);
  add("Content-Length", std::to_string(response.body.size()));
  bool has_date = false;
  for (const auto& [name, value] : response.headers) {
    if (strcasecmp(name.c_str(), "Content-Length") == 0 ||
        strcasecmp(name.c_str(), "Connection") == 0) {
      continue;
    }
    has_date = has_date || strcasecmp(name.c_str(), "Date") == 0;
    add(name, value);
  }
  if (!has_date) add("Date", http_date());
  add("Connection", keeps_alive(conn, ri) ? "keep-alive" : "close");
  out += "\r\n";
  if (coalesce) out += response.body;
  if (mg_write(conn, out.data(), out.size()) < 0) return response.status;
  if (with_body && !coalesce) mg_write(conn, response.body.data(), response.body.size());
  return response.status;
}

// A body over the limit is still read and dropped, up to this many bytes, before the 413: closing
// a socket with unread data makes the kernel answer with a reset, which can overtake the reply.
constexpr size_t kMaxDiscardBytes = 1 << 20;

void discard_body(mg_connection* conn, size_t max_bytes) {
  char buf[16 * 1024];
  for (size_t total = 0; total < max_bytes;) {
    int n = mg_read(conn, buf, sizeof(buf));
    if (n <= 0) return;
    total += static_cast<size_t>(n);
  }
}

// Reads the whole body, at most `limit` bytes. Returns the HTTP status to answer instead, or 0.
int read_body(mg_connection* conn, const mg_request_info* ri, size_t limit, std::string& body) {
  const bool chunked = ri->content_length < 0 && mg_get_header(conn, "Transfer-Encoding");
  if (ri->content_length == 0 || (ri->content_length < 0 && !chunked)) return 0;

  // No "100 Continue": CivetWeb 1.15 has no interim-response API, and once anything is written
  // with mg_write()/mg_printf() its mg_response_header_start() refuses to send the final status.
  // A client that sent "Expect: 100-continue" sends the body after its own wait (curl: 1 s);
  // our clients send no Expect. An oversized body is refused before that wait ends.
  const char* expect = mg_get_header(conn, "Expect");
  if (expect != nullptr && strcasecmp(expect, "100-continue") != 0) return 417;
  const bool client_waits = expect != nullptr;

  if (ri->content_length > static_cast<long long>(limit)) {
    if (!client_waits && ri->content_length <= static_cast<long long>(limit + kMaxDiscardBytes)) {
      discard_body(conn, static_cast<size_t>(ri->content_length));
    }
    return 413;
  }
  if (ri->content_length > 0) body.reserve(static_cast<size_t>(ri->content_length));
  char buf[16 * 1024];
  for (;;) {
    int n = mg_read(conn, buf, sizeof(buf));
    if (n < 0) return 400;  // the client went away or sent a broken chunk
    if (n == 0) break;
    if (body.size() + static_cast<size_t>(n) > limit) {
      discard_body(conn, kMaxDiscardBytes);
      return 413;
    }
    body.append(buf, static_cast<size_t>(n));
  }
  return 0;
}

int handle_request(mg_connection* conn, void* cbdata) {
  auto* ctx = static_cast<HttpsServer::Context*>(cbdata);
  const mg_request_info* ri = mg_get_request_info(conn);
  const std::string_view method = ri->request_method != nullptr ? ri->request_method : "";
  const std::string_view path = ri->local_uri != nullptr ? ri->local_uri : "";

  // The longest matching prefix decides; a method it does not serve is a 405 there.
  size_t best_len = 0;
  bool any_match = false;
  for (const Route& r : ctx->routes) {
    if (prefix_matches(r.path_prefix, path) && (!any_match || r.path_prefix.size() > best_len)) {
      best_len = r.path_prefix.size();
      any_match = true;
    }
  }
  if (!any_match) return send_error(conn, 404, "Not found");
  const bool head = method == "HEAD";
  const Route* route = nullptr;
  std::string allow;
  for (const Route& r : ctx->routes) {
    if (r.path_prefix.size() != best_len || !prefix_matches(r.path_prefix, path)) continue;
    allow += (allow.empty() ? "" : ", ") + r.method;
    if (r.method == method || (head && r.method == "GET")) route = &r;
  }
  if (route == nullptr) {
    Response r{.status = 405, .body = "Method not allowed\n", .headers = {{"Allow", allow}}};
    return send_response(conn, r, head);
  }

  Request request;
  if (int status = read_body(conn, ri, ctx->config.max_body_bytes, request.body); status != 0) {
    switch (status) {
      case 413:
        // CivetWeb closes the connection after an error, so a body not read in full is never
        // parsed as the next request.
        mg_send_http_error(conn, 413, "Request body larger than %zu bytes",
                           ctx->config.max_body_bytes);
        break;
      case 417:
        mg_send_http_error(conn, 417, "%s", "Expectation failed");
        break;
      default:
        mg_send_http_error(conn, 400, "%s", "Bad request body");
        break;
    }
    return status;
  }
  request.method = method;
  request.path = path;
  request.query = ri->query_string != nullptr ? ri->query_string : "";
  request.remote_address = ri->remote_addr;
  request.headers.reserve(static_cast<size_t>(ri->num_headers));
  for (int i = 0; i < ri->num_headers; ++i) {
    request.headers.emplace_back(ri->http_headers[i].name, ri->http_headers[i].value);
  }

  Response response;
  try {
    response = route->handler(request);
  } catch (const std::exception&) {
    // The exception text may quote request data; the route is enough to find the handler.
    log_error("http handler threw",
              {{"method", std::string(method)}, {"route", route->path_prefix}});
    return send_error(conn, 500, "Internal error");
  } catch (...) {
    log_error("http handler threw",
              {{"method", std::string(method)}, {"route", route->path_prefix}});
    return send_error(conn, 500, "Internal error");
  }
  return send_response(conn, response, head);
}

std::string host_for_url(const std::string& address) {
  return address.find(':') != std::string::npos ? "[" + address + "]" : address;
}

}  // namespace

std::string_view Request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() && strncasecmp(key.data(), name.data(), name.size()) == 0) {
      return value;
    }
  }
  return {};
}

std::string HttpsServer::url() const {
  return "https://" + host_for_url(context_->config.address) + ":" + std::to_string(port_);
}

HttpsServer::~HttpsServer() = default;

Result<std::unique_ptr<HttpsServer>> HttpsServer::start(HttpsServerConfig config,
                                                        std::vector<Route> routes) {
  const std::string where = host_for_url(config.address) + ":" + std::to_string(config.port);
  // mg_check_feature() only says TLS was compiled in. mg_init_library() also says whether it
  // came up: Debian's libcivetweb1 (OpenSSL 1.1 API, libssl loaded at run time) reports TLS as
  // compiled in, fails to load it against OpenSSL 3, and still starts; the first TLS connection
  // then crashes the process. Only its return value tells.
  static std::once_flag init_once;
  static unsigned initialised_features = 0;
  std::call_once(init_once, [] { initialised_features = mg_init_library(kFeatureTls); });
  if (mg_check_feature(kFeatureTls) == 0 || (initialised_features & kFeatureTls) == 0) {
    return fail_errno(ENOTSUP, "start HTTPS server on " + where +
                                   ": TLS did not initialise in CivetWeb (a build without TLS, "
                                   "or one for another OpenSSL API); build it with "
                                   "scripts/build-civetweb.sh (OpenSSL 3, NO_SSL_DL)");
  }
  if (config.max_body_bytes == 0 || config.worker_threads <= 0) {
    return fail_invalid("start HTTPS server on " + where +
                        ": body limit and worker threads must be positive");
  }
  for (const Route& r : routes) {
    if (r.method.empty() || !r.path_prefix.starts_with('/') || !r.handler) {
      return fail_invalid("start HTTPS server: route '" + r.method + " " + r.path_prefix +
                          "' needs a method, a path starting with '/' and a handler");
    }
  }

  auto identity = ensure_tls_identity(config.cert_file, config.key_file, config.identity);
  if (!identity) return fail(std::move(identity).error().wrap("start HTTPS server on " + where));

  std::unique_ptr<HttpsServer> server(new HttpsServer());
  server->identity_ = *identity;
  server->context_ = std::make_unique<Context>();
  Context& ctx = *server->context_;
  ctx.config = std::move(config);
  ctx.routes = std::move(routes);

  // The "s" suffix makes the port TLS-only; there is no plain-HTTP listener.
  const std::string ports =
      host_for_url(ctx.config.address) + ":" + std::to_string(ctx.config.port) + "s";
  const std::string threads = std::to_string(ctx.config.worker_threads);
  const std::string request_timeout = std::to_string(ctx.config.request_timeout_ms);
  const std::string keep_alive_timeout = std::to_string(ctx.config.keep_alive_timeout_ms);
  const char* options[] = {
      "listening_ports",
      ports.c_str(),
      "num_threads",
      threads.c_str(),
      "request_timeout_ms",
      request_timeout.c_str(),
      "keep_alive_timeout_ms",
      keep_alive_timeout.c_str(),
      "enable_keep_alive",
      "yes",
      // 4: TLS 1.2 and newer (init_ssl also sets the minimum).
      "ssl_protocol_version",
      "4",
      // Small JSON replies on a kept-alive connection would otherwise wait for delayed ACKs.
      "tcp_nodelay",
      "1",
      "enable_auth_domain_check",
      "no",
      nullptr,
      nullptr,
  };
  mg_callbacks callbacks{};
  callbacks.init_ssl = init_ssl;
  callbacks.log_message = log_civetweb_message;
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = &ctx;
  init.configuration_options = options;
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error{};
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);

  ctx.mg = mg_start2(&init, &error);
  if (ctx.mg == nullptr) {
    if (!ctx.tls_error.empty()) {
      return fail_errno(
          EINVAL, "start HTTPS server on " + where + ": TLS did not initialise: " + ctx.tls_error);
    }
    std::lock_guard lock(ctx.start_messages_mutex);
    if (int err = listen_errno(ctx.start_messages); err != 0) {
      return fail_errno(err, "start HTTPS server: listen on " + where);
    }
    std::string detail = error_text;
    for (const std::string& m : ctx.start_messages) detail += "; " + m;
    return fail_errno(EIO, "start HTTPS server on " + where + ": " + detail);
  }
  {
    std::lock_guard lock(ctx.start_messages_mutex);
    ctx.starting = false;
    for (const std::string& m : ctx.start_messages) log_debug("civetweb", {{"message", m}});
  }
  if (!ctx.tls_ready) {
    return fail_errno(EPROTO, "start HTTPS server on " + where +
                                  ": TLS did not initialise (CivetWeb never set up its TLS "
                                  "context); rebuild CivetWeb with scripts/build-civetweb.sh");
  }
  mg_set_request_handler(ctx.mg, "/", handle_request, &ctx);

  mg_server_port bound[4] = {};
  int n = mg_get_server_ports(ctx.mg, 4, bound);
  for (int i = 0; i < n; ++i) {
    if (bound[i].is_ssl != 0) server->port_ = static_cast<std::uint16_t>(bound[i].port);
  }
  if (server->port_ == 0) {
    return fail_errno(EIO, "start HTTPS server on " + where + ": no TLS port is listening");
  }
  return server;
}

}  // namespace portcullis::http
