#include "tests/support/pinned_curl.h"

#include <mutex>

namespace portcullis::testing {

CurlPtr new_curl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  return CurlPtr(curl_easy_init());
}

void pin_request(CURL* c, const std::string& url, const std::string& pin, long timeout_ms) {
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  // Self-signed: trust comes from the pinned public key, as agents do it.
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  curl_easy_setopt(c, CURLOPT_PINNEDPUBLICKEY, pin.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
}

std::size_t append_to_string(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

SlistPtr json_headers(const std::vector<std::string>& extra) {
  curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
  list = curl_slist_append(list, "Expect:");
  for (const auto& line : extra) {
    if (!line.empty()) list = curl_slist_append(list, line.c_str());
  }
  return SlistPtr(list);
}

}  // namespace portcullis::testing
