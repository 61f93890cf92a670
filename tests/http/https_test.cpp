// HttpsServer against a real HTTPS client (libcurl, OpenSSL backend), over loopback only:
//
//   libcurl ──TLS 1.3, public key pinned──► 127.0.0.1:<port 0 → kernel-chosen> HttpsServer
//
// Proves on a fresh machine that CivetWeb as built by scripts/build-civetweb.sh serves TLS with
// OpenSSL 3: pinning, TLS version floor, keep-alive reuse, the body limit, handler results,
// a burst from several threads, and a prompt stop.

#include <curl/curl.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "controlplane/http/https_server.h"
#include "tests/support/pinned_curl.h"
#include "tests/support/temp_dir.h"

namespace portcullis::http {
namespace {

namespace fs = std::filesystem;
using portcullis::testing::CurlPtr;
using portcullis::testing::new_curl;
using portcullis::testing::SlistPtr;
using portcullis::testing::TempDir;
using std::chrono::steady_clock;

constexpr size_t kBodyLimit = 4096;

struct Reply {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string headers;
  long new_connections = 0;
  int tls_version = 0;  // SSL_version() of the connection, seen while the body arrived
  std::string error;
};

struct Transfer {
  CURL* curl;
  Reply* reply;
};

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  t->reply->body.append(data, size * n);
  const curl_tlssessioninfo* info = nullptr;
  if (curl_easy_getinfo(t->curl, CURLINFO_TLS_SSL_PTR, &info) == CURLE_OK && info != nullptr &&
      info->backend == CURLSSLBACKEND_OPENSSL && info->internals != nullptr) {
    t->reply->tls_version = SSL_version(static_cast<SSL*>(info->internals));
  }
  return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  static_cast<Reply*>(user)->headers.append(data, size * n);
  return size * n;
}

struct Upload {
  std::string data;
  size_t offset = 0;
};

size_t on_read(char* buf, size_t size, size_t n, void* user) {
  auto* up = static_cast<Upload*>(user);
  size_t len = std::min(size * n, up->data.size() - up->offset);
  std::copy_n(up->data.data() + up->offset, len, buf);
  up->offset += len;
  return len;
}

struct Options {
  std::string method = "GET";
  std::string body;
  bool chunked = false;
  // "Expect: 100-continue" makes curl wait for an interim reply the server never sends (it
  // answers 413 early, or curl sends the body after 1 s); agents send no Expect.
  bool expect_100 = false;
  std::string pin;  // empty: the server's real pin
  long ssl_version = CURL_SSLVERSION_DEFAULT;
  std::string ciphers;
  std::string header;  // one extra request header, "Name: value"
};

Options post(std::string body, bool chunked = false, bool expect_100 = false) {
  Options o;
  o.method = "POST";
  o.body = std::move(body);
  o.chunked = chunked;
  o.expect_100 = expect_100;
  return o;
}

Options pinned(std::string pin) {
  Options o;
  o.pin = std::move(pin);
  return o;
}

// TLS versions the client may use, e.g. tls_range(CURL_SSLVERSION_TLSv1_2, …MAX_TLSv1_2).
Options tls_range(long min, long max, std::string ciphers = "") {
  Options o;
  o.ssl_version = min | max;
  o.ciphers = std::move(ciphers);
  return o;
}

class HttpsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpsServerConfig config;
    config.address = "127.0.0.1";
    config.port = 0;
    config.cert_file = dir_.path() / "tls.crt";
    config.key_file = dir_.path() / "tls.key";
    config.max_body_bytes = kBodyLimit;
    config.worker_threads = 8;
    std::vector<Route> routes;
    routes.push_back({"GET", "/hello", [](const Request& r) {
                        Response response;
                        response.body = "hello " + r.path + "?" + r.query;
                        return response;
                      }});
    routes.push_back({"POST", "/echo", [](const Request& r) {
                        return Response{
                            .status = 201,
                            .content_type = "application/octet-stream",
                            .body = r.body,
                            .headers = {{"X-Body-Length", std::to_string(r.body.size())}}};
                      }});
    routes.push_back({"GET", "/status/", [](const Request& r) {
                        int status = std::stoi(r.path.substr(std::string("/status/").size()));
                        return Response{.status = status,
                                        .body = "status " + std::to_string(status),
                                        .headers = {{"X-Portcullis-Test", "yes"}}};
                      }});
    routes.push_back({"GET", "/big/", [](const Request& r) {
                        // A body of n bytes, each its offset mod 251 (a shifted or lost
                        // piece shows).
                        std::size_t n = std::stoul(r.path.substr(std::string("/big/").size()));
                        Response response;
                        response.content_type = "application/octet-stream";
                        response.body.resize(n);
                        for (std::size_t i = 0; i < n; ++i) response.body[i] = char(i % 251);
                        return response;
                      }});
    routes.push_back({"GET", "/throw", [](const Request&) -> Response {
                        throw std::runtime_error("handler failed");
                      }});
    auto server = HttpsServer::start(std::move(config), std::move(routes));
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
    ASSERT_NE(server_->port(), 0);
    ASSERT_TRUE(server_->identity().generated);
    base_url_ = server_->url();
    pin_ = server_->identity().public_key_pin();
  }

  // Valid after the server is gone too.
  std::string url(const std::string& path) const { return base_url_ + path; }

  // One request on `curl` (reused handles keep their connection).
  Reply perform(CURL* curl, const std::string& target, const Options& o = {}) {
    Reply reply;
    Transfer transfer{curl, &reply};
    Upload upload{o.body};
    SlistPtr headers;
    char error[CURL_ERROR_SIZE] = "";
    testing::pin_request(curl, target, o.pin.empty() ? pin_ : o.pin, 10'000);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(curl, CURLOPT_SSLVERSION, o.ssl_version);
    if (!o.ciphers.empty()) curl_easy_setopt(curl, CURLOPT_SSL_CIPHER_LIST, o.ciphers.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply);
    if (o.method == "POST") {
      curl_easy_setopt(curl, CURLOPT_POST, 1L);
      curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
      curl_easy_setopt(curl, CURLOPT_READDATA, &upload);
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                       o.chunked ? curl_off_t{-1} : static_cast<curl_off_t>(o.body.size()));
      curl_slist* list = nullptr;
      if (o.chunked) list = curl_slist_append(list, "Transfer-Encoding: chunked");
      list = curl_slist_append(list, o.expect_100 ? "Expect: 100-continue" : "Expect:");
      headers.reset(list);
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
    } else {
      curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
      headers.reset(o.header.empty() ? nullptr : curl_slist_append(nullptr, o.header.c_str()));
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
    }
    curl_easy_setopt(curl, CURLOPT_NOBODY, o.method == "HEAD" ? 1L : 0L);
    if (o.method != "GET" && o.method != "POST" && o.method != "HEAD") {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, o.method.c_str());
    } else {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, nullptr);
    }
    reply.code = curl_easy_perform(curl);
    reply.error = error;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &reply.new_connections);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, nullptr);
    return reply;
  }

  Reply perform(const std::string& target, const Options& o = {}) {
    CurlPtr curl = new_curl();
    return perform(curl.get(), target, o);
  }

  TempDir dir_{"pcl-https"};
  std::unique_ptr<HttpsServer> server_;
  std::string base_url_;
  std::string pin_;
};

TEST_F(HttpsServerTest, GetWithPinnedPublicKeyUsesTls13) {
  Reply r = perform(url("/hello/world?x=1"));
  ASSERT_EQ(r.code, CURLE_OK) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello /hello/world?x=1");
  EXPECT_EQ(r.tls_version, TLS1_3_VERSION);
  EXPECT_NE(r.headers.find("Content-Type: text/plain; charset=utf-8"), std::string::npos)
      << r.headers;
}

TEST_F(HttpsServerTest, TheCertificatePinMatchesTheServedCertificate) {
  CurlPtr curl = new_curl();
  curl_easy_setopt(curl.get(), CURLOPT_CERTINFO, 1L);
  Reply r = perform(curl.get(), url("/hello"));
  ASSERT_EQ(r.code, CURLE_OK) << r.error;
  curl_certinfo* chain = nullptr;
  ASSERT_EQ(curl_easy_getinfo(curl.get(), CURLINFO_CERTINFO, &chain), CURLE_OK);
  ASSERT_NE(chain, nullptr);
  ASSERT_EQ(chain->num_of_certs, 1);
  // curl reports the served certificate as PEM in a "Cert:" field; it must be our file's.
  std::string served;
  for (curl_slist* s = chain->certinfo[0]; s != nullptr; s = s->next) {
    std::string field = s->data;
    if (field.starts_with("Cert:")) served = field.substr(5);
  }
  std::string file;
  {
    FILE* f = fopen(server_->identity().cert_file.c_str(), "r");
    ASSERT_NE(f, nullptr);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) file.append(buf, n);
    fclose(f);
  }
  EXPECT_EQ(served, file);
}

TEST_F(HttpsServerTest, WrongPinFails) {
  // A pin of another key: SHA-256 of nothing.
  Reply r = perform(url("/hello"), pinned("sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
  EXPECT_EQ(r.code, CURLE_SSL_PINNEDPUBKEYNOTMATCH) << curl_easy_strerror(r.code);
  EXPECT_TRUE(r.body.empty());
}

TEST_F(HttpsServerTest, TlsBelow12IsRefused) {
  // The client is allowed TLS 1.0-1.1 only (security level 0 so that OpenSSL's client side does
  // not refuse it first); the server's floor is TLS 1.2.
  Reply r = perform(url("/hello"), tls_range(CURL_SSLVERSION_TLSv1_0, CURL_SSLVERSION_MAX_TLSv1_1,
                                             "DEFAULT:@SECLEVEL=0"));
  EXPECT_NE(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 0);
  // TLS 1.2 alone works.
  Reply ok =
      perform(url("/hello"), tls_range(CURL_SSLVERSION_TLSv1_2, CURL_SSLVERSION_MAX_TLSv1_2));
  ASSERT_EQ(ok.code, CURLE_OK) << ok.error;
  EXPECT_EQ(ok.tls_version, TLS1_2_VERSION);
}

TEST_F(HttpsServerTest, PlainHttpToTheTlsPortFailsCleanly) {
  const std::string plain = "http://127.0.0.1:" + std::to_string(server_->port()) + "/hello";
  auto start = steady_clock::now();
  Reply r = perform(plain);
  EXPECT_NE(r.code, CURLE_OK);
  EXPECT_NE(r.code, CURLE_OPERATION_TIMEDOUT) << "the server should close, not hang";
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(r.status, 0) << r.body;
  // And the server still serves TLS afterwards.
  Reply ok = perform(url("/hello"));
  EXPECT_EQ(ok.code, CURLE_OK) << ok.error;
  EXPECT_EQ(ok.status, 200);
}

TEST_F(HttpsServerTest, TwentyRequestsReuseOneKeepAliveConnection) {
  CurlPtr curl = new_curl();
  long connections = 0;
  for (int i = 0; i < 20; ++i) {
    Reply r = perform(curl.get(), url("/hello?i=" + std::to_string(i)));
    ASSERT_EQ(r.code, CURLE_OK) << r.error;
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.body, "hello /hello?i=" + std::to_string(i));
    connections += r.new_connections;
  }
  EXPECT_EQ(connections, 1);
  // POSTs with bodies keep the connection too.
  for (int i = 0; i < 5; ++i) {
    Reply r = perform(curl.get(), url("/echo"), post(std::string(100, 'x')));
    ASSERT_EQ(r.status, 201);
    connections += r.new_connections;
  }
  EXPECT_EQ(connections, 1);
}

TEST_F(HttpsServerTest, BodyLimit) {
  // At the limit: accepted and delivered whole.
  std::string at_limit(kBodyLimit, 'a');
  Reply ok = perform(url("/echo"), post(at_limit));
  ASSERT_EQ(ok.code, CURLE_OK) << ok.error;
  EXPECT_EQ(ok.status, 201);
  EXPECT_EQ(ok.body, at_limit);
  EXPECT_NE(ok.headers.find("X-Body-Length: 4096"), std::string::npos) << ok.headers;

  // Over it, announced by Content-Length: sent at once, and with "Expect: 100-continue" where the
  // 413 comes before the client sends anything.
  Reply big = perform(url("/echo"), post(std::string(kBodyLimit + 1, 'b')));
  EXPECT_EQ(big.code, CURLE_OK) << big.error;
  EXPECT_EQ(big.status, 413);
  EXPECT_NE(big.body.find("larger than 4096 bytes"), std::string::npos) << big.body;
  auto start = steady_clock::now();
  Reply huge = perform(url("/echo"), post(std::string(1 << 20, 'c'), false, /*expect_100=*/true));
  EXPECT_EQ(huge.status, 413) << huge.error;
  EXPECT_LT(steady_clock::now() - start, std::chrono::milliseconds(900)) << "answered early";
  // A small body with Expect still arrives (after curl's own 1 s wait).
  Reply expecting = perform(url("/echo"), post("expect", false, /*expect_100=*/true));
  EXPECT_EQ(expecting.status, 201) << expecting.error;
  EXPECT_EQ(expecting.body, "expect");

  // Over it, chunked: only discovered while reading.
  Reply chunked = perform(url("/echo"), post(std::string(kBodyLimit * 2, 'd'), true));
  EXPECT_EQ(chunked.status, 413) << chunked.error;
  Reply chunked_ok = perform(url("/echo"), post("small", true));
  EXPECT_EQ(chunked_ok.status, 201) << chunked_ok.error;
  EXPECT_EQ(chunked_ok.body, "small");
}

TEST_F(HttpsServerTest, HandlerStatusBodyAndHeadersComeBack) {
  Reply r = perform(url("/status/418"));
  ASSERT_EQ(r.code, CURLE_OK) << r.error;
  EXPECT_EQ(r.status, 418);
  EXPECT_EQ(r.body, "status 418");
  EXPECT_NE(r.headers.find("X-Portcullis-Test: yes"), std::string::npos) << r.headers;
  EXPECT_NE(r.headers.find("Content-Length: 10"), std::string::npos) << r.headers;

  Reply created = perform(url("/echo"), post("ping"));
  EXPECT_EQ(created.status, 201);
  EXPECT_EQ(created.body, "ping");
  EXPECT_NE(created.headers.find("Content-Type: application/octet-stream"), std::string::npos);
}

// The layer writes status line, headers and body itself (one write for small answers, headers then
// body for large ones): what CivetWeb's header functions used to add must still be there.
TEST_F(HttpsServerTest, AnswersCarryLengthDateAndConnectionAndArriveWhole) {
  CurlPtr curl = new_curl();
  long connections = 0;
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{300'000}, std::size_t{1} << 20,
                        std::size_t{17}}) {
    Reply r = perform(curl.get(), url("/big/" + std::to_string(n)));
    ASSERT_EQ(r.code, CURLE_OK) << r.error;
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.body.size(), n);
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(r.body[i], char(i % 251)) << "offset " << i;
    EXPECT_NE(r.headers.find("Content-Length: " + std::to_string(n) + "\r\n"), std::string::npos);
    EXPECT_NE(r.headers.find("Content-Type: application/octet-stream\r\n"), std::string::npos);
    EXPECT_NE(r.headers.find("Connection: keep-alive\r\n"), std::string::npos) << r.headers;
    EXPECT_NE(r.headers.find(" GMT\r\n"), std::string::npos) << "a Date header: " << r.headers;
    EXPECT_EQ(r.headers.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r.headers;
    connections += r.new_connections;
  }
  EXPECT_EQ(connections, 1) << "all on one kept-alive connection";

  // HEAD: the length of the GET body, and no body.
  Options head;
  head.method = "HEAD";
  Reply h = perform(curl.get(), url("/big/300000"), head);
  ASSERT_EQ(h.code, CURLE_OK) << h.error;
  EXPECT_EQ(h.status, 200);
  EXPECT_TRUE(h.body.empty());
  EXPECT_NE(h.headers.find("Content-Length: 300000\r\n"), std::string::npos) << h.headers;
  Reply after = perform(curl.get(), url("/hello"));
  EXPECT_EQ(after.body, "hello /hello?") << "the connection is still in step after a HEAD";
  EXPECT_EQ(after.new_connections, 0);

  // A client that asks to close is told so, and the next request needs a new connection.
  Options close;
  close.header = "Connection: close";
  Reply c = perform(curl.get(), url("/hello"), close);
  EXPECT_EQ(c.status, 200);
  EXPECT_NE(c.headers.find("Connection: close\r\n"), std::string::npos) << c.headers;
  EXPECT_EQ(perform(curl.get(), url("/hello")).new_connections, 1);
}

TEST_F(HttpsServerTest, RoutingErrorsAreAnsweredByTheLayer) {
  EXPECT_EQ(perform(url("/nothing")).status, 404);
  // "/hello" does not match "/helloworld".
  EXPECT_EQ(perform(url("/helloworld")).status, 404);
  Reply wrong_method = perform(url("/hello"), post("x"));
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_NE(wrong_method.headers.find("Allow: GET"), std::string::npos) << wrong_method.headers;
  Reply thrown = perform(url("/throw"));
  EXPECT_EQ(thrown.status, 500);
  EXPECT_EQ(thrown.body.find("handler failed"), std::string::npos) << "no internals leak";
}

TEST_F(HttpsServerTest, SurvivesTwoHundredRequestsFromTenThreads) {
  constexpr int kThreads = 10;
  constexpr int kPerThread = 20;
  std::atomic<int> ok{0};
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Odd threads use a new connection per request, even ones keep theirs.
      CurlPtr shared = new_curl();
      for (int i = 0; i < kPerThread; ++i) {
        CurlPtr fresh = t % 2 ? new_curl() : CurlPtr();
        CURL* curl = t % 2 ? fresh.get() : shared.get();
        const std::string body = std::to_string(t) + ":" + std::to_string(i);
        Reply r =
            i % 2 ? perform(curl, url("/echo"), post(body)) : perform(curl, url("/hello?" + body));
        const bool good =
            r.code == CURLE_OK && (i % 2 ? r.status == 201 && r.body == body
                                         : r.status == 200 && r.body == "hello /hello?" + body);
        if (good) {
          ++ok;
        } else {
          std::lock_guard lock(failures_mutex);
          failures.push_back(body + " -> " + std::to_string(r.status) + " " + r.error);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_EQ(perform(url("/hello")).status, 200);
}

TEST_F(HttpsServerTest, StopsPromptlyWithAnIdleKeepAliveConnectionOpen) {
  CurlPtr idle = new_curl();
  ASSERT_EQ(perform(idle.get(), url("/hello")).status, 200);
  auto start = steady_clock::now();
  server_.reset();
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(1));
  // The kept connection is closed and nothing listens any more.
  Reply reused = perform(idle.get(), url("/hello"));
  EXPECT_NE(reused.code, CURLE_OK);
  EXPECT_EQ(perform(url("/hello")).code, CURLE_COULDNT_CONNECT);
}

TEST_F(HttpsServerTest, SecondServerOnTheSamePortFailsWithAClearError) {
  HttpsServerConfig config;
  config.port = server_->port();
  config.cert_file = server_->identity().cert_file;
  config.key_file = server_->identity().key_file;
  auto second = HttpsServer::start(config, {});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().errno_value(), EADDRINUSE) << second.error().message();
  EXPECT_NE(second.error().message().find(std::to_string(config.port)), std::string::npos)
      << second.error().message();
}

TEST(HttpsServerStart, RefusesAnUnusableKeyWithAMessage) {
  TempDir dir("pcl-https");
  HttpsServerConfig config;
  config.port = 0;
  config.cert_file = dir.path() / "tls.crt";
  config.key_file = dir.path() / "tls.key";
  ASSERT_TRUE(ensure_tls_identity(config.cert_file, config.key_file));
  fs::permissions(config.key_file, fs::perms::others_read, fs::perm_options::add);
  auto server = HttpsServer::start(config, {});
  ASSERT_FALSE(server);
  EXPECT_NE(server.error().message().find("chmod 600"), std::string::npos)
      << server.error().message();
}

}  // namespace
}  // namespace portcullis::http
