#pragma once
// IP addresses, prefixes and UDP endpoints, IPv4 and IPv6, in network byte order.

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "dataplane/base/result.h"

namespace portcullis {

class IpAddress {
 public:
  IpAddress() = default;
  static IpAddress v4(const in_addr& a);
  static IpAddress v6(const in6_addr& a);
  static IpAddress v4_host_order(std::uint32_t host_order);
  // "10.255.0.7" or "fd00::7".
  static Result<IpAddress> parse(std::string_view text);

  int family() const { return family_; }  // AF_INET, AF_INET6, or AF_UNSPEC when empty
  bool is_v4() const { return family_ == AF_INET; }
  std::size_t size() const { return family_ == AF_INET ? 4 : family_ == AF_INET6 ? 16 : 0; }
  const std::uint8_t* data() const { return bytes_.data(); }
  std::uint32_t v4_host_order() const;
  std::string to_string() const;

  auto operator<=>(const IpAddress&) const = default;

 private:
  int family_ = AF_UNSPEC;
  std::array<std::uint8_t, 16> bytes_{};
};

class IpPrefix {
 public:
  IpPrefix() = default;
  // Fails if cidr exceeds the family's width.
  static Result<IpPrefix> make(const IpAddress& addr, int cidr);
  // "10.255.0.7/32", "fd00::/64"; a bare address means a host prefix (/32 or /128).
  static Result<IpPrefix> parse(std::string_view text);
  static IpPrefix host(const IpAddress& addr);

  const IpAddress& address() const { return addr_; }
  int family() const { return addr_.family(); }
  int cidr() const { return cidr_; }
  bool is_host() const { return cidr_ == static_cast<int>(addr_.size() * 8); }
  bool contains(const IpAddress& a) const;
  // The prefix with its host bits cleared, as the kernel stores allowed IPs.
  IpPrefix masked() const;
  std::string to_string() const;

  auto operator<=>(const IpPrefix&) const = default;

 private:
  IpAddress addr_;
  int cidr_ = 0;
};

class Endpoint {
 public:
  Endpoint() = default;
  Endpoint(IpAddress addr, std::uint16_t port) : addr_(addr), port_(port) {}
  // "192.0.2.1:30000" or "[2001:db8::1]:30000". No DNS: names are resolved by the caller.
  static Result<Endpoint> parse(std::string_view text);
  // From a struct sockaddr of either family (as netlink and getsockname give it).
  static Result<Endpoint> from_sockaddr(const sockaddr* sa, std::size_t len);

  const IpAddress& address() const { return addr_; }
  std::uint16_t port() const { return port_; }
  // Fills storage; returns the length of the sockaddr written.
  socklen_t to_sockaddr(sockaddr_storage* storage) const;
  std::string to_string() const;

  auto operator<=>(const Endpoint&) const = default;

 private:
  IpAddress addr_;
  std::uint16_t port_ = 0;  // host order
};

std::ostream& operator<<(std::ostream& os, const IpAddress& a);
std::ostream& operator<<(std::ostream& os, const IpPrefix& p);
std::ostream& operator<<(std::ostream& os, const Endpoint& e);

}  // namespace portcullis
