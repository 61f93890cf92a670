#pragma once
// libcurl set up the way agents talk to the gateway: the server's certificate is self-signed, so
// trust comes from its pinned public key alone (no CA, no host name check).
//
//   CurlPtr curl = new_curl();                      // libcurl initialised once per process
//   std::string text;
//   pin_request(curl.get(), url, pin, 30'000);      // URL, pin, timeout, no signals
//   curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append_to_string);
//   curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &text);
//   SlistPtr headers = json_headers({"Authorization: Bearer " + token});
//   curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers.get());

#include <curl/curl.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace portcullis::testing {

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

// A new easy handle; the first call runs curl_global_init for the process (thread-safe).
CurlPtr new_curl();

// Sets the URL, trusts the server by `pin` ("sha256//<base64 SPKI digest>") only, gives the whole
// transfer timeout_ms and keeps libcurl away from signals (requests run on worker threads).
void pin_request(CURL* c, const std::string& url, const std::string& pin, long timeout_ms);

// A CURLOPT_WRITEFUNCTION that appends the body to the std::string* in CURLOPT_WRITEDATA.
std::size_t append_to_string(char* data, std::size_t size, std::size_t n, void* user);

// Headers of a JSON request: "Content-Type: application/json", an empty "Expect:" (agents send
// no 100-continue), then each line of `extra` that is not empty.
SlistPtr json_headers(const std::vector<std::string>& extra = {});

}  // namespace portcullis::testing
