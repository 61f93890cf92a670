#include "tests/support/operator_client.h"

#include <cctype>
#include <string_view>

namespace portcullis::testing {
namespace {

using nlohmann::json;

// Keeps the value of a "Set-Cookie: portcullis_session=<token>; ..." header line.
size_t on_header(char* data, size_t size, size_t n, void* user) {
  std::string_view line(data, size * n);
  constexpr std::string_view kName = "set-cookie:";
  if (line.size() > kName.size()) {
    std::string lower(line.substr(0, kName.size()));
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (lower == kName) {
      auto value = line.substr(kName.size());
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      *static_cast<std::string*>(user) = std::string(value.substr(0, value.find_first_of(";\r\n")));
    }
  }
  return size * n;
}

}  // namespace

OperatorClient::OperatorClient(std::string base_url, std::string pin)
    : base_url_(std::move(base_url)), pin_(std::move(pin)), curl_(new_curl()) {}

HttpReply OperatorClient::get(const std::string& path) { return send("GET", path, nullptr); }

HttpReply OperatorClient::post(const std::string& path, const json& body) {
  const std::string text = body.dump();
  return send("POST", path, &text);
}

HttpReply OperatorClient::put(const std::string& path, const json& body) {
  const std::string text = body.dump();
  return send("PUT", path, &text);
}

HttpReply OperatorClient::setup(const std::string& user, const std::string& password) {
  return post("/api/setup", {{"username", user}, {"password", password}});
}

HttpReply OperatorClient::login(const std::string& user, const std::string& password) {
  const std::string text = json({{"username", user}, {"password", password}}).dump();
  std::string cookie;  // "portcullis_session=<token>"
  HttpReply r = send("POST", "/api/login", &text, &cookie);
  if (r.status == 200 && r.body.is_object()) {
    const auto eq = cookie.find('=');
    session_ = eq == std::string::npos ? "" : cookie.substr(eq + 1);
    csrf_ = r.body.value("csrf_token", std::string());
  }
  return r;
}

HttpReply OperatorClient::send(const char* method, const std::string& path, const std::string* body,
                               std::string* set_cookie) {
  HttpReply reply;
  CURL* c = curl_.get();
  curl_easy_reset(c);  // keeps the connection cache
  pin_request(c, base_url_ + path, pin_, 30'000);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append_to_string);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.text);
  std::string ignored;
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, set_cookie != nullptr ? set_cookie : &ignored);
  if (body == nullptr) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }
  SlistPtr headers =
      json_headers({session_.empty() ? "" : "Cookie: portcullis_session=" + session_,
                    body != nullptr && !csrf_.empty() ? "X-CSRF-Token: " + csrf_ : ""});
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  perform_into(c, &reply);
  return reply;
}

}  // namespace portcullis::testing
