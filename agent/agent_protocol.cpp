#include "agent/agent_protocol.h"

#include <netdb.h>
#include <sodium.h>

#include <charconv>
#include <memory>

namespace portcullis::agent {
namespace {

using nlohmann::json;

bool has_float(const json& v) {
  if (v.is_number_float()) return true;
  if (v.is_structured()) {
    for (const auto& item : v) {
      if (has_float(item)) return true;
    }
  }
  return false;
}

Error field_error(const std::string& field, const std::string& why) {
  return Error::protocol("orchestration document: " + field + " " + why);
}

}  // namespace

Result<std::string> proof_signing_bytes(std::string_view method, std::string_view path,
                                        const json& body) {
  if (!body.is_object()) return fail_invalid("request body is not a JSON object");
  auto ts = body.find("timestamp");
  auto nonce = body.find("nonce");
  if (ts == body.end() || !ts->is_number_integer()) {
    return fail_invalid("request body: timestamp is not an integer");
  }
  if (nonce == body.end() || !nonce->is_string()) {
    return fail_invalid("request body: nonce is not a string");
  }
  if (has_float(body)) return fail_invalid("request body: floating-point numbers are not signed");
  json unsigned_body = body;
  unsigned_body.erase("signature");
  std::string canonical;
  try {
    // nlohmann keeps object members sorted (std::map) and dump() with no indent writes no
    // whitespace: the canonical form of agent_proof.h.
    canonical = unsigned_body.dump();
  } catch (const json::exception& e) {
    return fail_invalid(std::string("request body: ") + e.what());
  }
  std::string out;
  out.append(kProofDomain).append("\n");
  out.append(method).append(" ").append(path).append("\n");
  out.append(std::to_string(ts->get<std::int64_t>())).append("\n");
  out.append(nonce->get<std::string>()).append("\n");
  out.append(sha256_hex(canonical));
  return out;
}

Status sign_request(std::string_view method, std::string_view path, json& body,
                    const AgentIdentity& identity, std::int64_t timestamp,
                    const std::string& nonce) {
  body["timestamp"] = timestamp;
  body["nonce"] = nonce;
  auto bytes = proof_signing_bytes(method, path, body);
  if (!bytes) return fail(std::move(bytes.error()));
  body["signature"] = identity.sign_base64(*bytes);
  return {};
}

Result<TunnelDocument> verify_document(const json& reply, const Key& gateway_signing_key,
                                       const std::string& device_id, std::int64_t now) {
  if (!reply.is_object()) return fail(Error::protocol("vpn/ensure answer is not a JSON object"));
  auto doc_it = reply.find("document");
  auto sig_it = reply.find("signature");
  if (doc_it == reply.end() || !doc_it->is_string() || sig_it == reply.end() ||
      !sig_it->is_string()) {
    return fail(Error::protocol("vpn/ensure answer without document and signature strings"));
  }
  const std::string& bytes = doc_it->get_ref<const std::string&>();
  auto sig = base64_standard_decode(sig_it->get<std::string>());
  if (!sig || sig->size() != crypto_sign_BYTES) {
    return fail_errno(EBADMSG, "orchestration document signature is not 64 bytes of base64");
  }
  if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                  reinterpret_cast<const unsigned char*>(bytes.data()),
                                  bytes.size(), gateway_signing_key.data()) != 0) {
    return fail_errno(EBADMSG,
                      "orchestration document signature does not verify with the gateway signing "
                      "key pinned at enrollment: refusing it, nothing applied");
  }
  json d = json::parse(bytes, nullptr, false);
  if (d.is_discarded() || !d.is_object()) {
    return fail(Error::protocol("orchestration document is not a JSON object"));
  }
  auto get_string = [&](const char* k) -> Result<std::string> {
    auto it = d.find(k);
    if (it == d.end() || !it->is_string())
      return fail(field_error(k, "is missing or not a string"));
    return it->get<std::string>();
  };
  auto get_int = [&](const char* k, std::int64_t min, std::int64_t max) -> Result<std::int64_t> {
    auto it = d.find(k);
    if (it == d.end() || !it->is_number_integer()) {
      return fail(field_error(k, "is missing or not an integer"));
    }
    auto v = it->get<std::int64_t>();
    if (v < min || v > max) return fail(field_error(k, "is out of range"));
    return v;
  };

  auto version = get_int("version", 1, 1);
  if (!version) return fail(std::move(version.error()));
  TunnelDocument out;
  auto id = get_string("device_id");
  if (!id) return fail(std::move(id.error()));
  out.device_id = *id;
  auto endpoint = get_string("gateway_endpoint");
  if (!endpoint) return fail(std::move(endpoint.error()));
  out.gateway_endpoint = *endpoint;
  auto wg_key = get_string("gateway_wg_public_key");
  if (!wg_key) return fail(std::move(wg_key.error()));
  auto key = Key::from_base64(*wg_key);
  if (!key || key->is_zero()) return fail(field_error("gateway_wg_public_key", "is not a key"));
  out.gateway_wg_public_key = *key;
  auto address = get_string("address");
  if (!address) return fail(std::move(address.error()));
  auto a = IpPrefix::parse(*address);
  if (!a || !a->address().is_v4() || !a->is_host() || address->find('/') == std::string::npos) {
    return fail(field_error("address", "is not an IPv4 /32"));
  }
  out.address = *a;
  auto ips = d.find("allowed_ips");
  if (ips == d.end() || !ips->is_array() || ips->size() != 1 || !(*ips)[0].is_string()) {
    return fail(field_error("allowed_ips", "must be exactly the gateway's /32"));
  }
  auto g = IpPrefix::parse((*ips)[0].get<std::string>());
  if (!g || !g->address().is_v4() || !g->is_host()) {
    return fail(field_error("allowed_ips", "must be exactly the gateway's /32"));
  }
  if (g->address() == a->address()) {
    return fail(field_error("allowed_ips", "is the agent's own address"));
  }
  out.gateway_address = *g;
  auto keepalive = get_int("persistent_keepalive", 0, 65535);
  if (!keepalive) return fail(std::move(keepalive.error()));
  out.persistent_keepalive = static_cast<std::uint16_t>(*keepalive);
  if (auto ports = d.find("allowed_ports"); ports != d.end() && ports->is_array()) {
    for (const auto& p : *ports) {
      if (!p.is_object() || !p.contains("port") || !p["port"].is_number_integer()) continue;
      out.allowed_ports.push_back(
          {static_cast<std::uint16_t>(p["port"].get<int>()), p.value("protocol", std::string())});
    }
  }
  auto issued = get_int("issued_at", 0, INT64_MAX);
  if (!issued) return fail(std::move(issued.error()));
  out.issued_at = *issued;
  auto expires = get_int("expires_at", 0, INT64_MAX);
  if (!expires) return fail(std::move(expires.error()));
  out.expires_at = *expires;

  if (out.device_id != device_id) {
    return fail_errno(EACCES, "orchestration document is for device '" + out.device_id +
                                  "', not this agent's '" + device_id + "': refusing it");
  }
  if (out.expires_at <= now) {
    return fail_errno(EKEYEXPIRED, "orchestration document expired at " +
                                       std::to_string(out.expires_at) + " (now " +
                                       std::to_string(now) +
                                       "): refusing it; check this machine's clock");
  }
  return out;
}

Result<Endpoint> resolve_endpoint(const std::string& host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return fail_invalid("gateway endpoint '" + host_port + "' is not host:port");
  }
  std::string host = host_port.substr(0, colon);
  const std::string port_text = host_port.substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    return fail_invalid("gateway endpoint '" + host_port + "' has no valid port");
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (auto ip = IpAddress::parse(host)) return Endpoint(*ip, static_cast<std::uint16_t>(port));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    return fail_errno(EHOSTUNREACH,
                      "cannot resolve the gateway's WireGuard endpoint host '" + host + "' (" +
                          ::gai_strerror(rc) +
                          "): check this machine's DNS (/etc/resolv.conf) or ask the gateway's "
                          "operator to publish an IP address as its endpoint");
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(res, ::freeaddrinfo);
  std::optional<Endpoint> v6;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    auto e = Endpoint::from_sockaddr(ai->ai_addr, ai->ai_addrlen);
    if (!e) continue;
    Endpoint with_port(e->address(), static_cast<std::uint16_t>(port));
    if (with_port.address().is_v4()) return with_port;
    if (!v6) v6 = with_port;
  }
  if (v6) return *v6;
  return fail_errno(EHOSTUNREACH, "resolve gateway endpoint '" + host + "': no address");
}

}  // namespace portcullis::agent
