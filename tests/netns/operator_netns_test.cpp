// The operator API end to end: the real portcullisd as a child process, an operator's browser
// (session cookie + X-CSRF-Token) and a simulated agent over real HTTPS, real WireGuard
// (wireguard-go) and the daemon's real nftables table and eBPF programs.
//
//   pcl-ogw-<pid>                                        pcl-oag-<pid>
//   portcullisd (started by the test)                    the agent (this test process: HTTPS
//     wireguard-go pclo<pid>: 10.255.0.1/16, UDP 30000     client, WireguardDevice, sockets)
//     table inet portcullis, tc eBPF on pclo<pid>          wireguard-go pclp<pid>: 10.255.0.N/32
//     HTTPS API 10.0.9.1:8443                              route 10.255.0.1/32 -> tunnel
//     the operator's client (this test process)
//   vg 10.0.9.1/24 ----------------------- veth ----------------------- va 10.0.9.2/24
//
// ApproveAllowlistExplainRevoke: /api/* answers 428 until POST /api/setup; login; the agent
// enrolls (pending) and shows in GET /api/enrollments; approval through POST
// /api/enrollments/<id>/approve; the agent's poll and vpn/ensure succeed and its tunnel
// handshakes; PUT /api/device/vpn_config/<id> replaces the allowlist: the nft set agent-ports
// and the pinned eBPF map pcl_agent_ports hold exactly the new entries, the new port connects
// and the removed one does not; GET /api/explain says allowed for the allowed port and blocked
// with a reason per layer for the removed one; GET /metrics passes `promtool check metrics`;
// POST /api/devices/<id>/revoke: the peer, its set elements and map keys are gone and an
// established flow is cut; the audit log holds the operator's actions.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "dataplane/base/unique_fd.h"
#include "dataplane/tunnel/tunnel_interface.h"
#include "tests/support/agent_client.h"
#include "tests/support/agent_tunnel.h"
#include "tests/support/gateway_agent_test.h"
#include "tests/support/kernel_state.h"
#include "tests/support/netns.h"
#include "tests/support/operator_client.h"
#include "tests/support/portcullisd_process.h"
#include "tests/support/sockets.h"
#include "tests/support/temp_dir.h"

namespace portcullis {
namespace {

using nlohmann::json;
using testing::accept_one;
using testing::bpf_map_keys;
using testing::delivers;
using testing::HttpReply;
using testing::HttpsClient;
using testing::NetnsGuard;
using testing::nft_set;
using testing::OperatorClient;
using testing::SimulatedAgent;
using testing::tcp_connect;
using testing::tcp_listen;
using testing::TestNetns;
using testing::wg_peers;
using Clock = std::chrono::steady_clock;

constexpr const char* kAdmin = "admin";
constexpr const char* kPassword = "operator-netns-password";

std::string pid_text() { return std::to_string(::getpid()); }

// ---- the fixture ------------------------------------------------------------------------------

class OperatorNetnsTest : public testing::GatewayAgentTest {
 protected:
  OperatorNetnsTest()
      : GatewayAgentTest({.portcullisd = PORTCULLISD_BINARY,
                          .gateway_netns = "ogw",
                          .agent_netns = "oag",
                          .gateway_if = "pclo",
                          .agent_if = "pclp",
                          .temp_dir = "pcl-op"}) {}

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(GatewayAgentTest::SetUp());
    if (IsSkipped()) return;
    ASSERT_NO_FATAL_FAILURE(start_daemon(kGatewayVeth));
  }

  // Runs f with this thread in `ns` (the HTTPS clients connect from there).
  template <class F>
  auto in(const TestNetns& ns, F&& f) {
    NetnsGuard guard(ns);
    EXPECT_TRUE(guard.ok());
    return f();
  }

  // The agent side of the tunnel from a vpn/ensure document (as the agent would do it).
  void bring_up_agent_tunnel(const SimulatedAgent& agent, const json& doc) {
    NetnsGuard guard(*agent_ns_);
    ASSERT_TRUE(guard.ok());
    auto tun = testing::bring_up_agent_tunnel(agent_if_, agent.wg_private_key, doc);
    ASSERT_TRUE(tun) << tun.error().message();
    agent_tunnel_ = std::make_unique<tunnel::TunnelInterface>(std::move(*tun));
  }

  // The port elements of one agent address in the nft set and in the pinned eBPF map.
  void expect_kernel_ports(const std::string& ip, const std::set<std::string>& ports) {
    bool ok = false;
    std::set<std::string> want;
    for (const auto& p : ports) want.insert(ip + " . " + p);
    EXPECT_EQ(nft_set(*gw_ns_, "agent-ports", &ok), want) << "nft list set agent-ports";
    EXPECT_TRUE(ok);
    EXPECT_EQ(bpf_map_keys("/sys/fs/bpf/portcullis/" + gw_if_ + "/pcl_agent_ports", &ok), want)
        << "bpftool map dump pinned .../pcl_agent_ports";
    EXPECT_TRUE(ok);
  }
};

TEST_F(OperatorNetnsTest, ApproveAllowlistExplainRevoke) {
  OperatorClient op(api_url_, pin_);
  HttpsClient agent_client(api_url_, pin_);
  SimulatedAgent agent("win-op-" + pid_text());
  auto as_operator = [&](auto&& f) { return in(*gw_ns_, f); };
  auto as_agent = [&](auto&& f) { return in(*agent_ns_, f); };

  // First run: 428 until the admin exists; then a session.
  HttpReply r = as_operator([&] { return op.get("/api/devices"); });
  ASSERT_EQ(r.status, 428) << r.curl_error << r.text;
  EXPECT_EQ(r.error(), "setup_required");
  r = as_operator([&] { return op.setup(kAdmin, kPassword); });
  ASSERT_EQ(r.status, 201) << r.text;
  r = as_operator([&] { return op.login(kAdmin, kPassword); });
  ASSERT_EQ(r.status, 200) << r.text;
  ASSERT_TRUE(op.logged_in()) << "no portcullis_session cookie";
  ASSERT_FALSE(op.csrf_token().empty());

  // The agent enrolls without a code: pending, listed for the operator.
  r = as_agent([&] { return agent.enroll(agent_client); });
  ASSERT_EQ(r.status, 200) << r.curl_error << r.text;
  EXPECT_EQ(r.body.value("status", ""), "pending");
  r = as_agent([&] { return agent.poll(agent_client); });
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body.value("status", ""), "pending");
  r = as_operator([&] { return op.get("/api/enrollments?status=pending"); });
  ASSERT_EQ(r.status, 200) << r.text;
  ASSERT_EQ(r.body["enrollments"].size(), 1u) << r.text;
  EXPECT_EQ(r.body["enrollments"][0].value("id", ""), agent.enrollment_id) << r.text;

  // Approval through the operator API.
  r = as_operator([&] {
    return op.post("/api/enrollments/" + agent.enrollment_id + "/approve", json::object());
  });
  ASSERT_EQ(r.status, 200) << r.text;
  const std::string device_id = r.body.value("device_id", "");
  ASSERT_FALSE(device_id.empty()) << r.text;

  // The agent's ensure now succeeds and its tunnel handshakes.
  r = as_agent([&] { return agent.poll(agent_client); });
  ASSERT_EQ(r.status, 200) << r.text;
  ASSERT_EQ(r.body.value("status", ""), "approved") << r.text;
  EXPECT_EQ(agent.device_id, device_id);
  r = as_agent([&] { return agent.ensure(agent_client); });
  json doc;
  ASSERT_EQ(agent.verify_document(r, &doc), "") << r.text;
  const std::string address = doc.value("address", "");
  const std::string agent_ip = address.substr(0, address.find('/'));
  ASSERT_FALSE(agent_ip.empty()) << doc.dump();
  ASSERT_NO_FATAL_FAILURE(bring_up_agent_tunnel(agent, doc));
  r = as_agent([&] { return agent.ready(agent_client); });
  ASSERT_EQ(r.status, 200) << r.text;
  const std::string agent_key = agent.wg_private_key.public_key().to_base64();
  auto peers = wg_peers(*gw_ns_, gw_if_);
  ASSERT_TRUE(peers.count(agent_key)) << "wg show " << gw_if_ << ": no peer for the agent";
  for (auto deadline = Clock::now() + std::chrono::seconds(15);
       peers[agent_key].handshake == "0" && Clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    peers = wg_peers(*gw_ns_, gw_if_);
  }
  ASSERT_NE(peers[agent_key].handshake, "0") << "no handshake within 15 s";

  // A new allowlist: 8080/tcp and 3478/udp replace the defaults (5985/tcp among them).
  UniqueFd old_listener = tcp_listen(*agent_ns_, agent_ip, 5985);
  UniqueFd new_listener = tcp_listen(*agent_ns_, agent_ip, 8080);
  ASSERT_TRUE(old_listener && new_listener);
  {
    UniqueFd c = tcp_connect(*gw_ns_, agent_ip, 5985, 5000);
    EXPECT_TRUE(c) << "5985/tcp is on the default allowlist";
    UniqueFd s = accept_one(old_listener.get(), 2000);
  }
  EXPECT_FALSE(tcp_connect(*gw_ns_, agent_ip, 8080)) << "8080/tcp is not on the allowlist yet";
  r = as_operator([&] {
    return op.put("/api/device/vpn_config/" + device_id,
                  {{"allowed_ports", {"8080/tcp", "3478/udp"}}});
  });
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body.value("applied", false), true) << r.text;
  r = as_operator([&] { return op.get("/api/device/vpn_config/" + device_id); });
  ASSERT_EQ(r.status, 200) << r.text;
  std::printf("vpn_config after PUT: %s\n", r.text.c_str());
  expect_kernel_ports(agent_ip, {"tcp . 8080", "udp . 3478"});
  {
    UniqueFd c = tcp_connect(*gw_ns_, agent_ip, 8080, 5000);
    EXPECT_TRUE(c) << "gateway -> agent " << agent_ip << ":8080/tcp after the PUT";
    UniqueFd s = accept_one(new_listener.get(), 2000);
    EXPECT_TRUE(s);
  }
  EXPECT_FALSE(tcp_connect(*gw_ns_, agent_ip, 5985)) << "5985/tcp was removed from the allowlist";
  // The ruleset for this device, as the kernel's nft set and BPF map hold it: the new allowlist,
  // nothing missing, nothing left over.
  r = as_operator([&] { return op.get("/api/ruleset?device=" + device_id); });
  ASSERT_EQ(r.status, 200) << r.text;
  std::printf("ruleset of the device: %s\n", r.body["device"].dump().c_str());
  EXPECT_EQ(r.body["device"]["intent"], json::array({"8080/tcp", "3478/udp"})) << r.text;
  ASSERT_EQ(r.body["device"]["layers"].size(), 2u) << r.text;
  for (const auto& l : r.body["device"]["layers"]) {
    EXPECT_EQ(l.value("agent_known", false), true) << l.dump();
    EXPECT_EQ(l["allowed"], json::array({"8080/tcp", "3478/udp"})) << l.dump();
    EXPECT_EQ(l.value("in_sync", false), true) << l.dump();
  }

  // The tunnel is up for the operator (the health snapshot follows the handshake within a
  // reconcile interval), probed on its first TCP port, and listed as active.
  const auto up_wait = Clock::now();
  do {
    r = as_operator([&] { return op.get("/api/tunnel/status?device=" + device_id); });
    ASSERT_EQ(r.status, 200) << r.text;
    if (r.body.value("state", "") == "up") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (Clock::now() - up_wait < std::chrono::seconds(10));
  EXPECT_EQ(r.body.value("state", ""), "up") << r.text;
  r = as_operator([&] { return op.get("/api/tunnel/status?device=" + device_id + "&probe=true"); });
  ASSERT_EQ(r.status, 200) << r.text;
  std::printf("tunnel/status: %s\n", r.text.c_str());
  EXPECT_EQ(r.body["agent_socket"]["port"], 8080) << r.text;
  EXPECT_EQ(r.body["agent_socket"]["reachable"], true) << r.text;
  EXPECT_TRUE(accept_one(new_listener.get(), 2000)) << "the probe's connection";
  r = as_operator([&] { return op.get("/api/tunnel/active"); });
  ASSERT_EQ(r.status, 200) << r.text;
  ASSERT_EQ(r.body["tunnels"].size(), 1u) << r.text;
  EXPECT_EQ(r.body["tunnels"][0].value("agent_id", ""), device_id);
  EXPECT_EQ(r.body["tunnels"][0].value("virtual_ip", ""), agent_ip);

  // Explain: allowed at every layer for 8080/tcp; 5985/tcp blocked, with a reason per layer.
  r = as_operator(
      [&] { return op.get("/api/explain?device=" + device_id + "&port=8080&proto=tcp"); });
  ASSERT_EQ(r.status, 200) << r.text;
  std::printf("explain 8080/tcp: %s\n", r.text.c_str());
  EXPECT_EQ(r.body.value("allowed", false), true) << r.text;
  EXPECT_EQ(r.body.value("reachable", false), true) << r.text;
  EXPECT_TRUE(r.body["blocked_by"].is_null()) << r.text;
  std::set<std::string> layers;
  for (const auto& l : r.body["layers"]) {
    layers.insert(l.value("layer", ""));
    EXPECT_EQ(l["allowed"], true) << l.dump();
  }
  EXPECT_EQ(layers, (std::set<std::string>{"intent", "nftables", "ebpf", "tunnel"})) << r.text;
  r = as_operator(
      [&] { return op.get("/api/explain?device=" + device_id + "&port=5985&proto=tcp"); });
  ASSERT_EQ(r.status, 200) << r.text;
  std::printf("explain 5985/tcp: %s\n", r.text.c_str());
  EXPECT_EQ(r.body.value("allowed", true), false) << r.text;
  EXPECT_EQ(r.body["blocked_by"], "intent") << r.text;
  for (const auto& l : r.body["layers"]) {
    const std::string name = l.value("layer", "");
    EXPECT_FALSE(l.value("why", "").empty()) << "layer " << name << " gives no reason";
    if (name == "intent" || name == "nftables" || name == "ebpf") {
      EXPECT_EQ(l["allowed"], false) << l.dump();
    } else {
      EXPECT_EQ(l["allowed"], true) << "the tunnel itself is up: " << l.dump();
    }
  }

  // /metrics passes the Prometheus text parser.
  {
    HttpsClient plain(api_url_, pin_);
    HttpReply m = as_operator([&] { return plain.get("/metrics"); });
    ASSERT_EQ(m.status, 200) << m.curl_error;
    const std::string file = dir_.file("metrics.txt");
    std::ofstream(file) << m.text;
    ASSERT_TRUE(testing::run("command -v promtool >/dev/null").ok())
        << "promtool missing: apt-get install prometheus (scripts/install-deps.sh)";
    auto check = testing::run("promtool check metrics < " + file + " 2>&1");
    EXPECT_TRUE(check.ok()) << check.out;
  }

  // Revoke through the API while a flow is established on 8080/tcp.
  UniqueFd client_fd = tcp_connect(*gw_ns_, agent_ip, 8080, 5000);
  ASSERT_TRUE(client_fd);
  UniqueFd server_fd = accept_one(new_listener.get(), 2000);
  ASSERT_TRUE(server_fd);
  ASSERT_TRUE(delivers(client_fd.get(), server_fd.get(), 2000));
  ASSERT_TRUE(delivers(server_fd.get(), client_fd.get(), 2000));
  r = as_operator([&] { return op.post("/api/devices/" + device_id + "/revoke", json::object()); });
  ASSERT_EQ(r.status, 200) << r.text;
  const auto revoked_at = Clock::now();
  while (wg_peers(*gw_ns_, gw_if_).count(agent_key) &&
         Clock::now() - revoked_at < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(wg_peers(*gw_ns_, gw_if_).count(agent_key), 0u) << "peer still there after 5 s";
  bool ok = false;
  EXPECT_TRUE(nft_set(*gw_ns_, "agents", &ok).empty());
  expect_kernel_ports(agent_ip, {});
  EXPECT_TRUE(bpf_map_keys("/sys/fs/bpf/portcullis/" + gw_if_ + "/pcl_agents", &ok).empty());
  EXPECT_FALSE(delivers(client_fd.get(), server_fd.get(), 1000)) << "gateway -> agent not cut";
  EXPECT_FALSE(delivers(server_fd.get(), client_fd.get(), 1000)) << "agent -> gateway not cut";
  r = as_agent([&] { return agent.ensure(agent_client); });
  EXPECT_EQ(r.status, 403) << r.text;
  r = as_operator([&] { return op.get("/api/explain?device=" + device_id + "&port=8080"); });
  EXPECT_EQ(r.body["blocked_by"], "intent") << r.text;

  // Every operator action is in the audit log, with who did it.
  r = as_operator([&] { return op.get("/api/audit?limit=100"); });
  ASSERT_EQ(r.status, 200) << r.text;
  std::set<std::string> actions;
  for (const auto& e : r.body["events"]) {
    if (e.value("actor", "") == std::string("operator:") + kAdmin)
      actions.insert(e.value("action", ""));
  }
  for (const char* a : {"operator.login", "enrollment.approve", "device.ports", "device.revoke"}) {
    EXPECT_TRUE(actions.count(a)) << a << " missing from the audit log: " << r.text;
  }
}

}  // namespace
}  // namespace portcullis
