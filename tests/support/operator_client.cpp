#include "tests/support/operator_client.h"

#include <cctype>
#include <mutex>
#include <string_view>

namespace portcullis::testing {
namespace {

using nlohmann::json;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

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

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

OperatorClient::OperatorClient(std::string base_url, std::string pin)
    : base_url_(std::move(base_url)), pin_(std::move(pin)) {
  global_init();
  curl_.reset(curl_easy_init());
}

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
  const std::string url = base_url_ + path;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  // Self-signed: trust comes from the pinned public key.
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  curl_easy_setopt(c, CURLOPT_PINNEDPUBLICKEY, pin_.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30'000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
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
  curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
  list = curl_slist_append(list, "Expect:");
  const std::string cookie = "Cookie: portcullis_session=" + session_;
  if (!session_.empty()) list = curl_slist_append(list, cookie.c_str());
  const std::string csrf = "X-CSRF-Token: " + csrf_;
  if (body != nullptr && !csrf_.empty()) list = curl_slist_append(list, csrf.c_str());
  std::unique_ptr<curl_slist, SlistDeleter> headers(list);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  CURLcode code = curl_easy_perform(c);
  if (code != CURLE_OK) {
    reply.curl_error = curl_easy_strerror(code);
    return reply;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &reply.new_connections);
  reply.body = json::parse(reply.text, nullptr, false);
  if (reply.body.is_discarded()) reply.body = nullptr;
  return reply;
}

}  // namespace portcullis::testing
