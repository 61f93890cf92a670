#include "agent/gateway_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>

#include "agent/agent_config.h"
#include "dataplane/base/key.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::agent {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kMaxHeadBytes = 16 * 1024;  // status line + headers; chunk trailers too
constexpr std::size_t kMaxBodyBytes = 1024 * 1024;
constexpr std::size_t kMaxChunkLine = 1024;  // "<hex size>[;extensions]"
constexpr std::string_view kPublicKeyPinPrefix = "sha256//";

using Digest = std::array<std::uint8_t, 32>;

// base_url split: "https://[fd00::1]:8443" -> host "fd00::1", port "8443", authority
// "[fd00::1]:8443" (the Host header, as written in the URL).
struct Target {
  std::string host;
  std::string port = "443";
  std::string authority;
  bool host_is_address = false;  // an IP literal: no SNI
};

Result<Target> parse_base_url(const std::string& url) {
  const auto bad = [&url](const std::string& why) {
    return fail_invalid("gateway URL '" + url + "': " + why +
                        " (expected https://host[:port], an IPv6 address in brackets)");
  };
  constexpr std::string_view kScheme = "https://";
  std::string_view rest(url);
  if (!rest.starts_with(kScheme)) return bad("not an https:// URL");
  rest.remove_prefix(kScheme.size());
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    if (slash + 1 != rest.size()) return bad("has a path");
    rest.remove_suffix(1);
  }
  for (unsigned char ch : rest) {
    if (ch <= ' ' || ch >= 0x7f || ch == '@') return bad("unexpected character in the host");
  }
  Target t;
  t.authority = rest;
  std::string_view port;
  bool has_port = false;
  if (rest.starts_with('[')) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return bad("no ']' after the IPv6 address");
    t.host = rest.substr(1, close - 1);
    in6_addr a{};
    if (::inet_pton(AF_INET6, t.host.c_str(), &a) != 1) return bad("not an IPv6 address in []");
    t.host_is_address = true;
    rest.remove_prefix(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return bad("unexpected text after ']'");
      has_port = true;
      port = rest.substr(1);
    }
  } else {
    const auto colon = rest.find(':');
    t.host = rest.substr(0, colon);
    if (colon != std::string_view::npos) {
      has_port = true;
      port = rest.substr(colon + 1);
    }
    if (t.host.find(':') != std::string::npos) return bad("IPv6 address without []");
    in_addr a{};
    t.host_is_address = ::inet_pton(AF_INET, t.host.c_str(), &a) == 1;
  }
  if (t.host.empty()) return bad("no host");
  if (has_port) {
    unsigned n = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || n == 0 ||
        n > 65535) {
      return bad("port is not a number from 1 to 65535");
    }
    t.port = std::to_string(n);
  }
  return t;
}

struct Pin {
  bool certificate = false;  // true: SHA-256 of the certificate; false: of its public key (SPKI)
  Digest want{};
};

Result<Pin> parse_pin(const std::string& pin) {
  if (pin.starts_with(kPublicKeyPinPrefix)) {
    auto key = decode_key_base64(std::string_view(pin).substr(kPublicKeyPinPrefix.size()));
    if (key) return Pin{false, *key};
  } else if (auto fp = parse_certificate_fingerprint(pin)) {
    return Pin{true, *fp};
  }
  return fail_invalid("gateway_pin '" + pin +
                      "' is neither sha256//<44 base64 characters> nor AB:CD:... (32 bytes)");
}

std::string hex_colon(const Digest& d) {
  std::string out;
  char hex[4];
  for (std::size_t i = 0; i < d.size(); ++i) {
    std::snprintf(hex, sizeof hex, i + 1 < d.size() ? "%02X:" : "%02X", d[i]);
    out += hex;
  }
  return out;
}

std::string pin_text(const Pin& pin, const Digest& d) {
  return pin.certificate ? hex_colon(d) : std::string(kPublicKeyPinPrefix) + encode_key_base64(d);
}

// The first queued OpenSSL error (the queue is cleared), or `otherwise`. OpenSSL's error strings
// are not loaded (client_context()): the code is given with the command that names it.
std::string tls_error_text(const std::string& otherwise) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return otherwise;
  char code[24];
  std::snprintf(code, sizeof code, "%08lX", e);
  return std::string("OpenSSL error ") + code + " (`openssl errstr " + code + "` names it)";
}

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
struct AddrinfoFree {
  void operator()(addrinfo* a) const { ::freeaddrinfo(a); }
};

// One SSL_CTX for every client: TLS 1.2 or later, no CA store, no certificate verification by
// OpenSSL (the pin is the trust, compared after the handshake), no renegotiation (a TLS 1.2
// renegotiation could present another certificate after the pin was checked), no session
// resumption (every handshake carries the certificate that is pinned).
SSL_CTX* client_context() {
  static const std::unique_ptr<SSL_CTX, SslCtxFree> ctx = [] {
    // No openssl.cnf: the agent needs none. No error strings: they cost 0.4 MiB of RSS
    // (bench/README.md, agent_bench); tls_error_text() gives the code to look up instead.
    OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG | OPENSSL_INIT_NO_LOAD_SSL_STRINGS |
                         OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS,
                     nullptr);
    std::unique_ptr<SSL_CTX, SslCtxFree> c(SSL_CTX_new(TLS_client_method()));
    if (!c || SSL_CTX_set_min_proto_version(c.get(), TLS1_2_VERSION) != 1) return decltype(c)();
    SSL_CTX_set_verify(c.get(), SSL_VERIFY_NONE, nullptr);
    // Without IGNORE_UNEXPECTED_EOF a close without close_notify is an SSL error; with it, it is
    // the end of a close-delimited body (a truncated JSON body then fails to parse).
    SSL_CTX_set_options(c.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(c.get(), SSL_SESS_CACHE_OFF);
    // The kept-alive connection sits idle for a minute between heartbeats: no 2 x 17 KiB of
    // record buffers meanwhile.
    SSL_CTX_set_mode(c.get(), SSL_MODE_RELEASE_BUFFERS);
    return c;
  }();
  return ctx.get();
}

// The socket under a TlsConnection, as its BIO sees it.
struct Socket {
  UniqueFd fd;
  bool eof = false;  // recv() returned 0
  int error = 0;     // errno of the last failed send/recv other than EAGAIN
};

// A BIO on a non-blocking socket that sends with MSG_NOSIGNAL. OpenSSL's own socket BIO writes
// with write(2), which raises SIGPIPE when the gateway has closed the connection; the agent must
// not depend on SIGPIPE being ignored process-wide (tests and embedders may not ignore it).
int socket_write(BIO* b, const char* data, std::size_t len, std::size_t* written) {
  BIO_clear_retry_flags(b);
  auto* s = static_cast<Socket*>(BIO_get_data(b));
  for (;;) {
    const ssize_t n = ::send(s->fd.get(), data, len, MSG_NOSIGNAL);
    if (n >= 0) {
      *written = static_cast<std::size_t>(n);
      return 1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_write(b);
    } else {
      s->error = errno;
    }
    return 0;
  }
}

int socket_read(BIO* b, char* data, std::size_t len, std::size_t* read) {
  BIO_clear_retry_flags(b);
  auto* s = static_cast<Socket*>(BIO_get_data(b));
  for (;;) {
    const ssize_t n = ::recv(s->fd.get(), data, len, 0);
    if (n > 0) {
      *read = static_cast<std::size_t>(n);
      return 1;
    }
    if (n == 0) {
      s->eof = true;  // libssl asks BIO_eof() to tell a close from an error
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_read(b);
    } else {
      s->error = errno;
    }
    return 0;
  }
}

long socket_ctrl(BIO* b, int cmd, long /*num*/, void* /*ptr*/) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:
      return static_cast<Socket*>(BIO_get_data(b))->eof ? 1 : 0;
    default:
      return 0;
  }
}

BIO_METHOD* socket_bio_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "portcullis socket");
    if (m != nullptr) {
      BIO_meth_set_write_ex(m, socket_write);
      BIO_meth_set_read_ex(m, socket_read);
      BIO_meth_set_ctrl(m, socket_ctrl);
    }
    return m;
  }();
  return method;
}

// Waits until `fd` is ready for `events` (or in error) or `deadline` passes (false).
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return false;
    // Rounded up: a wait of 0 ms before the deadline would spin.
    const auto ms = std::chrono::ceil<milliseconds>(left).count();
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(ms, INT_MAX)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;  // the next send/recv reports what is wrong
  }
}

std::string ms_text(milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

// "127.0.0.1 port 8443"
std::string address_text(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  }
  return std::string(host) + " port " + std::to_string(port);
}

// A TCP connection to one of the addresses `target` resolves to, tried in order. Each address
// gets an equal share of what is left of the time until `deadline`, so one address that drops
// packets does not use up the time of the next.
Result<UniqueFd> connect_tcp(const Target& target, const std::string& url,
                             Clock::time_point deadline, milliseconds budget) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (target.host_is_address ? AI_NUMERICHOST : 0);
  addrinfo* found = nullptr;
  // getaddrinfo() has no timeout of its own: resolv.conf's (5 s, 2 attempts by default) applies.
  const int rc = ::getaddrinfo(target.host.c_str(), target.port.c_str(), &hints, &found);
  std::unique_ptr<addrinfo, AddrinfoFree> list(found);
  if (rc != 0) {
    const std::string why = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    return fail_errno(EHOSTUNREACH,
                      "cannot resolve gateway host '" + target.host +
                          "' (check gateway_url and this machine's DNS: /etc/resolv.conf, "
                          "`getent hosts " +
                          target.host + "`; getaddrinfo: " + why + "), so " + url +
                          " is unreachable");
  }
  std::size_t left = 0;
  for (const addrinfo* a = list.get(); a != nullptr; a = a->ai_next) ++left;
  int last_error = EHOSTUNREACH;
  std::string tried;
  for (const addrinfo* a = list.get(); a != nullptr; a = a->ai_next, --left) {
    tried += (tried.empty() ? "" : ", ") + address_text(a->ai_addr);
    UniqueFd fd(
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) {
      last_error = errno;
      continue;
    }
    const auto share = (deadline - Clock::now()) / static_cast<long>(left);
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        last_error = errno;
        continue;
      }
      if (!wait_ready(fd.get(), POLLOUT, Clock::now() + share)) {
        last_error = ETIMEDOUT;
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        last_error = err;
        continue;
      }
    }
    const int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  const std::string context = "connect to the gateway at " + url + " (" + tried + ")";
  switch (last_error) {
    case ECONNREFUSED:
      return fail_errno(ECONNREFUSED, context);
    case ETIMEDOUT:
      return fail_errno(ETIMEDOUT, context + ": no connection within " + ms_text(budget));
    case ENETUNREACH:
    case EHOSTUNREACH:
    case EADDRNOTAVAIL:
      return fail_errno(EHOSTUNREACH, context + ": " + std::strerror(last_error));
    default:
      return fail_errno(EIO, context + ": " + std::strerror(last_error));
  }
}

}  // namespace

// One TLS connection to the gateway, its certificate already compared with the pin.
class TlsConnection {
 public:
  // TCP connect and TLS handshake within `connect_timeout` (and before `deadline`), then the pin.
  static Result<std::unique_ptr<TlsConnection>> open(const Target& target, const Pin& pin,
                                                     const std::string& url,
                                                     milliseconds connect_timeout,
                                                     Clock::time_point deadline) {
    const auto start = Clock::now();
    const auto connect_deadline = std::min(deadline, start + connect_timeout);
    // The request's deadline may come first.
    const auto budget = std::chrono::ceil<milliseconds>(connect_deadline - start);
    SSL_CTX* ctx = client_context();
    BIO_METHOD* method = socket_bio_method();
    if (ctx == nullptr || method == nullptr) {
      return fail_errno(EIO, "set up TLS for the gateway at " + url + ": " +
                                 tls_error_text("OpenSSL initialisation failed"));
    }
    auto fd = connect_tcp(target, url, connect_deadline, budget);
    if (!fd) return fail(fd.error());
    auto c = std::unique_ptr<TlsConnection>(new TlsConnection());
    c->socket_.fd = std::move(*fd);
    c->ssl_.reset(SSL_new(ctx));
    BIO* bio = BIO_new(method);
    if (!c->ssl_ || bio == nullptr) {
      BIO_free(bio);
      return fail_errno(ENOMEM, "set up TLS for the gateway at " + url);
    }
    BIO_set_data(bio, &c->socket_);
    BIO_set_init(bio, 1);
    SSL_set_bio(c->ssl_.get(), bio, bio);  // the SSL owns the BIO, for both directions
    if (!target.host_is_address &&
        SSL_set_tlsext_host_name(c->ssl_.get(), target.host.c_str()) != 1) {
      return fail_errno(EINVAL,
                        "TLS server name '" + target.host + "': " + tls_error_text("rejected"));
    }
    const std::string what = "TLS handshake with the gateway at " + url;
    for (;;) {
      ERR_clear_error();
      const int r = SSL_connect(c->ssl_.get());
      if (r == 1) break;
      const int e = SSL_get_error(c->ssl_.get(), r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (!c->wait(e, connect_deadline)) {
          return fail_errno(ETIMEDOUT, what + ": not done within " + ms_text(budget));
        }
        continue;
      }
      return fail_errno(EPROTO, what + " failed: " + c->failure_text(e));
    }
    // The pin, before anything is written.
    X509* leaf = SSL_get0_peer_certificate(c->ssl_.get());
    Digest seen{};
    if (leaf == nullptr || !digest(leaf, pin.certificate, seen)) {
      return fail_errno(EPROTO, what + ": no readable certificate from the gateway");
    }
    if (seen != pin.want) {
      // "presented a TLS certificate with SHA-256 0C:92:... that does not match gateway_pin
      // 1C:92:... (the certificate's SHA-256)"
      const std::string what_seen = pin.certificate ? "a TLS certificate with SHA-256 "
                                                    : "a TLS public key with SHA-256 (SPKI) ";
      return fail_errno(
          EKEYREJECTED,
          "the gateway at " + url + " presented " + what_seen + pin_text(pin, seen) +
              " that does not match gateway_pin " + pin_text(pin, pin.want) +
              (pin.certificate ? " (the pinned fingerprint of its certificate)"
                               : " (the pinned fingerprint of its public key)") +
              ": refusing to talk to it (nothing was sent); " +
              (pin.certificate ? "check the pin against `openssl x509 -noout -fingerprint "
                                 "-sha256` of the gateway's certificate"
                               : "check the pin against the gateway's tls_pin= log line"));
    }
    return c;
  }

  // Writes all of `data` (retried as libssl asks) before `deadline`.
  Status write_all(std::string_view data, Clock::time_point deadline, const std::string& url) {
    std::size_t done = 0;
    while (done < data.size()) {
      ERR_clear_error();
      std::size_t n = 0;
      const int r = SSL_write_ex(ssl_.get(), data.data() + done, data.size() - done, &n);
      if (r == 1) {
        done += n;
        continue;
      }
      const int e = SSL_get_error(ssl_.get(), r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (!wait(e, deadline)) return request_timed_out(url);
        continue;
      }
      if (socket_.eof || socket_.error == EPIPE || socket_.error == ECONNRESET) closed_ = true;
      return fail_errno(e == SSL_ERROR_SSL ? EPROTO : EIO,
                        "send the request to the gateway at " + url + ": " + failure_text(e));
    }
    return {};
  }

  // Appends what arrives next to buffer(): false when the gateway closed the connection.
  Result<bool> read_more(Clock::time_point deadline, const std::string& url) {
    char chunk[4096];  // libssl keeps the rest of a record for the next call
    for (;;) {
      ERR_clear_error();
      std::size_t n = 0;
      const int r = SSL_read_ex(ssl_.get(), chunk, sizeof chunk, &n);
      if (r == 1) {
        buffer_.append(chunk, n);
        received_ += n;
        return true;
      }
      const int e = SSL_get_error(ssl_.get(), r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (!wait(e, deadline)) return request_timed_out(url);
        continue;
      }
      if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && socket_.error == 0) ||
          socket_.error == ECONNRESET) {
        closed_ = true;
        return false;
      }
      return fail_errno(e == SSL_ERROR_SSL ? EPROTO : EIO,
                        "read the answer of the gateway at " + url + ": " + failure_text(e));
    }
  }

  // Whether an idle kept-alive connection can carry the next request: nothing to read (a close,
  // a reset, or stray bytes all mean no).
  bool idle_and_open() const {
    if (SSL_pending(ssl_.get()) > 0 || !buffer_.empty()) return false;
    pollfd p{socket_.fd.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }

  std::string& buffer() { return buffer_; }
  std::size_t received() const { return received_; }
  // The connection turned out closed by the gateway (EOF, reset, broken pipe).
  bool closed() const { return closed_; }
  void start_request() {
    received_ = 0;
    closed_ = false;
  }

 private:
  TlsConnection() = default;

  static bool digest(X509* leaf, bool certificate, Digest& out) {
    unsigned int n = 0;
    if (certificate) return X509_digest(leaf, EVP_sha256(), out.data(), &n) == 1 && n == 32;
    unsigned char* der = nullptr;
    const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &der);
    if (len <= 0) return false;
    const bool ok = EVP_Digest(der, static_cast<std::size_t>(len), out.data(), &n, EVP_sha256(),
                               nullptr) == 1 &&
                    n == 32;
    OPENSSL_free(der);
    return ok;
  }

  bool wait(int ssl_error, Clock::time_point deadline) const {
    return wait_ready(socket_.fd.get(), ssl_error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
                      deadline);
  }

  std::string failure_text(int ssl_error) {
    if (ssl_error == SSL_ERROR_SSL) return tls_error_text("TLS error");
    ERR_clear_error();
    if (socket_.error != 0) return std::strerror(socket_.error);
    if (socket_.eof || ssl_error == SSL_ERROR_ZERO_RETURN)
      return "the gateway closed the connection";
    return "SSL error " + std::to_string(ssl_error);
  }

  static tl::unexpected<Error> request_timed_out(const std::string& url) {
    return fail_errno(ETIMEDOUT,
                      "request to the gateway at " + url + ": no complete answer in time");
  }

  Socket socket_;  // before ssl_: the BIO points at it
  std::unique_ptr<SSL, SslFree> ssl_;
  std::string buffer_;  // received, not yet parsed
  std::size_t received_ = 0;
  bool closed_ = false;
};

namespace {

struct HttpReply {
  long status = 0;
  std::string body;
  bool keep_alive = true;
};

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether the comma-separated header value `list` holds `token` (case-insensitive).
bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// Reads one answer from `c`, its buffer holding what was read so far. Framing: Content-Length,
// chunked, or the connection's close.
class ReplyReader {
 public:
  ReplyReader(TlsConnection& c, Clock::time_point deadline, const std::string& url)
      : c_(c), deadline_(deadline), url_(url) {}

  Result<HttpReply> read() {
    HttpReply reply;
    std::size_t content_length = 0;
    bool has_length = false, chunked = false;
    for (;;) {  // 1xx interim answers are skipped
      auto head = read_through("\r\n\r\n", kMaxHeadBytes, "header");
      if (!head) return fail(head.error());
      auto lines = std::string_view(*head);
      const auto eol = lines.find("\r\n");
      const std::string_view status_line = lines.substr(0, eol);
      lines.remove_prefix(eol + 2);
      // "HTTP/1.1 200 OK"
      if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.") || status_line[8] != ' ' ||
          (status_line.size() > 12 && status_line[12] != ' ')) {
        return malformed("status line '" + std::string(status_line.substr(0, 80)) + "'");
      }
      const bool http10 = status_line[7] == '0';
      int status = 0;
      const auto code = status_line.substr(9, 3);
      if (std::from_chars(code.data(), code.data() + 3, status).ptr != code.data() + 3 ||
          status < 100) {
        return malformed("status line '" + std::string(status_line.substr(0, 80)) + "'");
      }
      reply.status = status;
      reply.keep_alive = !http10;
      has_length = chunked = false;
      std::string_view connection;
      while (!lines.empty()) {
        const auto end = lines.find("\r\n");
        const std::string_view line = lines.substr(0, end);
        lines.remove_prefix(end == std::string_view::npos ? lines.size() : end + 2);
        if (line.empty()) break;
        const auto colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0 || line[0] == ' ' || line[0] == '\t') {
          return malformed("header line '" + std::string(line.substr(0, 80)) + "'");
        }
        const std::string_view name = line.substr(0, colon), value = trim(line.substr(colon + 1));
        if (iequals(name, "Content-Length")) {
          std::size_t n = 0;
          auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
          if (value.empty() || ec != std::errc() || p != value.data() + value.size() ||
              (has_length && n != content_length)) {
            return malformed("Content-Length '" + std::string(value.substr(0, 40)) + "'");
          }
          content_length = n;
          has_length = true;
        } else if (iequals(name, "Transfer-Encoding")) {
          const auto last = trim(value.substr(value.rfind(',') + 1));
          if (!iequals(last, "chunked")) {
            return malformed("Transfer-Encoding '" + std::string(value.substr(0, 40)) + "'");
          }
          chunked = true;
        } else if (iequals(name, "Connection")) {
          connection = value;
        }
      }
      if (has_token(connection, "close")) reply.keep_alive = false;
      if (http10 && has_token(connection, "keep-alive")) reply.keep_alive = true;
      if (status >= 200 || status == 101) break;
    }
    if (reply.status == 204 || reply.status == 304) return reply;
    if (chunked) {
      auto body = read_chunked();
      if (!body) return fail(body.error());
      reply.body = std::move(*body);
    } else if (has_length) {
      if (content_length > kMaxBodyBytes) return too_large(content_length);
      while (c_.buffer().size() < content_length) {
        auto more = c_.read_more(deadline_, url_);
        if (!more) return fail(more.error());
        if (!*more) {
          return truncated("after " + std::to_string(c_.buffer().size()) + " of " +
                           std::to_string(content_length) + " body bytes");
        }
      }
      reply.body = c_.buffer().substr(0, content_length);
      c_.buffer().erase(0, content_length);
    } else {
      // Neither: the body ends where the gateway closes the connection.
      reply.keep_alive = false;
      for (;;) {
        if (c_.buffer().size() > kMaxBodyBytes) return too_large(c_.buffer().size());
        auto more = c_.read_more(deadline_, url_);
        if (!more) return fail(more.error());
        if (!*more) break;
      }
      reply.body = std::move(c_.buffer());
      c_.buffer().clear();
    }
    // Bytes after the answer (none were asked for): the connection is not reused.
    if (!c_.buffer().empty()) reply.keep_alive = false;
    return reply;
  }

 private:
  // The buffer's text up to and including the first `end` (removed from the buffer), reading
  // more as needed; over `limit` bytes is EMSGSIZE.
  Result<std::string> read_through(std::string_view end, std::size_t limit, const char* what) {
    std::size_t searched = 0;
    for (;;) {
      auto& b = c_.buffer();
      const auto at = b.find(end, searched > end.size() ? searched - end.size() : 0);
      if (at != std::string::npos && at + end.size() <= limit) {
        std::string out = b.substr(0, at + end.size());
        b.erase(0, at + end.size());
        return out;
      }
      if (b.size() >= limit) {
        return fail_errno(EMSGSIZE, "answer of the gateway at " + url_ + ": " + what + " over " +
                                        std::to_string(limit) + " bytes");
      }
      searched = b.size();
      auto more = c_.read_more(deadline_, url_);
      if (!more) return fail(more.error());
      if (!*more) {
        if (c_.received() == 0) {
          return fail_errno(EIO,
                            "the gateway at " + url_ + " closed the connection without answering");
        }
        return truncated(std::string("in the ") + what);
      }
    }
  }

  Result<std::string> read_chunked() {
    std::string body;
    for (;;) {
      // "<hex size>[;extensions]\r\n"
      auto line = read_through("\r\n", kMaxChunkLine, "chunk size line");
      if (!line) return fail(line.error());
      const std::string_view size_text =
          trim(std::string_view(*line).substr(0, std::min(line->find(';'), line->size() - 2)));
      std::size_t size = 0;
      auto [p, ec] =
          std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
      if (size_text.empty() || ec != std::errc() || p != size_text.data() + size_text.size()) {
        return malformed("chunk size '" + std::string(size_text.substr(0, 40)) + "'");
      }
      if (size == 0) break;
      if (size > kMaxBodyBytes - body.size()) return too_large(body.size() + size);
      while (c_.buffer().size() < size + 2) {
        auto more = c_.read_more(deadline_, url_);
        if (!more) return fail(more.error());
        if (!*more) return truncated("inside a chunk");
      }
      if (c_.buffer().compare(size, 2, "\r\n") != 0) return malformed("chunk without CRLF");
      body.append(c_.buffer(), 0, size);
      c_.buffer().erase(0, size + 2);
    }
    // Trailer fields, then an empty line.
    std::size_t trailers = 0;
    for (;;) {
      auto line = read_through("\r\n", kMaxHeadBytes - trailers, "trailer");
      if (!line) return fail(line.error());
      if (*line == "\r\n") return body;
      trailers += line->size();
    }
  }

  tl::unexpected<Error> malformed(const std::string& what) {
    return fail_errno(EPROTO, "answer of the gateway at " + url_ + " is not HTTP/1.1: " + what);
  }
  tl::unexpected<Error> truncated(const std::string& where) {
    return fail_errno(
        EPROTO, "the gateway at " + url_ + " closed the connection mid-answer (" + where + ")");
  }
  tl::unexpected<Error> too_large(std::size_t n) {
    return fail_errno(EMSGSIZE, "answer of the gateway at " + url_ + ": body of " +
                                    std::to_string(n) + " bytes is over the limit of " +
                                    std::to_string(kMaxBodyBytes));
  }

  TlsConnection& c_;
  Clock::time_point deadline_;
  const std::string& url_;
};

bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char ch) { return ch > ' ' && ch < 0x7f; });
}

}  // namespace

std::string ApiReply::describe() const {
  std::string s = std::to_string(status);
  if (!error.empty()) s += " " + error;
  if (!message.empty()) s += ": " + message;
  return s;
}

GatewayClient::GatewayClient(GatewayClientOptions options) : options_(std::move(options)) {}

GatewayClient::~GatewayClient() = default;

Result<ApiReply> GatewayClient::post(const std::string& path, const nlohmann::json& body,
                                     const std::string& bearer) {
  const auto deadline = Clock::now() + options_.timeout;
  const std::string url = options_.base_url + path;
  auto target = parse_base_url(options_.base_url);
  if (!target) return fail(target.error());
  auto pin = parse_pin(options_.pin);
  if (!pin) return fail(pin.error());
  if (!path.starts_with('/') || !printable(path) || !printable(bearer)) {
    return fail_invalid("request to the gateway at " + url +
                        ": path or bearer token holds spaces or control characters");
  }
  const std::string text = body.dump();
  std::string request = "POST " + path + " HTTP/1.1\r\nHost: " + target->authority +
                        "\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
                        "Content-Length: " +
                        std::to_string(text.size()) + "\r\n";
  if (!bearer.empty()) request += "Authorization: Bearer " + bearer + "\r\n";
  request += "Connection: keep-alive\r\n\r\n" + text;

  if (connection_ && !connection_->idle_and_open()) connection_.reset();
  Result<HttpReply> reply;
  for (bool retried = false;; retried = true) {
    const bool reused = connection_ != nullptr;
    if (!connection_) {
      auto c = TlsConnection::open(*target, *pin, url, options_.connect_timeout, deadline);
      if (!c) return fail(c.error());
      connection_ = std::move(*c);
    }
    connection_->start_request();
    reply = connection_->write_all(request, deadline, url).and_then([&] {
      return ReplyReader(*connection_, deadline, url).read();
    });
    if (reply && reply->keep_alive) break;
    // A kept-alive connection the gateway closed before it sent a byte of the answer: the
    // request is sent once more on a new connection.
    const bool again =
        !reply && reused && !retried && connection_->closed() && connection_->received() == 0;
    connection_.reset();
    if (!again) break;
  }
  if (!reply) return fail(reply.error());

  ApiReply out;
  out.status = reply->status;
  out.body = nlohmann::json::parse(reply->body, nullptr, false);
  if (out.body.is_discarded()) out.body = nullptr;
  if (!out.ok()) {
    if (out.body.is_object()) {
      if (auto e = out.body.find("error"); e != out.body.end() && e->is_string()) {
        out.error = e->get<std::string>();
      }
      if (auto m = out.body.find("message"); m != out.body.end() && m->is_string()) {
        out.message = m->get<std::string>();
      }
    } else {
      out.message = reply->body.substr(0, 200);
    }
  }
  return out;
}

}  // namespace portcullis::agent
