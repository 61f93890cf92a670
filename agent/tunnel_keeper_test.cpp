#include "agent/tunnel_keeper.h"

#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

namespace portcullis::agent {
namespace {

using nlohmann::json;

// Records what reaches the tunnel; answers what the test sets.
class FakeTunnel : public Tunnel {
 public:
  Result<bool> apply(const TunnelDocument& doc, const Endpoint& endpoint) override {
    ++applies;
    applied = doc;
    applied_endpoint = endpoint;
    if (apply_error) return fail(*apply_error);
    return changed;
  }
  Status remove() override {
    ++removes;
    return {};
  }
  TunnelObservation observe(const TunnelDocument& doc, std::int64_t now) override {
    ++observes;
    observed = doc;
    observed_now = now;
    return observation;
  }
  int calls() const { return applies + removes + observes; }

  int applies = 0, removes = 0, observes = 0;
  bool changed = true;
  std::optional<Error> apply_error;
  TunnelDocument applied, observed;
  Endpoint applied_endpoint;
  std::int64_t observed_now = 0;
  TunnelObservation observation;
};

TunnelDocument document() {
  TunnelDocument d;
  d.address = *IpPrefix::parse("10.255.0.7/32");
  d.gateway_address = *IpPrefix::parse("10.255.0.1/32");
  d.gateway_wg_public_key = SecretKey::generate_private().public_key();
  d.persistent_keepalive = 25;
  return d;
}

Endpoint endpoint() { return *Endpoint::parse("192.0.2.1:30000"); }

json apply_json() { return json::parse(encode_apply(document(), endpoint())); }

// The reply's error text and errno, or "" when the reply is ok.
std::pair<std::string, int> error_of(const std::string& reply) {
  json j = json::parse(reply);
  if (j.at("ok").get<bool>()) return {"", 0};
  return {j.at("error").get<std::string>(), j.at("errno").get<int>()};
}

TEST(TunnelKeeperTest, ApplyObserveRemoveRoundTrip) {
  FakeTunnel fake;
  TunnelKeeper keeper(fake);
  const TunnelDocument doc = document();

  fake.changed = true;
  auto changed = decode_changed(keeper.handle(encode_apply(doc, endpoint())));
  ASSERT_TRUE(changed) << changed.error().message();
  EXPECT_TRUE(*changed);
  EXPECT_EQ(fake.applied.address, doc.address);
  EXPECT_EQ(fake.applied.gateway_address, doc.gateway_address);
  EXPECT_EQ(fake.applied.gateway_wg_public_key, doc.gateway_wg_public_key);
  EXPECT_EQ(fake.applied.persistent_keepalive, 25);
  EXPECT_EQ(fake.applied_endpoint, endpoint());
  fake.changed = false;
  EXPECT_EQ(decode_changed(keeper.handle(encode_apply(doc, endpoint()))), false);

  fake.observation = {.present = true,
                      .correct = false,
                      .handshake_age_s = 12,
                      .rx_bytes = 1ull << 40,
                      .tx_bytes = 7,
                      .problem = "wrong persistent keepalive"};
  auto o = decode_observation(keeper.handle(encode_observe(doc, 1'700'000'000)));
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(*o, fake.observation);
  EXPECT_EQ(fake.observed_now, 1'700'000'000);
  EXPECT_EQ(fake.observed.address, doc.address);
  fake.observation = {};  // no handshake yet: null
  EXPECT_EQ(decode_observation(keeper.handle(encode_observe(doc, 5))), TunnelObservation{});

  EXPECT_TRUE(decode_done(keeper.handle(encode_remove())));
  EXPECT_EQ(fake.removes, 1);

  // A failure of the tunnel comes back with its errno and context.
  fake.apply_error = Error::from_errno(ENODEV, "open device 'pcl0'");
  auto failed = decode_changed(keeper.handle(encode_apply(doc, endpoint())));
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().errno_value(), ENODEV);
  EXPECT_EQ(failed.error().context(), "tunnel keeper: open device 'pcl0'");
}

TEST(TunnelKeeperTest, MalformedRequestsGetAnErrorReply) {
  FakeTunnel fake;
  TunnelKeeper keeper(fake);
  auto with = [](const std::function<void(json&)>& edit) {
    json j = apply_json();
    edit(j);
    return j.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not JSON"},
      {"{", "not JSON"},
      {std::string("\xff\xfe", 2), "not JSON"},
      {"[]", "no \"op\""},
      {"{\"op\":7}", "no \"op\""},
      {"{\"op\":\"format\"}", "unknown op \"format\""},
      {"{\"op\":\"remove\",\"ifname\":\"eth0\"}", "unknown member \"ifname\""},
      {with([](json& j) { j["ifname"] = "eth0"; }), "unknown member \"ifname\""},
      {with([](json& j) { j["document"]["mtu"] = 9000; }), "unknown member \"mtu\""},
      {with([](json& j) { j.erase("endpoint"); }), "no \"endpoint\""},
      {with([](json& j) { j["document"].erase("address"); }), "no \"address\""},
      {with([](json& j) { j["endpoint"] = "gw.example:30000"; }), "endpoint: not address:port"},
      {with([](json& j) { j["endpoint"] = 30000; }), "endpoint: not a string"},
      {with([](json& j) { j["endpoint"] = "192.0.2.1:0"; }), "endpoint: not address:port"},
      {with([](json& j) { j["document"]["address"] = "10.255.0.7"; }), "not a prefix"},
      {with([](json& j) { j["document"]["address"] = "banana/32"; }), "not a prefix"},
      {with([](json& j) { j["document"]["allowed_ips"] = "10.255.0.1/32"; }), "not an array"},
      {with([](json& j) { j["document"]["gateway_wg_public_key"] = "AAAA"; }),
       "not a WireGuard key"},
      {with([](json& j) { j["document"]["persistent_keepalive"] = 1.5; }), "not an integer"},
      {with([](json& j) { j["document"]["persistent_keepalive"] = -1; }), "out of range"},
      {with([](json& j) { j["document"]["persistent_keepalive"] = 18446744073709551615ull; }),
       "out of range"},
      {"{\"op\":\"observe\",\"document\":{},\"now\":1}", "no \"address\""},
      {json({{"op", "observe"}, {"document", apply_json()["document"]}, {"now", -5}}).dump(),
       "now: out of range"},
  };
  for (const auto& [request, expect] : cases) {
    const auto [error, err] = error_of(keeper.handle(request));
    EXPECT_NE(error.find(expect), std::string::npos) << request << " -> " << error;
    EXPECT_EQ(err, EINVAL) << request;
  }
  // Oversize: refused by length before parsing.
  const std::string big =
      "{\"op\":\"remove\",\"pad\":\"" + std::string(kMaxTunnelMessage, 'x') + "\"}";
  const auto [error, err] = error_of(keeper.handle(big));
  EXPECT_EQ(err, EMSGSIZE) << error;
  EXPECT_EQ(fake.calls(), 0) << "a malformed request reached the tunnel";
}

TEST(TunnelKeeperTest, RefusesWhatTheKeeperMustNotApply) {
  FakeTunnel fake;
  TunnelKeeper keeper(fake);
  auto with = [](const std::function<void(json&)>& edit) {
    json j = apply_json();
    edit(j);
    return j.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {with([](json& j) { j["document"]["allowed_ips"] = {"10.255.0.0/24"}; }),
       "allowed IP 10.255.0.0/24 is not an IPv4 /32"},
      {with([](json& j) {
         j["document"]["allowed_ips"] = {"10.255.0.1/32", "10.255.0.9/32"};
       }),
       "2 allowed IPs"},
      {with([](json& j) { j["document"]["allowed_ips"] = json::array(); }), "0 allowed IPs"},
      {with([](json& j) { j["document"]["allowed_ips"] = {"0.0.0.0/0"}; }), "not an IPv4 /32"},
      {with([](json& j) { j["document"]["allowed_ips"] = {"fd00::1/128"}; }), "not an IPv4 /32"},
      {with([](json& j) { j["document"]["address"] = "10.255.0.0/16"; }),
       "address 10.255.0.0/16 is not an IPv4 /32"},
      {with([](json& j) { j["document"]["allowed_ips"] = {"10.255.0.7/32"}; }),
       "the interface's own address"},
      {with([](json& j) { j["document"]["persistent_keepalive"] = 7200; }),
       "persistent keepalive 7200 s"},
  };
  for (const auto& [request, expect] : cases) {
    const auto [error, err] = error_of(keeper.handle(request));
    EXPECT_NE(error.find(expect), std::string::npos) << request << " -> " << error;
    EXPECT_EQ(err, EPERM) << request;
  }
  // Port 0 does not even parse; check_request refuses it on its own as well.
  auto request = decode_request(apply_json().dump());
  ASSERT_TRUE(request);
  request->endpoint = Endpoint(request->endpoint.address(), 0);
  auto refused = check_request(*request);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().context().find("has no address or port"), std::string::npos);
  // The same checks guard observe.
  json observe = json::parse(encode_observe(document(), 1));
  observe["document"]["allowed_ips"] = {"10.255.0.0/24"};
  EXPECT_EQ(error_of(keeper.handle(observe.dump())).second, EPERM);
  EXPECT_EQ(fake.calls(), 0) << "a refused document reached the tunnel";
  // And the unmodified request does reach it.
  EXPECT_TRUE(decode_changed(keeper.handle(apply_json().dump())));
  EXPECT_EQ(fake.applies, 1);
}

TEST(TunnelKeeperTest, WorkerSideRejectsMalformedReplies) {
  EXPECT_FALSE(decode_changed("{\"ok\":true}"));
  EXPECT_FALSE(decode_changed("{\"ok\":true,\"changed\":1}"));
  EXPECT_FALSE(decode_changed("{\"ok\":true,\"changed\":true,\"extra\":1}"));
  EXPECT_FALSE(decode_done("nonsense"));
  EXPECT_FALSE(decode_observation("{\"ok\":true,\"observation\":{\"present\":true}}"));
  auto e = decode_done("{\"ok\":false,\"errno\":-3,\"error\":\"x\"}");
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().errno_value(), EPROTO);
}

// Both ends over a real SOCK_SEQPACKET pair, as the two processes use it.
TEST(TunnelKeeperTest, ClientAndKeeperOverASocketpair) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd worker_end(pair[0]), keeper_end(pair[1]);
  FakeTunnel fake;
  fake.observation.present = true;
  fake.observation.rx_bytes = 42;
  std::atomic<bool> stop{false};
  Status served;
  std::thread keeper_thread([&] {
    const std::string ready = encode_ready(0x1000);
    ::send(keeper_end.get(), ready.data(), ready.size(), MSG_NOSIGNAL);
    TunnelKeeper keeper(fake);
    served = keeper.serve(keeper_end.get(), stop);
    keeper_end.reset();
  });
  int lost = 0;
  {
    TunnelClient client(std::move(worker_end), [&] { ++lost; });
    EXPECT_EQ(client.wait_ready(), 0x1000u);
    EXPECT_EQ(client.apply(document(), endpoint()), true);
    EXPECT_EQ(client.observe(document(), 9).rx_bytes, 42u);
    EXPECT_TRUE(client.remove());
    EXPECT_EQ(fake.calls(), 3);
    EXPECT_EQ(lost, 0);
  }  // the worker's end closes: the keeper returns
  keeper_thread.join();
  EXPECT_TRUE(served);
}

TEST(TunnelKeeperTest, ClientNoticesTheKeeperGone) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd worker_end(pair[0]), keeper_end(pair[1]);
  int lost = 0;
  TunnelClient client(std::move(worker_end), [&] { ++lost; });
  keeper_end.reset();
  auto r = client.apply(document(), endpoint());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EPIPE);
  EXPECT_TRUE(client.keeper_lost());
  EXPECT_FALSE(client.remove());
  EXPECT_EQ(lost, 1);
}

TEST(TunnelKeeperTest, OversizeDatagramIsRefusedByTheServingLoop) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd worker_end(pair[0]), keeper_end(pair[1]);
  int size = 4 * kMaxTunnelMessage;
  ::setsockopt(worker_end.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  FakeTunnel fake;
  std::atomic<bool> stop{false};
  std::thread keeper_thread([&] {
    TunnelKeeper keeper(fake);
    (void)keeper.serve(keeper_end.get(), stop);
  });
  const std::string big(kMaxTunnelMessage + 100, ' ');
  ASSERT_EQ(::send(worker_end.get(), big.data(), big.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(big.size()));
  std::string reply(4096, '\0');
  const ssize_t n = ::recv(worker_end.get(), reply.data(), reply.size(), 0);
  ASSERT_GT(n, 0);
  reply.resize(static_cast<std::size_t>(n));
  EXPECT_EQ(error_of(reply).second, EMSGSIZE) << reply;
  // It goes on serving.
  const std::string remove = encode_remove();
  ::send(worker_end.get(), remove.data(), remove.size(), MSG_NOSIGNAL);
  reply.assign(4096, '\0');
  const ssize_t m = ::recv(worker_end.get(), reply.data(), reply.size(), 0);
  ASSERT_GT(m, 0);
  reply.resize(static_cast<std::size_t>(m));
  EXPECT_TRUE(decode_done(reply)) << reply;
  worker_end.reset();
  keeper_thread.join();
  EXPECT_EQ(fake.removes, 1);
}

}  // namespace
}  // namespace portcullis::agent
