#include "dataplane/base/ip.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace portcullis {

IpAddress IpAddress::v4(const in_addr& a) {
  IpAddress r;
  r.family_ = AF_INET;
  std::memcpy(r.bytes_.data(), &a, 4);
  return r;
}

IpAddress IpAddress::v6(const in6_addr& a) {
  IpAddress r;
  r.family_ = AF_INET6;
  std::memcpy(r.bytes_.data(), &a, 16);
  return r;
}

IpAddress IpAddress::v4_host_order(std::uint32_t host_order) {
  in_addr a{htonl(host_order)};
  return v4(a);
}

Result<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) {
    return fail_invalid("'" + std::string(text) + "' is not an IP address");
  }
  std::string s(text);
  in_addr a4;
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) return v4(a4);
  in6_addr a6;
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) return v6(a6);
  return fail_invalid("'" + s + "' is not an IP address");
}

std::uint32_t IpAddress::v4_host_order() const {
  std::uint32_t n;
  std::memcpy(&n, bytes_.data(), 4);
  return ntohl(n);
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family_ == AF_UNSPEC) return "(none)";
  inet_ntop(family_, bytes_.data(), buf, sizeof buf);
  return buf;
}

Result<IpPrefix> IpPrefix::make(const IpAddress& addr, int cidr) {
  int max = static_cast<int>(addr.size() * 8);
  if (addr.family() == AF_UNSPEC) return fail_invalid("prefix has no address");
  if (cidr < 0 || cidr > max) {
    return fail_invalid("prefix length /" + std::to_string(cidr) + " is out of range for " +
                        addr.to_string());
  }
  IpPrefix p;
  p.addr_ = addr;
  p.cidr_ = cidr;
  return p;
}

IpPrefix IpPrefix::host(const IpAddress& addr) {
  IpPrefix p;
  p.addr_ = addr;
  p.cidr_ = static_cast<int>(addr.size() * 8);
  return p;
}

Result<IpPrefix> IpPrefix::parse(std::string_view text) {
  auto slash = text.find('/');
  auto addr = IpAddress::parse(text.substr(0, slash));
  if (!addr) return fail(std::move(addr.error()));
  if (slash == std::string_view::npos) return host(*addr);
  auto len = text.substr(slash + 1);
  int cidr = -1;
  auto [ptr, ec] = std::from_chars(len.data(), len.data() + len.size(), cidr);
  if (len.empty() || ec != std::errc() || ptr != len.data() + len.size()) {
    return fail_invalid("'" + std::string(text) + "' has a bad prefix length");
  }
  return make(*addr, cidr);
}

bool IpPrefix::contains(const IpAddress& a) const {
  if (a.family() != family()) return false;
  int full = cidr_ / 8, rest = cidr_ % 8;
  if (std::memcmp(a.data(), addr_.data(), full) != 0) return false;
  if (rest == 0) return true;
  std::uint8_t mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (a.data()[full] & mask) == (addr_.data()[full] & mask);
}

IpPrefix IpPrefix::masked() const {
  std::array<std::uint8_t, 16> b{};
  std::memcpy(b.data(), addr_.data(), addr_.size());
  for (std::size_t i = 0; i < addr_.size(); ++i) {
    int keep = cidr_ - static_cast<int>(i) * 8;
    if (keep >= 8) continue;
    b[i] &= keep <= 0 ? 0 : static_cast<std::uint8_t>(0xff << (8 - keep));
  }
  IpPrefix p;
  if (addr_.is_v4()) {
    in_addr a;
    std::memcpy(&a, b.data(), 4);
    p.addr_ = IpAddress::v4(a);
  } else {
    in6_addr a;
    std::memcpy(&a, b.data(), 16);
    p.addr_ = IpAddress::v6(a);
  }
  p.cidr_ = cidr_;
  return p;
}

std::string IpPrefix::to_string() const { return addr_.to_string() + "/" + std::to_string(cidr_); }

Result<Endpoint> Endpoint::parse(std::string_view text) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find("]:");
    if (close == std::string_view::npos) {
      return fail_invalid("endpoint '" + std::string(text) + "' must be [v6-address]:port");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return fail_invalid("endpoint '" + std::string(text) + "' must be address:port");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto addr = IpAddress::parse(host);
  if (!addr) return fail(std::move(addr.error()).wrap("endpoint '" + std::string(text) + "'"));
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p == 0 ||
      p > 65535) {
    return fail_invalid("endpoint '" + std::string(text) + "' has a bad port");
  }
  return Endpoint(*addr, static_cast<std::uint16_t>(p));
}

Result<Endpoint> Endpoint::from_sockaddr(const sockaddr* sa, std::size_t len) {
  if (sa && len >= sizeof(sockaddr_in) && sa->sa_family == AF_INET) {
    sockaddr_in in;
    std::memcpy(&in, sa, sizeof in);
    return Endpoint(IpAddress::v4(in.sin_addr), ntohs(in.sin_port));
  }
  if (sa && len >= sizeof(sockaddr_in6) && sa->sa_family == AF_INET6) {
    sockaddr_in6 in6;
    std::memcpy(&in6, sa, sizeof in6);
    return Endpoint(IpAddress::v6(in6.sin6_addr), ntohs(in6.sin6_port));
  }
  return fail_invalid("endpoint sockaddr has a bad family or length " + std::to_string(len));
}

socklen_t Endpoint::to_sockaddr(sockaddr_storage* storage) const {
  std::memset(storage, 0, sizeof *storage);
  if (addr_.is_v4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(port_);
    std::memcpy(&in->sin_addr, addr_.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(storage);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port_);
  std::memcpy(&in6->sin6_addr, addr_.data(), 16);
  return sizeof(sockaddr_in6);
}

std::string Endpoint::to_string() const {
  if (addr_.is_v4()) return addr_.to_string() + ":" + std::to_string(port_);
  return "[" + addr_.to_string() + "]:" + std::to_string(port_);
}

std::ostream& operator<<(std::ostream& os, const IpAddress& a) { return os << a.to_string(); }
std::ostream& operator<<(std::ostream& os, const IpPrefix& p) { return os << p.to_string(); }
std::ostream& operator<<(std::ostream& os, const Endpoint& e) { return os << e.to_string(); }

}  // namespace portcullis
