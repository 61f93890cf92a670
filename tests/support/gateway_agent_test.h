#pragma once
// The fixture of the portcullisd end-to-end tests: the gateway's namespace (portcullisd,
// wireguard-go <gateway_if><pid>) and one agent's (this test process plays the agent), joined by
// a veth:
//
//   pcl-<gateway_netns>-<pid>                            pcl-<agent_netns>-<pid>
//   vg 10.0.9.1/24 ----------------------- veth ----------------------- va 10.0.9.2/24
//
// TearDown prints the daemon's log when the test failed and removes everything, even after a
// failure, in this order: the daemon (SIGKILL), the agent's tunnel, both wireguard-go, the
// namespaces, the daemon's eBPF pins; the temporary directory goes last.

#include <cstdint>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "dataplane/tunnel/tunnel_interface.h"
#include "tests/support/netns.h"
#include "tests/support/portcullisd_process.h"
#include "tests/support/temp_dir.h"

namespace portcullis::testing {

class GatewayAgentTest : public ::testing::Test {
 protected:
  static constexpr const char* kGatewayVeth = "10.0.9.1";
  static constexpr const char* kAgentVeth = "10.0.9.2";
  static constexpr std::uint16_t kApiPort = 8443;

  struct Config {
    std::string portcullisd;    // the binary
    std::string gateway_netns;  // role: pcl-<role>-<pid>
    std::string agent_netns;
    std::string gateway_if;  // prefix: <prefix><pid>
    std::string agent_if;
    std::string temp_dir;  // prefix: $TMPDIR/<prefix>-XXXXXX
  };
  explicit GatewayAgentTest(Config config);

  void SetUp() override;  // skipped without root
  void TearDown() override;

  // Starts portcullisd in the gateway's namespace (the same one again after a stop): state in
  // <temp dir>/state, userspace WireGuard on gw_if_, the API on api_listen:kApiPort, a resync
  // every 2 s. Sets pin_ (from its ready line) and api_url_.
  void start_daemon(const std::string& api_listen);

  std::string state_dir() const { return dir_.file("state"); }

  Config config_;
  TempDir dir_;
  std::unique_ptr<TestNetns> gw_ns_, agent_ns_;
  std::string gw_if_, agent_if_;
  std::unique_ptr<PortcullisdProcess> daemon_;
  std::unique_ptr<tunnel::TunnelInterface> agent_tunnel_;
  std::string api_url_, pin_;
};

}  // namespace portcullis::testing
