#include "agent/health_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

namespace portcullis::agent {
namespace {

// Sends `request` to 127.0.0.1:port and returns everything the server answers.
std::string exchange(std::uint16_t port, const std::string& request) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return "";
  ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) out.append(buf, n);
  return out;
}

TEST(HealthServerTest, ServesPathsAndRefusesTheRest) {
  auto s = HealthServer::start(0, [](const std::string& path) {
    if (path == "/healthz") return HealthResponse{200, "application/json", "{\"status\":\"ok\"}"};
    return HealthResponse{404, "text/plain", "not found\n"};
  });
  ASSERT_TRUE(s) << s.error().message();
  const auto port = (*s)->port();
  ASSERT_NE(port, 0);

  auto ok = exchange(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << ok;
  EXPECT_NE(ok.find("Content-Length: 15\r\n"), std::string::npos);
  EXPECT_NE(ok.find("\r\n\r\n{\"status\":\"ok\"}"), std::string::npos);

  EXPECT_EQ(exchange(port, "GET /healthz?x=1 HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 200", 0), 0u);
  EXPECT_EQ(exchange(port, "GET /nope HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 404", 0), 0u);
  EXPECT_EQ(exchange(port, "POST /healthz HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 405", 0), 0u);
  EXPECT_EQ(exchange(port, "GET nonsense\r\n\r\n").rfind("HTTP/1.0 400", 0), 0u);
  const std::string huge = "GET /healthz HTTP/1.0\r\nX: " + std::string(8000, 'a') + "\r\n\r\n";
  EXPECT_EQ(exchange(port, huge).rfind("HTTP/1.0 431", 0), 0u);
  // Still serving after all that.
  EXPECT_EQ(exchange(port, "GET /healthz HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 200", 0), 0u);
}

TEST(HealthServerTest, ParsesRequestLines) {
  EXPECT_EQ(parse_get_path("GET /metrics HTTP/1.1\r\n"), "/metrics");
  EXPECT_EQ(parse_get_path("GET /a?b HTTP/1.0\n"), "/a");
  EXPECT_EQ(parse_get_path("GET  HTTP/1.0\r\n"), "");
  EXPECT_EQ(parse_get_path("GET /x FTP/1.0\r\n"), "");
  EXPECT_EQ(parse_get_path("PUT /x HTTP/1.0\r\n"), "");
}

}  // namespace
}  // namespace portcullis::agent
