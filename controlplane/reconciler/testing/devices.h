#pragma once
// Devices for reconciler tests, with keys that are easy to tell apart in a failure message:
//
//   device("dev-a", 1, "10.255.0.2")            tcp/5985, WireGuard key key_of(1)
//   device("dev-b", 2, nullptr, {})             no address yet, no ports

#include <cstdint>
#include <utility>
#include <vector>

#include "controlplane/state/store.h"
#include "dataplane/base/ip.h"
#include "dataplane/base/key.h"

namespace portcullis::reconciler::testing {

inline IpAddress ip(const char* s) { return *IpAddress::parse(s); }

// A public key whose first byte is n (and last 0x42, so it is never all zeroes).
inline Key key_of(int n) {
  KeyBytes b{};
  b[0] = static_cast<std::uint8_t>(n);
  b[31] = 0x42;
  return Key(b);
}

inline state::Device device(const char* id, int key, const char* addr,
                            std::vector<state::PortRule> ports = {{filter::Protocol::kTcp, 5985}}) {
  state::Device d;
  d.id = id;
  d.wg_key = key_of(key);
  if (addr) d.address = ip(addr);
  d.ports = std::move(ports);
  return d;
}

}  // namespace portcullis::reconciler::testing
