// portcullisd end to end: the real daemon as a child process, a simulated agent over real HTTPS,
// real WireGuard (wireguard-go) and the daemon's real nftables table and eBPF programs.
//
//   pcl-dgw-<pid>                                        pcl-dag-<pid>
//   portcullisd (started and stopped by the test)        the agent (this test process: HTTPS
//     wireguard-go pcld<pid>: 10.255.0.1/16, UDP 30000     client, WireguardDevice, sockets)
//     table inet portcullis, tc eBPF on pcld<pid>          wireguard-go pcla<pid>: 10.255.0.N/32
//     HTTPS API 10.0.9.1:8443, admin socket <tmp>/admin.sock   route 10.255.0.1/32 -> tunnel
//   vg 10.0.9.1/24 ----------------------- veth ----------------------- va 10.0.9.2/24
//
// AgentLifecycle: enroll (pending) -> approve with `portcullisd enrollment approve` -> poll ->
// vpn/ensure (signed document checked byte for byte) -> agent brings up its side -> vpn/ready ->
// handshake; the gateway reaches an allowed TCP port and not another. Then (a) SIGTERM and start
// again: the agent's peer keeps its handshake time and counters exactly and adoption changes
// nothing; (b) `nft flush table inet portcullis` is repaired within 10 s (resync every 2 s);
// (c) /health is ready and /metrics passes `promtool check metrics`; (d) revoke: peer and set
// elements gone, an established connection cut, the next vpn/ensure refused with 403.
//
// KillDuringBurst: 200 agents enroll with codes and ensure (some revoked, some with new ports)
// while the daemon is SIGKILLed mid-burst; after a restart every acknowledged change is in the
// database, the database passes integrity_check, and WireGuard peers and nft set elements are
// exactly the active devices with addresses, and so are the eBPF maps' keys.

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "controlplane/admin/admin_socket.h"
#include "controlplane/api/crypto.h"
#include "controlplane/http/tls_identity.h"
#include "dataplane/base/unique_fd.h"
#include "dataplane/tunnel/tunnel_interface.h"
#include "dataplane/wireguard/wireguard_go.h"
#include "tests/support/agent_client.h"
#include "tests/support/agent_tunnel.h"
#include "tests/support/gateway_agent_test.h"
#include "tests/support/kernel_state.h"
#include "tests/support/netns.h"
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
using testing::SimulatedAgent;
using testing::tcp_connect;
using testing::tcp_listen;
using testing::wg_peers;

using Clock = std::chrono::steady_clock;

constexpr std::uint16_t kWgPort = 30000;

std::string pid_text() { return std::to_string(::getpid()); }

// "10.255.0.7/32" -> "10.255.0.7"
std::string host_of(const std::string& prefix) { return prefix.substr(0, prefix.find('/')); }

// ---- the fixture ------------------------------------------------------------------------------

class DaemonTest : public testing::GatewayAgentTest {
 protected:
  DaemonTest()
      : GatewayAgentTest({.portcullisd = PORTCULLISD_BINARY,
                          .gateway_netns = "dgw",
                          .agent_netns = "dag",
                          .gateway_if = "pcld",
                          .agent_if = "pcla",
                          .temp_dir = "pcl-e2e"}) {}

  // Also: the pin in the log is the one of the certificate in the state directory.
  void start_daemon(const std::string& api_listen) {
    ASSERT_NO_FATAL_FAILURE(GatewayAgentTest::start_daemon(api_listen));
    auto identity =
        http::load_tls_identity(state_dir() + "/tls/cert.pem", state_dir() + "/tls/key.pem");
    ASSERT_TRUE(identity) << identity.error().message();
    EXPECT_EQ(pin_, identity->public_key_pin());
  }

  Result<json> admin(const std::string& command, const json& args = json::object()) {
    return admin::admin_request(daemon_->admin_socket(), command, args);
  }

  // The agent's HTTPS calls happen in its own namespace.
  template <class F>
  auto as_agent(F&& f) {
    NetnsGuard in(*agent_ns_);
    EXPECT_TRUE(in.ok());
    return f();
  }
};

TEST_F(DaemonTest, AgentLifecycle) {
  ASSERT_NO_FATAL_FAILURE(start_daemon(kGatewayVeth));
  const auto gw_wg_key = daemon_->log_field("portcullisd ready", "wireguard_public_key");
  ASSERT_TRUE(gw_wg_key);
  HttpsClient client(api_url_, pin_);
  SimulatedAgent agent("win-e2e-" + pid_text());

  // Enroll without a code: pending until an operator approves.
  HttpReply r = as_agent([&] { return agent.enroll(client); });
  ASSERT_EQ(r.status, 200) << r.curl_error << r.text;
  EXPECT_EQ(r.body.value("status", ""), "pending");
  ASSERT_FALSE(agent.enrollment_id.empty());
  r = as_agent([&] { return agent.poll(client); });
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body, json({{"status", "pending"}}));

  // The operator approves on the command line, through the admin socket.
  auto cli = testing::run(std::string(PORTCULLISD_BINARY) + " --admin-socket " +
                          daemon_->admin_socket() + " enrollment approve " + agent.enrollment_id);
  ASSERT_TRUE(cli.ok()) << cli.out;
  json approved = json::parse(cli.out, nullptr, false);
  ASSERT_TRUE(approved.is_object()) << cli.out;
  const std::string device_id = approved.value("device_id", "");
  ASSERT_FALSE(device_id.empty()) << cli.out;

  r = as_agent([&] { return agent.poll(client); });
  ASSERT_EQ(r.status, 200) << r.text;
  ASSERT_EQ(r.body.value("status", ""), "approved") << r.text;
  EXPECT_EQ(agent.device_id, device_id);
  auto signing = api::SigningKey::load_or_create(state_dir() + "/signing.key");
  ASSERT_TRUE(signing) << signing.error().message();
  EXPECT_EQ(agent.gateway_signing_key, signing->public_key());

  // vpn/ensure: a document signed over its exact bytes; ensure again changes nothing.
  r = as_agent([&] { return agent.ensure(client); });
  json doc;
  ASSERT_EQ(agent.verify_document(r, &doc), "");
  {
    HttpReply tampered = r;
    std::string text = tampered.body["document"];
    text[text.find("\"persistent_keepalive\":30") + 23] = '9';
    tampered.body["document"] = text;
    json ignored;
    EXPECT_NE(agent.verify_document(tampered, &ignored), "") << "an altered byte must not verify";
  }
  const std::string address = doc.value("address", "");
  const std::string agent_ip = host_of(address);
  EXPECT_TRUE(address.starts_with("10.255.") && address.ends_with("/32")) << address;
  EXPECT_NE(agent_ip, "10.255.0.1");
  EXPECT_EQ(doc["allowed_ips"], json::array({"10.255.0.1/32"}));
  EXPECT_EQ(doc["gateway_wg_public_key"], *gw_wg_key);
  // No endpoint configured: the host the agent used for the API, with the WireGuard port.
  EXPECT_EQ(doc["gateway_endpoint"], std::string(kGatewayVeth) + ":30000");
  EXPECT_EQ(doc["gateway_port"], kWgPort);
  EXPECT_EQ(doc["persistent_keepalive"], 30);
  EXPECT_EQ(doc["device_id"], device_id);
  EXPECT_EQ(doc["version"], 1);
  EXPECT_GT(doc.value("expires_at", 0LL), doc.value("issued_at", 0LL));
  EXPECT_TRUE(doc["allowed_ports"].is_array() &&
              std::find(doc["allowed_ports"].begin(), doc["allowed_ports"].end(),
                        json({{"port", 5985}, {"protocol", "tcp"}})) != doc["allowed_ports"].end())
      << doc.dump();
  for (int i = 0; i < 3; ++i) {
    HttpReply again = as_agent([&] { return agent.ensure(client); });
    json doc2;
    ASSERT_EQ(agent.verify_document(again, &doc2), "");
    EXPECT_EQ(doc2["address"], address);
    EXPECT_NE(doc2["nonce"], doc["nonce"]);
  }

  // The agent brings up its side from the document.
  {
    NetnsGuard in(*agent_ns_);
    ASSERT_TRUE(in.ok());
    auto tun = testing::bring_up_agent_tunnel(agent_if_, agent.wg_private_key, doc);
    ASSERT_TRUE(tun) << tun.error().message();
    agent_tunnel_ = std::make_unique<tunnel::TunnelInterface>(std::move(*tun));
  }
  r = as_agent([&] { return agent.ready(client); });
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body, json({{"ready", true}}));

  // The gateway holds exactly this peer, and it handshakes (the agent's keepalive starts it).
  const std::string agent_key = agent.wg_private_key.public_key().to_base64();
  auto peers = wg_peers(*gw_ns_, gw_if_);
  ASSERT_EQ(peers.size(), 1u);
  ASSERT_TRUE(peers.count(agent_key));
  EXPECT_EQ(peers[agent_key].allowed_ips, address);
  for (auto deadline = Clock::now() + std::chrono::seconds(15);
       peers[agent_key].handshake == "0" && Clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    peers = wg_peers(*gw_ns_, gw_if_);
  }
  ASSERT_NE(peers[agent_key].handshake, "0") << "no handshake within 15 s";
  EXPECT_EQ(nft_set(*gw_ns_, "agents"), std::set<std::string>{agent_ip});
  EXPECT_TRUE(nft_set(*gw_ns_, "agent-ports").count(agent_ip + " . tcp . 5985"));

  // The allowlist holds: 5985/tcp is open, 8080 is not (ICMP is not allowed either).
  UniqueFd allowed_listener = tcp_listen(*agent_ns_, agent_ip, 5985);
  UniqueFd denied_listener = tcp_listen(*agent_ns_, agent_ip, 8080);
  ASSERT_TRUE(allowed_listener && denied_listener);
  {
    UniqueFd c = tcp_connect(*gw_ns_, agent_ip, 5985, 5000);
    EXPECT_TRUE(c) << "gateway -> agent " << agent_ip << ":5985/tcp";
    UniqueFd s = accept_one(allowed_listener.get(), 2000);
    EXPECT_TRUE(s);
  }
  EXPECT_FALSE(tcp_connect(*gw_ns_, agent_ip, 8080)) << "8080/tcp is not on the allowlist";
  EXPECT_FALSE(gw_ns_->run("ping -c 1 -W 1 " + agent_ip + " >/dev/null 2>&1").ok());

  // (a) Restart. WireGuard answers data with a keepalive after 10 s of sending nothing; wait
  // that out, so no packet moves between the two reads and counters must match exactly.
  std::this_thread::sleep_for(std::chrono::seconds(11));
  auto wg_go_before = wg::wireguard_go_pid(gw_if_);
  ASSERT_TRUE(wg_go_before);
  const auto before = wg_peers(*gw_ns_, gw_if_);
  EXPECT_EQ(daemon_->stop(), 0) << "SIGTERM: a clean exit";
  EXPECT_TRUE(gw_ns_->run("ip link show " + gw_if_ + " >/dev/null").ok())
      << "the tunnel stays when the daemon stops";
  EXPECT_FALSE(nft_set(*gw_ns_, "agents").empty()) << "the filter stays when the daemon stops";
  ASSERT_NO_FATAL_FAILURE(start_daemon(kGatewayVeth));
  const auto after = wg_peers(*gw_ns_, gw_if_);
  ASSERT_EQ(after.size(), 1u);
  ASSERT_TRUE(after.count(agent_key));
  EXPECT_EQ(after.at(agent_key).handshake, before.at(agent_key).handshake);
  EXPECT_EQ(after.at(agent_key).rx, before.at(agent_key).rx);
  EXPECT_EQ(after.at(agent_key).tx, before.at(agent_key).tx);
  EXPECT_EQ(after.at(agent_key).allowed_ips, address);
  auto wg_go_after = wg::wireguard_go_pid(gw_if_);
  ASSERT_TRUE(wg_go_after);
  EXPECT_EQ(*wg_go_after, *wg_go_before) << "the daemon adopted the running wireguard-go";
  EXPECT_EQ(daemon_->log_field("tunnel interface ready", "wireguard_go_started"), "no");
  const auto report = daemon_->log_field("initial reconcile", "report").value_or("");
  std::printf("restart: %s\n", report.c_str());
  EXPECT_NE(report.find(" adoption applied"), std::string::npos) << report;
  EXPECT_NE(report.find("wireguard: +0 -0 ~0 peers;"), std::string::npos) << report;
  EXPECT_NE(report.find("nftables: +0 -0 elements"), std::string::npos) << report;
  EXPECT_NE(report.find("ebpf: +0 -0 elements"), std::string::npos) << report;
  EXPECT_EQ(daemon_->log_field("kernel state adopted", "changing_calls"), "0") << report;
  {
    UniqueFd c = tcp_connect(*gw_ns_, agent_ip, 5985, 5000);
    EXPECT_TRUE(c) << "the tunnel carries traffic after the restart";
    UniqueFd s = accept_one(allowed_listener.get(), 2000);
  }
  EXPECT_FALSE(tcp_connect(*gw_ns_, agent_ip, 8080));

  // (b) Drift: every rule of the table and the port elements flushed behind the daemon's back.
  const std::string chain_cmd = "nft list chain inet portcullis filter-output";
  ASSERT_TRUE(gw_ns_->run("nft flush table inet portcullis").ok());
  ASSERT_TRUE(gw_ns_->run("nft flush set inet portcullis agent-ports").ok());
  EXPECT_TRUE(nft_set(*gw_ns_, "agent-ports").empty());
  EXPECT_EQ(gw_ns_->run(chain_cmd).out.find("@agent-ports"), std::string::npos);
  const auto flushed_at = Clock::now();
  bool repaired = false;
  while (!repaired && Clock::now() - flushed_at < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    repaired = nft_set(*gw_ns_, "agent-ports").count(agent_ip + " . tcp . 5985") &&
               gw_ns_->run(chain_cmd).out.find("@agent-ports") != std::string::npos;
  }
  const auto repaired_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - flushed_at).count();
  EXPECT_TRUE(repaired) << "not repaired within 10 s";
  std::printf("nft flush repaired after %lld ms\n", static_cast<long long>(repaired_ms));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(daemon_->log_field("drift repaired", "layer"), "nftables") << daemon_->log();
  EXPECT_FALSE(tcp_connect(*gw_ns_, agent_ip, 8080)) << "the repaired table drops 8080 again";
  {
    UniqueFd c = tcp_connect(*gw_ns_, agent_ip, 5985, 5000);
    EXPECT_TRUE(c) << "the repaired table lets 5985/tcp through";
    UniqueFd s = accept_one(allowed_listener.get(), 2000);
  }

  // (c) Health and metrics.
  {
    HttpsClient plain(api_url_, pin_);
    HttpReply health = as_agent([&] { return plain.get("/health"); });
    EXPECT_EQ(health.status, 200) << health.text;
    EXPECT_EQ(health.body.value("status", ""), "ready") << health.text;
    // An ensure since the restart: one committed request transaction at least.
    ASSERT_EQ(as_agent([&] { return agent.ensure(client); }).status, 200);
    HttpReply metrics = as_agent([&] { return plain.get("/metrics"); });
    ASSERT_EQ(metrics.status, 200) << metrics.curl_error;
    EXPECT_NE(metrics.text.find("portcullis_drift_repairs_total{layer=\"nftables\"}"),
              std::string::npos);
    EXPECT_NE(metrics.text.find("\nportcullis_store_commits_total "), std::string::npos);
    const auto transactions = metrics.text.find("\nportcullis_store_transactions_total ");
    ASSERT_NE(transactions, std::string::npos) << metrics.text;
    EXPECT_GE(std::stoll(metrics.text.substr(transactions + 37)), 1) << metrics.text;
    const std::string file = dir_.file("metrics.txt");
    std::ofstream(file) << metrics.text;
    if (testing::run("command -v promtool >/dev/null").ok()) {
      auto check = testing::run("promtool check metrics < " + file + " 2>&1");
      EXPECT_TRUE(check.ok()) << check.out;
    } else {
      std::printf("promtool not installed: /metrics not linted\n");
    }
  }

  // (d) Revoke: an established connection through the tunnel, then the operator revokes.
  UniqueFd client_fd = tcp_connect(*gw_ns_, agent_ip, 5985, 5000);
  ASSERT_TRUE(client_fd);
  UniqueFd server_fd = accept_one(allowed_listener.get(), 2000);
  ASSERT_TRUE(server_fd);
  ASSERT_TRUE(delivers(client_fd.get(), server_fd.get(), 2000));
  ASSERT_TRUE(delivers(server_fd.get(), client_fd.get(), 2000));
  auto revoked = admin("device.revoke", {{"id", device_id}});
  ASSERT_TRUE(revoked) << revoked.error().message();
  const auto revoked_at = Clock::now();
  while (wg_peers(*gw_ns_, gw_if_).count(agent_key) &&
         Clock::now() - revoked_at < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(wg_peers(*gw_ns_, gw_if_).count(agent_key), 0u) << "peer still there after 5 s";
  EXPECT_TRUE(nft_set(*gw_ns_, "agents").empty());
  EXPECT_TRUE(nft_set(*gw_ns_, "agent-ports").empty());
  EXPECT_FALSE(delivers(client_fd.get(), server_fd.get(), 1000)) << "gateway -> agent not cut";
  EXPECT_FALSE(delivers(server_fd.get(), client_fd.get(), 1000)) << "agent -> gateway not cut";
  EXPECT_FALSE(tcp_connect(*gw_ns_, agent_ip, 5985));
  r = as_agent([&] { return agent.ensure(client); });
  EXPECT_EQ(r.status, 403) << r.text;
  EXPECT_EQ(r.error(), "device_revoked") << r.text;
  auto list = admin("device.list");
  ASSERT_TRUE(list) << list.error().message();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].value("status", ""), "revoked");
}

// ---- kill -9 during a burst -------------------------------------------------------------------

struct Acknowledged {
  std::string device_id;
  std::string address;  // from the ensure document, "10.255.0.7/32"
  bool revoked = false;
  std::vector<std::string> ports;  // set by device.ports, if it answered
  bool uncertain = false;          // a revoke or ports change was in flight at the kill
};

std::string integrity_check(const std::string& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string e = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return "open: " + e;
  }
  std::string result;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW) {
      result += reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    }
  } else {
    result = sqlite3_errmsg(db);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return result;
}

TEST_F(DaemonTest, KillDuringBurst) {
  // The API on the gateway's loopback: the burst's client enters the gateway namespace.
  ASSERT_NO_FATAL_FAILURE(start_daemon("127.0.0.1"));
  constexpr int kAgents = 200;
  std::vector<Acknowledged> acked;
  std::mutex acked_mu;
  std::atomic<int> ensured{0};
  std::atomic<bool> stop{false};
  std::string burst_error;

  std::thread burst([&] {
    NetnsGuard in(*gw_ns_);
    HttpsClient client(api_url_, pin_);
    for (int i = 0; i < kAgents && !stop; ++i) {
      auto code = admin("enrollment-code.create", {{"ttl_s", 3600}});
      if (!code) return;
      SimulatedAgent agent("burst-" + std::to_string(i));
      if (agent.enroll(client, code->value("code", "")).status != 200) return;
      if (agent.poll(client).status != 200 || agent.access_token.empty()) return;
      HttpReply r = agent.ensure(client);
      json doc;
      if (!agent.verify_document(r, &doc).empty()) return;
      // Every 10th agent waits until the gateway applied it, so the kernel keeps up in steps.
      if (i % 10 == 0 && agent.ready(client).status != 200) return;
      {
        std::lock_guard lock(acked_mu);
        acked.push_back({agent.device_id, doc.value("address", ""), false, {}, false});
      }
      ++ensured;
      // An admin change cut by the kill may or may not have been committed: not checked.
      if (i % 7 == 3) {
        auto revoked = admin("device.revoke", {{"id", agent.device_id}});
        std::lock_guard lock(acked_mu);
        if (!revoked) acked.back().uncertain = true;
        if (!revoked) return;
        acked.back().revoked = true;
      } else if (i % 5 == 1) {
        std::vector<std::string> ports = {"22/tcp", "3478/udp", "5985/tcp"};
        auto set = admin("device.ports", {{"id", agent.device_id}, {"ports", ports}});
        std::lock_guard lock(acked_mu);
        if (!set) acked.back().uncertain = true;
        if (!set) return;
        acked.back().ports = ports;
      }
    }
    burst_error = "the burst finished before the kill";
  });
  // Kill once a good part of the burst is through (bounded: 60 s).
  for (auto deadline = Clock::now() + std::chrono::seconds(60);
       ensured < kAgents / 2 && Clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  daemon_->kill9();
  stop = true;
  burst.join();
  EXPECT_EQ(burst_error, "");
  std::printf("killed after %d acknowledged ensures\n", ensured.load());
  ASSERT_GT(ensured.load(), 10);

  EXPECT_EQ(integrity_check(state_dir() + "/portcullis.db"), "ok");
  ASSERT_NO_FATAL_FAILURE(start_daemon("127.0.0.1"));
  EXPECT_EQ(integrity_check(state_dir() + "/portcullis.db"), "ok");

  // Nothing acknowledged is lost.
  auto list = admin("device.list");
  ASSERT_TRUE(list) << list.error().message();
  std::map<std::string, json> devices;
  for (const auto& d : *list) devices[d.value("id", "")] = d;
  for (const auto& a : acked) {
    SCOPED_TRACE("device " + a.device_id);
    ASSERT_TRUE(devices.count(a.device_id));
    const json& d = devices[a.device_id];
    EXPECT_EQ(d.value("address", ""), host_of(a.address));
    if (a.uncertain) continue;
    EXPECT_EQ(d.value("status", ""), a.revoked ? "revoked" : "active");
    if (!a.ports.empty()) {
      EXPECT_EQ(d["ports"].get<std::set<std::string>>(),
                std::set<std::string>(a.ports.begin(), a.ports.end()));
    }
  }

  // The kernel holds exactly the active devices that have an address.
  std::map<std::string, std::string> want_peers;  // key -> "10.255.0.7/32"
  std::set<std::string> want_agents, want_ports;
  for (const auto& [id, d] : devices) {
    if (d.value("status", "") != "active" || !d["address"].is_string()) continue;
    const std::string ip = d["address"];
    want_peers[d.value("wg_public_key", "")] = ip + "/32";
    want_agents.insert(ip);
    for (const auto& p : d["ports"]) {
      const std::string rule = p;  // "5985/tcp"
      const auto slash = rule.find('/');
      want_ports.insert(ip + " . " + rule.substr(slash + 1) + " . " + rule.substr(0, slash));
    }
  }
  std::printf("after restart: %zu devices, %zu active with an address, %zu port elements\n",
              devices.size(), want_peers.size(), want_ports.size());
  bool ok = false;
  std::map<std::string, std::string> have_peers;
  for (const auto& [key, row] : wg_peers(*gw_ns_, gw_if_, &ok)) have_peers[key] = row.allowed_ips;
  ASSERT_TRUE(ok);
  EXPECT_EQ(have_peers, want_peers);
  EXPECT_EQ(nft_set(*gw_ns_, "agents", &ok), want_agents);
  ASSERT_TRUE(ok);
  EXPECT_EQ(nft_set(*gw_ns_, "agent-ports", &ok), want_ports);
  ASSERT_TRUE(ok);
  const std::string pins = "/sys/fs/bpf/portcullis/" + gw_if_ + "/";
  EXPECT_EQ(bpf_map_keys(pins + "pcl_agents", &ok), want_agents);
  EXPECT_TRUE(ok) << "bpftool map dump " << pins << "pcl_agents";
  EXPECT_EQ(bpf_map_keys(pins + "pcl_agent_ports", &ok), want_ports);
  EXPECT_TRUE(ok) << "bpftool map dump " << pins << "pcl_agent_ports";
  const auto report = daemon_->log_field("initial reconcile", "report").value_or("");
  std::printf("restart after kill -9: %s\n", report.c_str());
  EXPECT_NE(report.find(" applied"), std::string::npos) << report;

  // The daemon goes on serving: one more agent.
  NetnsGuard in(*gw_ns_);
  HttpsClient client(api_url_, pin_);
  auto code = admin("enrollment-code.create", {{"ttl_s", 3600}});
  ASSERT_TRUE(code);
  SimulatedAgent late("late");
  ASSERT_EQ(late.enroll(client, code->value("code", "")).status, 200);
  ASSERT_EQ(late.poll(client).status, 200);
  json doc;
  EXPECT_EQ(late.verify_document(late.ensure(client), &doc), "");
  EXPECT_EQ(late.ready(client).status, 200);
  EXPECT_EQ(wg_peers(*gw_ns_, gw_if_).count(late.wg_private_key.public_key().to_base64()), 1u);
}

}  // namespace
}  // namespace portcullis
