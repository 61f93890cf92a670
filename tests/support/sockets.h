#pragma once
// Sockets for namespace tests, opened in-process inside a TestNetns (NetnsGuard around socket()),
// so no helper process has to be started or killed for traffic.
//
//   UniqueFd l = tcp_listen(agent, "0.0.0.0", 5985);       // ADD_FAILURE and empty when it cannot
//   EXPECT_TRUE(tcp_connects(gw, "10.255.0.2", 5985));     // false: no connection within 1 s
//   UniqueFd c = tcp_connect(gw, "10.255.0.2", 5985, 5000);
//   UniqueFd s = accept_one(l.get(), 2000);
//   EXPECT_TRUE(delivers(c.get(), s.get(), 1000));        // one byte from c reaches s
//
// A dropped SYN gets no answer: "blocked" means no connection within timeout_ms.

#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "dataplane/base/unique_fd.h"
#include "tests/support/netns.h"

namespace portcullis::testing {

// addr is dotted IPv4 ("10.255.0.2", "0.0.0.0").
sockaddr_in sockaddr_of(const std::string& addr, std::uint16_t port);

// True when fd has something to read (or a connection to accept) within timeout_ms.
bool readable(int fd, int timeout_ms);

// A TCP listener on addr:port in `ns` (SO_REUSEADDR, backlog 128).
UniqueFd tcp_listen(const TestNetns& ns, const std::string& addr, std::uint16_t port);

// A UDP socket bound to addr:port in `ns`.
UniqueFd udp_bind(const TestNetns& ns, const std::string& addr, std::uint16_t port);

// A TCP connection (blocking once up) from `ns` to addr:port, or an empty fd when none came up
// within timeout_ms.
UniqueFd tcp_connect(const TestNetns& ns, const std::string& addr, std::uint16_t port,
                     int timeout_ms = 1000);

// Whether a TCP connection from `ns` to addr:port comes up within timeout_ms (then closes it).
bool tcp_connects(const TestNetns& ns, const std::string& addr, std::uint16_t port,
                  int timeout_ms = 1000);

// The next connection on a listener, or an empty fd when none came within timeout_ms.
UniqueFd accept_one(int listener, int timeout_ms);

// Sends one byte on `from` and reports whether `to` got it within timeout_ms.
bool delivers(int from, int to, int timeout_ms);

}  // namespace portcullis::testing
