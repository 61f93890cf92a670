#include "controlplane/api/orchestration.h"

#include <nlohmann/json.hpp>

namespace portcullis::api {

std::string serialize_document(const OrchestrationDocument& doc) {
  using nlohmann::json;
  json allowed_ips = json::array();
  for (const auto& p : doc.allowed_ips) allowed_ips.push_back(p.to_string());
  json ports = json::array();
  for (const auto& r : doc.allowed_ports) {
    ports.push_back({{"port", r.port}, {"protocol", filter::protocol_name(r.protocol)}});
  }
  const json j = {{"version", kOrchestrationVersion},
                  {"device_id", doc.device_id},
                  {"gateway_endpoint", doc.gateway_endpoint},
                  {"gateway_port", doc.gateway_port},
                  {"gateway_wg_public_key", doc.gateway_wg_public_key.to_base64()},
                  {"address", doc.address.to_string()},
                  {"allowed_ips", std::move(allowed_ips)},
                  {"persistent_keepalive", doc.persistent_keepalive_s},
                  {"allowed_ports", std::move(ports)},
                  {"issued_at", doc.issued_at},
                  {"expires_at", doc.expires_at},
                  {"nonce", doc.nonce}};
  // The endpoint comes from the config; replace rather than throw on invalid UTF-8.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

SignedDocument sign_document(const OrchestrationDocument& doc, const SigningKey& key) {
  SignedDocument out;
  out.document = serialize_document(doc);
  out.signature = key.sign_base64(out.document);
  return out;
}

std::string endpoint_from_host(std::string_view host, std::uint16_t port) {
  if (host.empty()) return "";
  if (host.front() == '[') {
    auto close = host.find(']');
    if (close == std::string_view::npos) return "";
    host = host.substr(0, close + 1);
  } else if (auto colon = host.find(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  return std::string(host) + ":" + std::to_string(port);
}

}  // namespace portcullis::api
