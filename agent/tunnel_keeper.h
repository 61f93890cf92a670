#pragma once
// The two ends of the agent's privilege split (privileges.h): TunnelKeeper in the process that
// keeps CAP_NET_ADMIN, TunnelClient in the unprivileged worker. They talk over a
// socketpair(AF_UNIX, SOCK_SEQPACKET): one request, one reply, each one datagram of JSON of at
// most kMaxTunnelMessage bytes.
//
//   {"op":"apply","document":D,"endpoint":"192.0.2.1:30000"}  -> {"ok":true,"changed":true}
//   {"op":"remove"}                                           -> {"ok":true}
//   {"op":"observe","document":D,"now":1700000000}            -> {"ok":true,"observation":
//       {"present":true,"correct":true,"handshake_age_s":5 or null,"rx_bytes":1,"tx_bytes":2,
//        "problem":""}}
//   any refusal or failure                                    -> {"ok":false,"errno":22,
//                                                                 "error":"<context>"}
//   first, unasked, once the keeper holds what it needs:         {"ok":true,"cap_eff":4096}
//                                                 or why it cannot: {"ok":false,...} (and it exits)
//   D = {"address":"10.255.0.7/32","allowed_ips":["10.255.0.1/32"],
//        "gateway_wg_public_key":"<base64>","persistent_keepalive":30}
//
// Only what the interface needs of a verified document crosses; the signature was checked by
// the worker. Every member is required and typed; an unknown member, a wrong type, a message
// over the limit or not JSON gets an error reply, and the keeper goes on serving.
//
// What the keeper checks itself, because it does not trust the worker: the interface name, MTU,
// backend and wireguard-go come from its own configuration (the messages cannot name them); the
// address and the only allowed IP are single IPv4 host /32s and differ; the keepalive is at most
// kMaxKeepaliveS; the endpoint has an address and a non-zero port. What a compromised worker can
// still do with it: point the tunnel at another host /32 and another peer key and endpoint
// (traffic of this host to one address then goes to a peer of its choosing), switch the
// keepalive, or remove the interface. It cannot route more than one /32, rename or add
// interfaces, run another program, or read the WireGuard private key.

#include <atomic>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "agent/agent_config.h"
#include "agent/tunnel.h"
#include "agent/tunnel_controller.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::agent {

inline constexpr std::size_t kMaxTunnelMessage = 64 * 1024;
inline constexpr std::uint16_t kMaxKeepaliveS = 3600;

// The interface as the configuration describes it (the keeper's, never the worker's).
TunnelSettings tunnel_settings(const AgentConfig& config);

enum class TunnelOp { kApply, kRemove, kObserve };

// A request as it arrived: shape checked (decode_request), policy not yet (check_request).
struct TunnelRequest {
  TunnelOp op = TunnelOp::kRemove;
  IpPrefix address;
  std::vector<IpPrefix> allowed_ips;
  Key gateway_wg_public_key;
  std::int64_t persistent_keepalive = 0;
  Endpoint endpoint;     // apply
  std::int64_t now = 0;  // observe
};

std::string encode_apply(const TunnelDocument& doc, const Endpoint& endpoint);
std::string encode_remove();
std::string encode_observe(const TunnelDocument& doc, std::int64_t now);
// EMSGSIZE over kMaxTunnelMessage; EINVAL naming the member otherwise.
Result<TunnelRequest> decode_request(std::string_view message);
// The keeper's own checks (see the top); the document to apply or observe. EPERM naming the
// field when refused.
Result<TunnelDocument> check_request(const TunnelRequest& request);

std::string encode_changed(bool changed);
std::string encode_done();
std::string encode_observation(const TunnelObservation& o);
std::string encode_error(const Error& e);
std::string encode_ready(std::uint64_t cap_eff);
// The worker's side: the reply to each op. An error reply comes back as its errno and context.
Result<bool> decode_changed(std::string_view reply);
Status decode_done(std::string_view reply);
Result<TunnelObservation> decode_observation(std::string_view reply);

class TunnelKeeper {
 public:
  explicit TunnelKeeper(Tunnel& tunnel) : tunnel_(tunnel) {}

  // One request in, its reply out. Any bytes at all: a malformed request gets an error reply.
  std::string handle(std::string_view request);
  // Answers requests on `fd` until the worker closes its end (success) or `stop` becomes true.
  Status serve(int fd, const std::atomic<bool>& stop);

 private:
  Tunnel& tunnel_;
};

class TunnelClient : public Tunnel {
 public:
  // `on_lost` runs once, when the keeper is gone (end of file, a reset, or no answer within
  // kAnswerTimeoutMs); every call then fails with EPIPE.
  TunnelClient(UniqueFd socket, std::function<void()> on_lost)
      : socket_(std::move(socket)), on_lost_(std::move(on_lost)) {}

  Result<bool> apply(const TunnelDocument& doc, const Endpoint& endpoint) override;
  Status remove() override;
  TunnelObservation observe(const TunnelDocument& doc, std::int64_t now) override;

  // The keeper's first message: its effective capability set, or why it could not start.
  Result<std::uint64_t> wait_ready();

  bool keeper_lost() const { return lost_; }

  // Longer than anything the keeper does (starting wireguard-go waits for it up to seconds).
  static constexpr int kAnswerTimeoutMs = 60'000;

 private:
  Result<std::string> call(const std::string& request);
  Result<std::string> receive();  // with mutex_ held
  tl::unexpected<Error> lose(const std::string& why);

  std::mutex mutex_;
  UniqueFd socket_;
  std::function<void()> on_lost_;
  std::atomic<bool> lost_{false};
};

}  // namespace portcullis::agent
