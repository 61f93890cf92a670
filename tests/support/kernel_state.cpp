#include "tests/support/kernel_state.h"

#include <netinet/in.h>

#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

namespace portcullis::testing {

using nlohmann::json;

std::map<std::string, WgPeerRow> wg_peers(const TestNetns& ns, const std::string& ifname,
                                          bool* ok) {
  auto r = ns.run("wg show " + ifname + " dump");
  if (ok != nullptr) *ok = r.ok();
  std::map<std::string, WgPeerRow> peers;
  std::istringstream lines(r.out);
  std::string line;
  std::getline(lines, line);  // the interface
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    std::string pub, psk, endpoint;
    WgPeerRow row;
    f >> pub >> psk >> endpoint >> row.allowed_ips >> row.handshake >> row.rx >> row.tx;
    peers[pub] = row;
  }
  return peers;
}

std::set<std::string> nft_set(const TestNetns& ns, const std::string& set, bool* ok) {
  auto r = ns.run("nft -j list set inet portcullis " + set + " 2>/dev/null");
  if (ok != nullptr) *ok = r.ok();
  std::set<std::string> out;
  json doc = json::parse(r.out, nullptr, false);
  if (!doc.is_object() || !doc.contains("nftables")) return out;
  auto text = [](const json& v) -> std::string {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return std::to_string(v.get<long long>());
    return v.dump();
  };
  for (const auto& item : doc["nftables"]) {
    if (!item.contains("set")) continue;
    for (json e : item["set"].value("elem", json::array())) {
      if (e.is_object() && e.contains("elem")) e = e["elem"]["val"];  // with a comment
      if (e.is_object() && e.contains("concat")) {
        std::string s;
        for (const auto& part : e["concat"]) s += (s.empty() ? "" : " . ") + text(part);
        out.insert(s);
      } else {
        out.insert(text(e));
      }
    }
  }
  return out;
}

std::set<std::string> bpf_map_keys(const std::string& pinned, bool* ok) {
  auto r = run("bpftool -j map dump pinned " + pinned + " 2>/dev/null");
  std::set<std::string> out;
  json entries = json::parse(r.out, nullptr, false);
  *ok = r.ok() && entries.is_array();
  if (!*ok) return out;
  for (const auto& e : entries) {
    std::vector<unsigned> b;
    for (const auto& byte : e.value("key", json::array())) {
      b.push_back(static_cast<unsigned>(std::stoul(byte.get<std::string>(), nullptr, 16)));
    }
    if (b.size() < 4) continue;
    std::string key = std::to_string(b[0]) + "." + std::to_string(b[1]) + "." +
                      std::to_string(b[2]) + "." + std::to_string(b[3]);
    if (b.size() >= 7) {
      const unsigned port = b[4] | (b[5] << 8);  // host order: little endian on x86
      key += std::string(" . ") +
             (b[6] == IPPROTO_TCP   ? "tcp"
              : b[6] == IPPROTO_UDP ? "udp"
                                    : "?") +
             " . " + std::to_string(port);
    }
    out.insert(key);
  }
  return out;
}

}  // namespace portcullis::testing
