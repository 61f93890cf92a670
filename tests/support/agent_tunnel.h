#pragma once
// The agent's side of the tunnel from a vpn/ensure document, as portcullis-agent sets it up, for
// tests that play the agent in-process (SimulatedAgent):
//
//   interface <ifname> (wireguard-go), address doc["address"] ("10.255.0.N/32"),
//   route 10.255.0.1/32 -> <ifname>, one peer: the gateway (doc["gateway_wg_public_key"]) at
//   doc["gateway_endpoint"]'s address and doc["gateway_port"], allowed 10.255.0.1/32, keepalive
//   doc["persistent_keepalive"]
//
// Call it with the thread in the agent's namespace (NetnsGuard).

#include <string>

#include <nlohmann/json.hpp>

#include "dataplane/base/key.h"
#include "dataplane/base/result.h"
#include "dataplane/tunnel/tunnel_interface.h"

namespace portcullis::testing {

Result<tunnel::TunnelInterface> bring_up_agent_tunnel(const std::string& ifname,
                                                      const SecretKey& private_key,
                                                      const nlohmann::json& doc);

}  // namespace portcullis::testing
