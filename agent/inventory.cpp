#include "agent/inventory.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "dataplane/base/ip.h"

namespace portcullis::agent {

std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string os_pretty_name(const std::string& text) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("PRETTY_NAME=", 0) != 0) continue;
    std::string v = line.substr(12);
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
      v = v.substr(1, v.size() - 2);
    }
    return v;
  }
  return "";
}

nlohmann::json collect_inventory(const std::string& hostname, const std::string& tunnel_ifname) {
  nlohmann::json inv = {{"hostname", hostname}, {"agent", "portcullis-agent"}};
  std::ifstream f("/etc/os-release");
  if (f) {
    std::ostringstream s;
    s << f.rdbuf();
    inv["os"] = os_pretty_name(s.str());
  }
  utsname u{};
  if (::uname(&u) == 0) {
    inv["kernel"] = std::string(u.sysname) + " " + u.release + " " + u.machine;
  }
  nlohmann::json addresses = nlohmann::json::array();
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    std::unique_ptr<ifaddrs, decltype(&::freeifaddrs)> owner(list, ::freeifaddrs);
    for (ifaddrs* i = list; i != nullptr && addresses.size() < 64; i = i->ifa_next) {
      if (i->ifa_addr == nullptr || (i->ifa_flags & IFF_LOOPBACK)) continue;
      if (tunnel_ifname == i->ifa_name) continue;
      auto family = i->ifa_addr->sa_family;
      if (family != AF_INET && family != AF_INET6) continue;
      auto e = Endpoint::from_sockaddr(
          i->ifa_addr, family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
      if (!e) continue;
      addresses.push_back({{"interface", i->ifa_name}, {"address", e->address().to_string()}});
    }
  }
  inv["addresses"] = std::move(addresses);
  return inv;
}

}  // namespace portcullis::agent
