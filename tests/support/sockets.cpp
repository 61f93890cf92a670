#include "tests/support/sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include <gtest/gtest.h>

namespace portcullis::testing {

sockaddr_in sockaddr_of(const std::string& addr, std::uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
  return sa;
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

UniqueFd tcp_listen(const TestNetns& ns, const std::string& addr, std::uint16_t port) {
  NetnsGuard in(ns);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int on = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  auto sa = sockaddr_of(addr, port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      ::listen(fd.get(), 128) != 0) {
    ADD_FAILURE() << "listen on " << addr << ":" << port << " in " << ns.name();
    return UniqueFd();
  }
  return fd;
}

UniqueFd udp_bind(const TestNetns& ns, const std::string& addr, std::uint16_t port) {
  NetnsGuard in(ns);
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  auto sa = sockaddr_of(addr, port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ADD_FAILURE() << "bind udp " << addr << ":" << port << " in " << ns.name();
    return UniqueFd();
  }
  return fd;
}

UniqueFd tcp_connect(const TestNetns& ns, const std::string& addr, std::uint16_t port,
                     int timeout_ms) {
  NetnsGuard in(ns);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  auto sa = sockaddr_of(addr, port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) return fd;
  if (errno != EINPROGRESS) return UniqueFd();
  pollfd p{fd.get(), POLLOUT, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return UniqueFd();
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) return UniqueFd();
  ::fcntl(fd.get(), F_SETFL, 0);
  return fd;
}

bool tcp_connects(const TestNetns& ns, const std::string& addr, std::uint16_t port,
                  int timeout_ms) {
  return static_cast<bool>(tcp_connect(ns, addr, port, timeout_ms));
}

UniqueFd accept_one(int listener, int timeout_ms) {
  if (!readable(listener, timeout_ms)) return UniqueFd();
  return UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

bool delivers(int from, int to, int timeout_ms) {
  if (::send(from, "x", 1, MSG_NOSIGNAL) != 1) return false;
  char c;
  return readable(to, timeout_ms) && ::recv(to, &c, 1, 0) == 1;
}

}  // namespace portcullis::testing
