#pragma once
// The gateway's TLS identity: a certificate and private key in two PEM files. On first start a
// self-signed ECDSA P-256 certificate is generated (key 0600, certificate 0644); agents pin its
// fingerprints instead of trusting a CA.

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "dataplane/base/result.h"

namespace portcullis::http {

struct Sha256Digest {
  std::array<std::uint8_t, 32> bytes{};

  // "AB:CD:…", the form `openssl x509 -noout -fingerprint -sha256` prints after the '='.
  std::string hex_colon() const;
  std::string base64() const;
  friend bool operator==(const Sha256Digest&, const Sha256Digest&) = default;
};

struct TlsIdentity {
  std::filesystem::path cert_file;
  std::filesystem::path key_file;
  Sha256Digest cert_sha256;  // of the certificate's DER encoding
  Sha256Digest spki_sha256;  // of the DER SubjectPublicKeyInfo
  bool generated = false;    // true when this call created the files

  // For curl's CURLOPT_PINNEDPUBLICKEY: "sha256//<base64>".
  std::string public_key_pin() const { return "sha256//" + spki_sha256.base64(); }
};

struct TlsIdentityOptions {
  std::string common_name = "portcullis gateway";
  std::vector<std::string> dns_names = {"localhost"};
  std::vector<std::string> ip_addresses = {"127.0.0.1", "::1"};
  int valid_days = 3650;
};

// Reads both files, checks that the key belongs to the certificate and that the key file is not
// readable by group or others, and computes the fingerprints.
Result<TlsIdentity> load_tls_identity(const std::filesystem::path& cert_file,
                                      const std::filesystem::path& key_file);

// load_tls_identity(), after generating both files if neither exists. Exactly one of the two
// existing is an error (a lost key must not be silently replaced: agents pin the old one).
Result<TlsIdentity> ensure_tls_identity(const std::filesystem::path& cert_file,
                                        const std::filesystem::path& key_file,
                                        const TlsIdentityOptions& options = {});

}  // namespace portcullis::http
