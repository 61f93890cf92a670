#include "tests/support/gateway_agent_test.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "dataplane/wireguard/wireguard_go.h"

namespace portcullis::testing {

GatewayAgentTest::GatewayAgentTest(Config config)
    : config_(std::move(config)), dir_(config_.temp_dir) {}

void GatewayAgentTest::SetUp() {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, nftables, BPF)";
  gw_ns_ = std::make_unique<TestNetns>(config_.gateway_netns);
  agent_ns_ = std::make_unique<TestNetns>(config_.agent_netns);
  ASSERT_TRUE(gw_ns_->ok()) << "ip netns add " << gw_ns_->name();
  ASSERT_TRUE(agent_ns_->ok()) << "ip netns add " << agent_ns_->name();
  ASSERT_TRUE(add_veth(*gw_ns_, "vg", *agent_ns_, "va"));
  ASSERT_TRUE(gw_ns_->run(std::string("ip addr add ") + kGatewayVeth + "/24 dev vg").ok());
  ASSERT_TRUE(agent_ns_->run(std::string("ip addr add ") + kAgentVeth + "/24 dev va").ok());
  const std::string pid = std::to_string(::getpid());
  gw_if_ = config_.gateway_if + pid;
  agent_if_ = config_.agent_if + pid;
}

void GatewayAgentTest::TearDown() {
  if (daemon_) {
    if (HasFailure()) {
      std::fprintf(stderr, "---- portcullisd log (%s) ----\n%s\n", daemon_->log_path().c_str(),
                   daemon_->log().c_str());
    }
    daemon_->kill9();
  }
  agent_tunnel_.reset();
  if (!agent_if_.empty()) (void)wg::stop_wireguard_go(agent_if_);
  if (!gw_if_.empty()) (void)wg::stop_wireguard_go(gw_if_);
  agent_ns_.reset();
  gw_ns_.reset();
  remove_bpf_pins(gw_if_);
}

void GatewayAgentTest::start_daemon(const std::string& api_listen) {
  if (!daemon_) {
    PortcullisdOptions o;
    o.binary = config_.portcullisd;
    o.netns_path = gw_ns_->path();
    o.state_dir = state_dir();
    o.env = {{"PORTCULLIS_WIREGUARD_INTERFACE", gw_if_},
             {"PORTCULLIS_WIREGUARD_BACKEND", "userspace"},
             {"PORTCULLIS_API_LISTEN", api_listen},
             {"PORTCULLIS_API_PORT", std::to_string(kApiPort)},
             {"PORTCULLIS_RECONCILER_RESYNC_INTERVAL_S", "2"},
             {"PORTCULLIS_LOG_LEVEL", "info"}};
    daemon_ = std::make_unique<PortcullisdProcess>(o);
  }
  ASSERT_EQ(daemon_->start(std::chrono::seconds(60)), "");
  auto pin = daemon_->log_field("portcullisd ready", "tls_pin");
  ASSERT_TRUE(pin) << "no tls_pin in the ready line";
  pin_ = *pin;
  api_url_ = "https://" + api_listen + ":" + std::to_string(kApiPort);
}

}  // namespace portcullis::testing
