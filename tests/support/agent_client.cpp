#include "tests/support/agent_client.h"

#include <chrono>

#include "controlplane/api/agent_proof.h"

namespace portcullis::testing {
namespace {

using nlohmann::json;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string HttpReply::error() const {
  return body.is_object() ? body.value("error", std::string()) : std::string();
}

void perform_into(CURL* c, HttpReply* reply) {
  CURLcode code = curl_easy_perform(c);
  if (code != CURLE_OK) {
    reply->curl_error = curl_easy_strerror(code);
    return;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply->status);
  curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &reply->new_connections);
  reply->body = json::parse(reply->text, nullptr, false);
  if (reply->body.is_discarded()) reply->body = nullptr;
}

HttpsClient::HttpsClient(std::string base_url, std::string pin)
    : base_url_(std::move(base_url)), pin_(std::move(pin)), curl_(new_curl()) {}

HttpReply HttpsClient::post(const std::string& path, const json& body, const std::string& bearer) {
  const std::string text = body.dump();
  return perform(path, &text, bearer);
}

HttpReply HttpsClient::get(const std::string& path) { return perform(path, nullptr, ""); }

HttpReply HttpsClient::perform(const std::string& path, const std::string* body,
                               const std::string& bearer) {
  HttpReply reply;
  CURL* c = curl_.get();
  pin_request(c, base_url_ + path, pin_, 30'000);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append_to_string);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.text);
  if (body != nullptr) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  } else {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  }
  SlistPtr headers = json_headers({bearer.empty() ? "" : "Authorization: Bearer " + bearer});
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  perform_into(c, &reply);
  return reply;
}

SimulatedAgent::SimulatedAgent(std::string name) : hostname(std::move(name)) {}

HttpReply SimulatedAgent::signed_post(HttpsClient& client, const std::string& path, json body) {
  if (!api::sign_agent_request("POST", path, body, identity, unix_now(),
                               api::random_base64url(16))) {
    HttpReply r;
    r.curl_error = "cannot sign the request";
    return r;
  }
  return client.post(path, body);
}

HttpReply SimulatedAgent::enroll(HttpsClient& client, const std::string& code) {
  json body = {{"hostname", hostname},
               {"agent_public_key", identity.public_key().to_base64()},
               {"wg_public_key", wg_private_key.public_key().to_base64()},
               {"inventory", {{"os", "Windows 11"}, {"agent", "e2e"}}}};
  if (!code.empty()) body["enrollment_code"] = code;
  HttpReply r = signed_post(client, "/api/agent/enroll/request", std::move(body));
  if (r.status == 200 && r.body.is_object()) {
    enrollment_id = r.body.value("enrollment_id", std::string());
  }
  return r;
}

HttpReply SimulatedAgent::poll(HttpsClient& client) {
  HttpReply r = signed_post(client, "/api/agent/enroll/poll", {{"enrollment_id", enrollment_id}});
  if (r.status == 200 && r.body.is_object() && r.body.value("status", "") == "approved") {
    device_id = r.body.value("device_id", std::string());
    access_token = r.body.value("access_token", std::string());
    refresh_token = r.body.value("refresh_token", std::string());
    if (auto k = Key::from_base64(r.body.value("gateway_signing_key", std::string()))) {
      gateway_signing_key = *k;
    }
  }
  return r;
}

HttpReply SimulatedAgent::ensure(HttpsClient& client) {
  return client.post("/api/agent/vpn/ensure", json::object(), access_token);
}

HttpReply SimulatedAgent::ready(HttpsClient& client) {
  return client.post("/api/agent/vpn/ready", json::object(), access_token);
}

HttpReply SimulatedAgent::heartbeat(HttpsClient& client) {
  return client.post("/api/agent/heartbeat", json::object(), access_token);
}

std::string SimulatedAgent::verify_document(const HttpReply& reply, json* document) const {
  if (reply.status != 200 || !reply.body.is_object()) {
    return "vpn/ensure answered " + std::to_string(reply.status) + ": " + reply.text;
  }
  auto doc = reply.body.find("document");
  auto sig = reply.body.find("signature");
  if (doc == reply.body.end() || !doc->is_string() || sig == reply.body.end() ||
      !sig->is_string()) {
    return "vpn/ensure answer without document and signature: " + reply.text;
  }
  auto signature = api::decode_signature(sig->get<std::string>());
  if (!signature) return "signature is not 64 bytes of base64: " + sig->get<std::string>();
  const std::string& bytes = doc->get_ref<const std::string&>();
  if (!api::ed25519_verify(gateway_signing_key, bytes, *signature)) {
    return "document signature does not verify with the gateway signing key";
  }
  json parsed = json::parse(bytes, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) return "document is not a JSON object";
  *document = std::move(parsed);
  return "";
}

}  // namespace portcullis::testing
