#pragma once
// What the agent asks of its WireGuard interface: three calls. TunnelController does them with
// CAP_NET_ADMIN (in the tunnel keeper process); TunnelClient forwards them to that process from
// the unprivileged worker (tunnel_keeper.h).

#include <cstdint>
#include <optional>
#include <string>

#include "agent/agent_protocol.h"
#include "dataplane/base/ip.h"
#include "dataplane/base/result.h"

namespace portcullis::agent {

struct TunnelObservation {
  bool present = false;                         // the link exists
  bool correct = false;                         // the peer set is exactly the document's peer
  std::optional<std::int64_t> handshake_age_s;  // none: never
  std::uint64_t rx_bytes = 0;
  std::uint64_t tx_bytes = 0;
  std::string problem;  // why not correct

  bool operator==(const TunnelObservation&) const = default;
};

class Tunnel {
 public:
  virtual ~Tunnel() = default;
  // Converges the interface; true when anything was changed. On failure the interface is gone.
  virtual Result<bool> apply(const TunnelDocument& doc, const Endpoint& endpoint) = 0;
  // Removes the interface (and its wireguard-go). Success when there is none.
  virtual Status remove() = 0;
  // Cheap: one link read and one device read. `doc` is the last applied document.
  virtual TunnelObservation observe(const TunnelDocument& doc, std::int64_t now) = 0;
};

}  // namespace portcullis::agent
