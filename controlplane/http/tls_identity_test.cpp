#include "controlplane/http/tls_identity.h"

#include <stdio.h>
#include <sys/stat.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace portcullis::http {
namespace {

namespace fs = std::filesystem;
using portcullis::testing::TempDir;

// Runs a shell command (paths here are our own temp files) and returns its stdout.
std::string run(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  std::array<char, 512> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  EXPECT_EQ(::pclose(pipe), 0) << command;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

TEST(TlsIdentity, GeneratesOnFirstStartWithModesAndReusesAfter) {
  TempDir dir("pcl-tls");
  const fs::path cert = dir.path() / "state" / "tls.crt";
  const fs::path key = dir.path() / "state" / "tls.key";
  auto first = ensure_tls_identity(cert, key);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_TRUE(first->generated);
  EXPECT_EQ(mode_of(key), 0600u);
  EXPECT_EQ(mode_of(cert), 0644u);

  auto second = ensure_tls_identity(cert, key);
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_FALSE(second->generated);
  EXPECT_EQ(second->cert_sha256, first->cert_sha256);
  EXPECT_EQ(second->spki_sha256, first->spki_sha256);
  // No temporary file left beside them.
  EXPECT_EQ(std::distance(fs::directory_iterator(cert.parent_path()), fs::directory_iterator()), 2);
}

TEST(TlsIdentity, FingerprintsMatchOpensslCommandLine) {
  TempDir dir("pcl-tls");
  const fs::path cert = dir.path() / "tls.crt";
  const fs::path key = dir.path() / "tls.key";
  auto id = ensure_tls_identity(cert, key);
  ASSERT_TRUE(id) << id.error().message();

  // "sha256 Fingerprint=AB:CD:…" (OpenSSL 3) or "SHA256 Fingerprint=…" (1.1).
  std::string line = run("openssl x509 -noout -fingerprint -sha256 -in '" + cert.string() + "'");
  ASSERT_NE(line.find('='), std::string::npos) << line;
  EXPECT_EQ(id->cert_sha256.hex_colon(), line.substr(line.find('=') + 1));
  EXPECT_EQ(id->cert_sha256.hex_colon().size(), 32u * 3 - 1);

  // curl's documented recipe for a CURLOPT_PINNEDPUBLICKEY value.
  std::string pin = run("openssl x509 -in '" + cert.string() +
                        "' -pubkey -noout | openssl pkey -pubin -outform der | "
                        "openssl dgst -sha256 -binary | openssl enc -base64");
  EXPECT_EQ(id->public_key_pin(), "sha256//" + pin);

  std::string text = run("openssl x509 -in '" + cert.string() + "' -noout -text");
  EXPECT_NE(text.find("prime256v1"), std::string::npos) << text;
  EXPECT_NE(text.find("DNS:localhost"), std::string::npos) << text;
  EXPECT_NE(text.find("IP Address:127.0.0.1"), std::string::npos) << text;
  EXPECT_NE(text.find("TLS Web Server Authentication"), std::string::npos) << text;
  EXPECT_NE(text.find("CA:FALSE"), std::string::npos) << text;
  // The key file is a private key the CLI accepts and that matches the certificate.
  EXPECT_EQ(run("openssl pkey -in '" + key.string() + "' -pubout"),
            run("openssl x509 -in '" + cert.string() + "' -pubkey -noout"));
}

TEST(TlsIdentity, RefusesWhenOnlyOneOfThePairExists) {
  TempDir dir("pcl-tls");
  const fs::path cert = dir.path() / "tls.crt";
  const fs::path key = dir.path() / "tls.key";
  ASSERT_TRUE(ensure_tls_identity(cert, key));
  fs::remove(cert);
  auto id = ensure_tls_identity(cert, key);
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().errno_value(), ENOENT);
  EXPECT_NE(id.error().message().find("remove both"), std::string::npos) << id.error().message();
  // The surviving key was not replaced.
  EXPECT_TRUE(fs::exists(key));
  EXPECT_FALSE(fs::exists(cert));
}

TEST(TlsIdentity, RefusesAKeyReadableByOthers) {
  TempDir dir("pcl-tls");
  const fs::path cert = dir.path() / "tls.crt";
  const fs::path key = dir.path() / "tls.key";
  ASSERT_TRUE(ensure_tls_identity(cert, key));
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  auto id = load_tls_identity(cert, key);
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().errno_value(), EPERM);
  EXPECT_NE(id.error().message().find("chmod 600"), std::string::npos) << id.error().message();
}

TEST(TlsIdentity, RefusesAKeyOfAnotherCertificate) {
  TempDir dir("pcl-tls");
  ASSERT_TRUE(ensure_tls_identity(dir.path() / "a.crt", dir.path() / "a.key"));
  ASSERT_TRUE(ensure_tls_identity(dir.path() / "b.crt", dir.path() / "b.key"));
  auto id = load_tls_identity(dir.path() / "a.crt", dir.path() / "b.key");
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().errno_value(), EINVAL);
  EXPECT_NE(id.error().message().find("does not belong"), std::string::npos)
      << id.error().message();
}

TEST(TlsIdentity, RejectsGarbageCertificate) {
  TempDir dir("pcl-tls");
  const fs::path cert = dir.path() / "tls.crt";
  const fs::path key = dir.path() / "tls.key";
  ASSERT_TRUE(ensure_tls_identity(cert, key));
  std::ofstream(cert, std::ios::trunc) << "-----BEGIN CERTIFICATE-----\nnot base64\n";
  auto id = load_tls_identity(cert, key);
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().errno_value(), EINVAL);
  EXPECT_NE(id.error().message().find("parse TLS certificate"), std::string::npos);
}

TEST(TlsIdentity, RejectsANameThatWouldChangeTheExtensionAndLeavesNoFiles) {
  TempDir dir("pcl-tls");
  const fs::path cert = dir.path() / "tls.crt";
  const fs::path key = dir.path() / "tls.key";
  TlsIdentityOptions options;
  options.dns_names = {"gw.example,IP:10.0.0.1"};
  auto id = ensure_tls_identity(cert, key, options);
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().errno_value(), EINVAL);
  EXPECT_FALSE(fs::exists(cert));
  EXPECT_FALSE(fs::exists(key));
}

TEST(TlsIdentity, EveryGenerationIsANewKey) {
  TempDir dir("pcl-tls");
  auto a = ensure_tls_identity(dir.path() / "a.crt", dir.path() / "a.key");
  auto b = ensure_tls_identity(dir.path() / "b.crt", dir.path() / "b.key");
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->spki_sha256, b->spki_sha256);
  EXPECT_NE(a->cert_sha256, b->cert_sha256);
}

TEST(Sha256Digest, TextForms) {
  Sha256Digest d;
  for (size_t i = 0; i < d.bytes.size(); ++i) d.bytes[i] = static_cast<std::uint8_t>(i * 9);
  EXPECT_EQ(d.hex_colon().substr(0, 12), "00:09:12:1B:");
  // 32 bytes -> 44 base64 characters, one '=' of padding.
  EXPECT_EQ(d.base64().size(), 44u);
  EXPECT_EQ(d.base64().back(), '=');
}

}  // namespace
}  // namespace portcullis::http
