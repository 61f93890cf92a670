#include "agent/tunnel_keeper.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <initializer_list>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

namespace portcullis::agent {
namespace {

using nlohmann::json;

// Errors carried back to the worker stay short enough for any reply to fit.
constexpr std::size_t kMaxErrorText = 4096;

std::string dump(const json& j) {
  // Bytes that are not UTF-8 (an error text naming whatever arrived) must not throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Exactly these members, no others. EINVAL naming the first one missing or unknown.
Status exact_members(const json& j, std::span<const std::string_view> names,
                     const std::string& what) {
  if (!j.is_object()) return fail_invalid(what + ": not an object");
  for (auto name : names) {
    if (!j.contains(name)) return fail_invalid(what + ": no \"" + std::string(name) + "\"");
  }
  for (const auto& [key, value] : j.items()) {
    if (std::find(names.begin(), names.end(), key) == names.end()) {
      return fail_invalid(what + ": unknown member \"" + key.substr(0, 64) + "\"");
    }
  }
  return {};
}

Status exact_members(const json& j, std::initializer_list<std::string_view> names,
                     const std::string& what) {
  return exact_members(j, std::span(names.begin(), names.size()), what);
}

Result<std::int64_t> integer(const json& j, const std::string& what, std::int64_t min,
                             std::int64_t max) {
  if (!j.is_number_integer()) return fail_invalid(what + ": not an integer");
  if (j.is_number_unsigned() && j.get<std::uint64_t>() > static_cast<std::uint64_t>(max)) {
    return fail_invalid(what + ": out of range");
  }
  const auto v = j.get<std::int64_t>();
  if (v < min || v > max) return fail_invalid(what + ": out of range");
  return v;
}

Result<std::string> string(const json& j, const std::string& what) {
  if (!j.is_string()) return fail_invalid(what + ": not a string");
  return j.get<std::string>();
}

Result<IpPrefix> prefix(const json& j, const std::string& what) {
  auto s = string(j, what);
  if (!s) return fail(std::move(s.error()));
  auto p = IpPrefix::parse(*s);
  if (!p || s->find('/') == std::string::npos) return fail_invalid(what + ": not a prefix");
  return p;
}

json document_json(const TunnelDocument& doc) {
  return {{"address", doc.address.to_string()},
          {"allowed_ips", json::array({doc.gateway_address.to_string()})},
          {"gateway_wg_public_key", doc.gateway_wg_public_key.to_base64()},
          {"persistent_keepalive", doc.persistent_keepalive}};
}

Status decode_document(const json& j, TunnelRequest& out) {
  if (auto s = exact_members(
          j, {"address", "allowed_ips", "gateway_wg_public_key", "persistent_keepalive"},
          "document");
      !s) {
    return s;
  }
  auto address = prefix(j["address"], "document.address");
  if (!address) return fail(std::move(address.error()));
  out.address = *address;
  const json& ips = j["allowed_ips"];
  if (!ips.is_array()) return fail_invalid("document.allowed_ips: not an array");
  if (ips.size() > 16) return fail_invalid("document.allowed_ips: more than 16");
  for (const auto& ip : ips) {
    auto p = prefix(ip, "document.allowed_ips");
    if (!p) return fail(std::move(p.error()));
    out.allowed_ips.push_back(*p);
  }
  auto key_text = string(j["gateway_wg_public_key"], "document.gateway_wg_public_key");
  if (!key_text) return fail(std::move(key_text.error()));
  auto key = Key::from_base64(*key_text);
  if (!key) return fail_invalid("document.gateway_wg_public_key: not a WireGuard key");
  out.gateway_wg_public_key = *key;
  auto keepalive = integer(j["persistent_keepalive"], "document.persistent_keepalive", 0, 65535);
  if (!keepalive) return fail(std::move(keepalive.error()));
  out.persistent_keepalive = *keepalive;
  return {};
}

// The reply's payload member after "ok": true, or the error it carries.
Result<json> decode_reply(std::string_view reply, std::initializer_list<std::string_view> members) {
  if (reply.size() > kMaxTunnelMessage) return fail_errno(EMSGSIZE, "tunnel keeper reply");
  json j = json::parse(reply.begin(), reply.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j["ok"].is_boolean()) {
    return fail_errno(EPROTO, "tunnel keeper reply: not a reply");
  }
  if (!j["ok"].get<bool>()) {
    if (!exact_members(j, {"ok", "errno", "error"}, "reply") || !j["errno"].is_number_integer() ||
        !j["error"].is_string()) {
      return fail_errno(EPROTO, "tunnel keeper reply: malformed error");
    }
    const auto err = j["errno"].get<std::int64_t>();
    return fail_errno(err > 0 && err < 4096 ? static_cast<int>(err) : EPROTO,
                      "tunnel keeper: " + j["error"].get<std::string>());
  }
  std::vector<std::string_view> all = {"ok"};
  all.insert(all.end(), members.begin(), members.end());
  if (auto s = exact_members(j, all, "tunnel keeper reply"); !s) {
    return fail_errno(EPROTO, s.error().context());
  }
  return j;
}

}  // namespace

TunnelSettings tunnel_settings(const AgentConfig& config) {
  return {.ifname = config.interface,
          .backend = config.backend,
          .wireguard_go = config.wireguard_go,
          .mtu = static_cast<std::uint32_t>(config.mtu)};
}

std::string encode_apply(const TunnelDocument& doc, const Endpoint& endpoint) {
  return dump(
      {{"op", "apply"}, {"document", document_json(doc)}, {"endpoint", endpoint.to_string()}});
}

std::string encode_remove() { return dump({{"op", "remove"}}); }

std::string encode_observe(const TunnelDocument& doc, std::int64_t now) {
  return dump({{"op", "observe"}, {"document", document_json(doc)}, {"now", now}});
}

Result<TunnelRequest> decode_request(std::string_view message) {
  if (message.size() > kMaxTunnelMessage) {
    return fail_errno(EMSGSIZE, "request of " + std::to_string(message.size()) +
                                    " bytes, the limit is " + std::to_string(kMaxTunnelMessage));
  }
  json j = json::parse(message.begin(), message.end(), nullptr, false);
  if (j.is_discarded()) return fail_invalid("request: not JSON");
  if (!j.is_object() || !j.contains("op") || !j["op"].is_string()) {
    return fail_invalid("request: no \"op\"");
  }
  TunnelRequest r;
  const std::string op = j["op"].get<std::string>();
  if (op == "remove") {
    r.op = TunnelOp::kRemove;
    if (auto s = exact_members(j, {"op"}, "remove request"); !s) return fail(std::move(s.error()));
    return r;
  }
  if (op == "apply") {
    r.op = TunnelOp::kApply;
    if (auto s = exact_members(j, {"op", "document", "endpoint"}, "apply request"); !s) {
      return fail(std::move(s.error()));
    }
    auto text = string(j["endpoint"], "endpoint");
    if (!text) return fail(std::move(text.error()));
    auto e = Endpoint::parse(*text);
    if (!e) return fail_invalid("endpoint: not address:port");
    r.endpoint = *e;
  } else if (op == "observe") {
    r.op = TunnelOp::kObserve;
    if (auto s = exact_members(j, {"op", "document", "now"}, "observe request"); !s) {
      return fail(std::move(s.error()));
    }
    auto now = integer(j["now"], "now", 0, std::int64_t{1} << 40);
    if (!now) return fail(std::move(now.error()));
    r.now = *now;
  } else {
    return fail_invalid("request: unknown op \"" + op.substr(0, 32) + "\"");
  }
  if (auto s = decode_document(j["document"], r); !s) return fail(std::move(s.error()));
  return r;
}

Result<TunnelDocument> check_request(const TunnelRequest& r) {
  auto refuse = [](const std::string& why) { return fail_errno(EPERM, "refused: " + why); };
  TunnelDocument doc;
  if (r.op == TunnelOp::kRemove) return doc;
  if (!r.address.address().is_v4() || !r.address.is_host()) {
    return refuse("address " + r.address.to_string() + " is not an IPv4 /32");
  }
  if (r.allowed_ips.size() != 1) {
    return refuse(std::to_string(r.allowed_ips.size()) +
                  " allowed IPs: exactly one (the gateway's /32) is allowed");
  }
  const IpPrefix& gateway = r.allowed_ips.front();
  if (!gateway.address().is_v4() || !gateway.is_host()) {
    return refuse("allowed IP " + gateway.to_string() + " is not an IPv4 /32");
  }
  if (gateway.address() == r.address.address()) {
    return refuse("the allowed IP is the interface's own address");
  }
  if (r.persistent_keepalive < 0 || r.persistent_keepalive > kMaxKeepaliveS) {
    return refuse("persistent keepalive " + std::to_string(r.persistent_keepalive) +
                  " s: at most " + std::to_string(kMaxKeepaliveS));
  }
  if (r.op == TunnelOp::kApply &&
      (r.endpoint.port() == 0 || r.endpoint.address().family() == AF_UNSPEC)) {
    return refuse("endpoint " + r.endpoint.to_string() + " has no address or port");
  }
  doc.address = r.address;
  doc.gateway_address = gateway;
  doc.gateway_wg_public_key = r.gateway_wg_public_key;
  doc.persistent_keepalive = static_cast<std::uint16_t>(r.persistent_keepalive);
  return doc;
}

std::string encode_changed(bool changed) { return dump({{"ok", true}, {"changed", changed}}); }

std::string encode_done() { return dump({{"ok", true}}); }

std::string encode_observation(const TunnelObservation& o) {
  json j = {{"present", o.present},
            {"correct", o.correct},
            {"rx_bytes", o.rx_bytes},
            {"tx_bytes", o.tx_bytes},
            {"problem", o.problem.substr(0, kMaxErrorText)}};
  j["handshake_age_s"] = o.handshake_age_s ? json(*o.handshake_age_s) : json(nullptr);
  return dump({{"ok", true}, {"observation", j}});
}

std::string encode_ready(std::uint64_t cap_eff) {
  return dump({{"ok", true}, {"cap_eff", cap_eff}});
}

std::string encode_error(const Error& e) {
  return dump({{"ok", false},
               {"errno", e.errno_value() > 0 ? e.errno_value() : EPROTO},
               {"error", e.context().substr(0, kMaxErrorText)}});
}

Result<bool> decode_changed(std::string_view reply) {
  auto j = decode_reply(reply, {"changed"});
  if (!j) return fail(std::move(j.error()));
  if (!(*j)["changed"].is_boolean()) return fail_errno(EPROTO, "tunnel keeper reply: changed");
  return (*j)["changed"].get<bool>();
}

Status decode_done(std::string_view reply) {
  auto j = decode_reply(reply, {});
  if (!j) return fail(std::move(j.error()));
  return {};
}

Result<TunnelObservation> decode_observation(std::string_view reply) {
  auto j = decode_reply(reply, {"observation"});
  if (!j) return fail(std::move(j.error()));
  const json& o = (*j)["observation"];
  auto malformed = [] { return fail_errno(EPROTO, "tunnel keeper reply: malformed observation"); };
  if (!exact_members(o,
                     {"present", "correct", "handshake_age_s", "rx_bytes", "tx_bytes", "problem"},
                     "observation") ||
      !o["present"].is_boolean() || !o["correct"].is_boolean() ||
      !o["rx_bytes"].is_number_unsigned() || !o["tx_bytes"].is_number_unsigned() ||
      !o["problem"].is_string() ||
      !(o["handshake_age_s"].is_null() || o["handshake_age_s"].is_number_integer())) {
    return malformed();
  }
  TunnelObservation out;
  out.present = o["present"].get<bool>();
  out.correct = o["correct"].get<bool>();
  out.rx_bytes = o["rx_bytes"].get<std::uint64_t>();
  out.tx_bytes = o["tx_bytes"].get<std::uint64_t>();
  out.problem = o["problem"].get<std::string>();
  if (!o["handshake_age_s"].is_null())
    out.handshake_age_s = o["handshake_age_s"].get<std::int64_t>();
  return out;
}

std::string TunnelKeeper::handle(std::string_view message) {
  try {
    auto request = decode_request(message);
    if (!request) return encode_error(request.error());
    auto doc = check_request(*request);
    if (!doc) return encode_error(doc.error());
    switch (request->op) {
      case TunnelOp::kApply: {
        auto changed = tunnel_.apply(*doc, request->endpoint);
        return changed ? encode_changed(*changed) : encode_error(changed.error());
      }
      case TunnelOp::kRemove: {
        auto done = tunnel_.remove();
        return done ? encode_done() : encode_error(done.error());
      }
      case TunnelOp::kObserve:
        return encode_observation(tunnel_.observe(*doc, request->now));
    }
  } catch (const std::exception& e) {
    // nlohmann-json throws on what its checks above should already have excluded.
    return encode_error(Error::protocol(std::string("request: ") + e.what()));
  }
  return encode_error(Error::protocol("request: unknown op"));
}

Status TunnelKeeper::serve(int fd, const std::atomic<bool>& stop) {
  std::string buf(kMaxTunnelMessage, '\0');
  while (!stop.load()) {
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, 1000);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return fail(Error::last_errno("tunnel keeper: poll"));
    if (ready == 0) continue;
    // MSG_TRUNC: the real length of a datagram larger than the buffer, so it can be refused.
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ECONNRESET) return {};
    if (n < 0) return fail(Error::last_errno("tunnel keeper: receive"));
    if (n == 0) return {};  // the worker closed its end
    const std::string reply =
        static_cast<std::size_t>(n) > buf.size()
            ? encode_error(Error::from_errno(EMSGSIZE, "request of " + std::to_string(n) +
                                                           " bytes, the limit is " +
                                                           std::to_string(kMaxTunnelMessage)))
            : handle(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    if (::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL) < 0) {
      if (errno == EPIPE || errno == ECONNRESET) return {};
      return fail(Error::last_errno("tunnel keeper: send"));
    }
  }
  return {};
}

tl::unexpected<Error> TunnelClient::lose(const std::string& why) {
  if (!lost_.exchange(true) && on_lost_) on_lost_();
  return fail_errno(EPIPE, "the tunnel keeper process is gone (" + why + ")");
}

Result<std::string> TunnelClient::receive() {
  std::string buf(kMaxTunnelMessage, '\0');
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kAnswerTimeoutMs);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      return lose("no answer within " + std::to_string(kAnswerTimeoutMs / 1000) + " s");
    }
    pollfd p{socket_.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return lose(Error::last_errno("poll").message());
    if (ready == 0) continue;
    const ssize_t n = ::recv(socket_.get(), buf.data(), buf.size(), MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return lose(Error::last_errno("receive").message());
    if (n == 0) return lose("end of file");
    if (static_cast<std::size_t>(n) > buf.size()) {
      return fail_errno(EMSGSIZE, "tunnel keeper reply over " + std::to_string(buf.size()));
    }
    buf.resize(static_cast<std::size_t>(n));
    return buf;
  }
}

Result<std::string> TunnelClient::call(const std::string& request) {
  std::lock_guard l(mutex_);
  if (lost_) return fail_errno(EPIPE, "the tunnel keeper process is gone");
  if (request.size() > kMaxTunnelMessage) {
    return fail_errno(EMSGSIZE, "tunnel request of " + std::to_string(request.size()) + " bytes");
  }
  if (::send(socket_.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0) {
    return lose(Error::last_errno("send").message());
  }
  return receive();
}

Result<std::uint64_t> TunnelClient::wait_ready() {
  std::lock_guard l(mutex_);
  auto reply = receive();
  if (!reply) return fail(std::move(reply.error()));
  auto j = decode_reply(*reply, {"cap_eff"});
  if (!j) return fail(std::move(j.error()));
  if (!(*j)["cap_eff"].is_number_unsigned()) return fail_errno(EPROTO, "tunnel keeper: cap_eff");
  return (*j)["cap_eff"].get<std::uint64_t>();
}

Result<bool> TunnelClient::apply(const TunnelDocument& doc, const Endpoint& endpoint) {
  auto reply = call(encode_apply(doc, endpoint));
  if (!reply) return fail(std::move(reply.error()));
  return decode_changed(*reply);
}

Status TunnelClient::remove() {
  auto reply = call(encode_remove());
  if (!reply) return fail(std::move(reply.error()));
  return decode_done(*reply);
}

TunnelObservation TunnelClient::observe(const TunnelDocument& doc, std::int64_t now) {
  auto reply = call(encode_observe(doc, now));
  Result<TunnelObservation> o = reply ? decode_observation(*reply)
                                      : Result<TunnelObservation>(fail(std::move(reply.error())));
  if (o) return *o;
  TunnelObservation unknown;
  // Not "gone": the interface may well be there; the agent only learns nothing this round.
  unknown.present = true;
  unknown.problem = o.error().message();
  return unknown;
}

}  // namespace portcullis::agent
