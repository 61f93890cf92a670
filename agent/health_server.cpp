#include "agent/health_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>

namespace portcullis::agent {
namespace {

constexpr std::size_t kMaxRequestBytes = 4096;
constexpr int kRequestTimeoutMs = 2000;

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

void send_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the client went away; nothing to tell anyone
    off += static_cast<std::size_t>(n);
  }
}

void respond(int fd, const HealthResponse& r) {
  std::string out = "HTTP/1.0 " + std::to_string(r.status) + " " + reason(r.status) + "\r\n" +
                    "Content-Type: " + r.content_type + "\r\n" +
                    "Content-Length: " + std::to_string(r.body.size()) + "\r\n" +
                    "Cache-Control: no-store\r\nConnection: close\r\n\r\n" + r.body;
  send_all(fd, out);
}

}  // namespace

std::string parse_get_path(const std::string& request) {
  auto eol = request.find_first_of("\r\n");
  std::string line = request.substr(0, eol);
  if (line.rfind("GET ", 0) != 0) return "";
  auto sp = line.find(' ', 4);
  if (sp == std::string::npos) return "";
  std::string target = line.substr(4, sp - 4);
  if (line.compare(sp + 1, 7, "HTTP/1.") != 0 || target.empty() || target[0] != '/') return "";
  return target.substr(0, target.find('?'));
}

Result<std::unique_ptr<HealthServer>> HealthServer::start(std::uint16_t port,
                                                          HealthHandler handler) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fail(Error::last_errno("health endpoint: socket"));
  const int on = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return fail(Error::last_errno("health endpoint: bind 127.0.0.1:" + std::to_string(port) +
                                  " (set health_port to a free port, or 0 to turn it off)"));
  }
  if (::listen(fd.get(), 8) != 0) return fail(Error::last_errno("health endpoint: listen"));
  socklen_t len = sizeof sa;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  if (!stop) return fail(Error::last_errno("health endpoint: eventfd"));
  return std::unique_ptr<HealthServer>(
      new HealthServer(std::move(fd), std::move(stop), ntohs(sa.sin_port), std::move(handler)));
}

HealthServer::HealthServer(UniqueFd listener, UniqueFd stop, std::uint16_t port,
                           HealthHandler handler)
    : listener_(std::move(listener)),
      stop_(std::move(stop)),
      port_(port),
      handler_(std::move(handler)),
      thread_([this] { serve(); }) {}

HealthServer::~HealthServer() {
  const std::uint64_t one = 1;
  if (::write(stop_.get(), &one, sizeof one) < 0) {
    // An eventfd write only fails on overflow; the thread is then already told to stop.
  }
  if (thread_.joinable()) thread_.join();
}

void HealthServer::serve() {
  for (;;) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) continue;
    answer(client.get());
  }
}

void HealthServer::answer(int fd) {
  std::string request;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kRequestTimeoutMs);
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos &&
         request.find("\n\n") == std::string::npos) {
    if (request.size() > kMaxRequestBytes) {
      respond(fd, {431, "text/plain", "request too large\n"});
      return;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return;  // too slow: drop it
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    request.append(buf, static_cast<std::size_t>(n));
  }
  if (request.rfind("GET ", 0) != 0) {
    respond(fd, {405, "text/plain", "only GET\n"});
    return;
  }
  const std::string path = parse_get_path(request);
  if (path.empty()) {
    respond(fd, {400, "text/plain", "bad request line\n"});
    return;
  }
  respond(fd, handler_(path));
}

}  // namespace portcullis::agent
