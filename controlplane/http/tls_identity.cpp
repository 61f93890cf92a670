#include "controlplane/http/tls_identity.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string_view>
#include <system_error>

#include "dataplane/base/unique_fd.h"

namespace portcullis::http {
namespace {

template <auto Free>
struct OpensslDeleter {
  template <class T>
  void operator()(T* p) const {
    if (p != nullptr) Free(p);
  }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, OpensslDeleter<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, OpensslDeleter<X509_free>>;
using BioPtr = std::unique_ptr<BIO, OpensslDeleter<BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpensslDeleter<BN_free>>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, OpensslDeleter<X509_EXTENSION_free>>;

// Takes OpenSSL's most recent queued error into the context and clears the queue, so a later
// failure does not report a stale reason.
Error openssl_error(int err, std::string context) {
  unsigned long code = ERR_peek_last_error();
  if (code != 0) {
    char reason[256];
    ERR_error_string_n(code, reason, sizeof(reason));
    context += " (";
    context += reason;
    context += ")";
  }
  ERR_clear_error();
  return Error::from_errno(err, std::move(context));
}

std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

// File contents; wiped on destruction when they may hold a private key.
class FileBytes {
 public:
  explicit FileBytes(bool secret) : secret_(secret) {}
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes() {
    if (secret_ && !data_.empty()) OPENSSL_cleanse(data_.data(), data_.size());
  }
  std::string& data() { return data_; }

 private:
  bool secret_;
  std::string data_;
};

// PEM files are a few KiB; anything larger is not ours.
constexpr size_t kMaxPemBytes = 1 << 20;

Status read_file(const std::filesystem::path& path, FileBytes& out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail(Error::last_errno("open " + quoted(path)));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(Error::last_errno("stat " + quoted(path)));
  if (static_cast<size_t>(st.st_size) > kMaxPemBytes) {
    return fail_errno(EFBIG, "read " + quoted(path) + ": larger than a PEM file should be");
  }
  std::string& data = out.data();
  data.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Error::last_errno("read " + quoted(path)));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return {};
}

// Writes through a temporary file in the same directory and renames it into place without
// replacing an existing file (RENAME_NOREPLACE), so a concurrent start cannot clobber a key.
Status write_new_file(const std::filesystem::path& path, const char* data, size_t size,
                      mode_t mode) {
  std::filesystem::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (!fd) return fail(Error::last_errno("create " + quoted(tmp)));
  auto fail_and_remove = [&](Error e) {
    ::unlink(tmp.c_str());
    return fail(std::move(e));
  };
  // The umask may have cleared bits of `mode`; set it exactly.
  if (::fchmod(fd.get(), mode) != 0)
    return fail_and_remove(Error::last_errno("chmod " + quoted(tmp)));
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd.get(), data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_and_remove(Error::last_errno("write " + quoted(tmp)));
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail_and_remove(Error::last_errno("fsync " + quoted(tmp)));
  fd.reset();
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
    return fail_and_remove(Error::last_errno("rename " + quoted(tmp) + " to " + quoted(path)));
  }
  return {};
}

// Text that goes into an X.509v3 extension string ("DNS:a,IP:b"): a comma or a control character
// would change its meaning.
bool is_plain_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (c == ',' || static_cast<unsigned char>(c) < 0x21 || c == 0x7f) return false;
  }
  return true;
}

Status add_extension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext) return fail(openssl_error(EINVAL, "build certificate extension '" + value + "'"));
  if (X509_add_ext(cert, ext.get(), -1) != 1) {
    return fail(openssl_error(ENOMEM, "add certificate extension '" + value + "'"));
  }
  return {};
}

Result<X509Ptr> build_self_signed(EVP_PKEY* key, const TlsIdentityOptions& options) {
  X509Ptr cert(X509_new());
  if (!cert) return fail(openssl_error(ENOMEM, "allocate certificate"));
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return fail(openssl_error(EINVAL, "set certificate version"));
  }
  // A random positive serial of 159 bits (RFC 5280 allows at most 20 octets).
  BignumPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return fail(openssl_error(EIO, "generate certificate serial"));
  }
  // Valid from one hour ago, so a client whose clock is slightly behind accepts it.
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), options.valid_days, 0, nullptr) == nullptr) {
    return fail(openssl_error(EINVAL, "set certificate validity"));
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(
          name, "CN", MBSTRING_UTF8,
          reinterpret_cast<const unsigned char*>(options.common_name.c_str()), -1, -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), name) != 1) {
    return fail(openssl_error(EINVAL, "set certificate name '" + options.common_name + "'"));
  }
  if (X509_set_pubkey(cert.get(), key) != 1) {
    return fail(openssl_error(EINVAL, "set certificate public key"));
  }

  std::string alt_names;
  for (const std::string& dns : options.dns_names) {
    if (!is_plain_name(dns)) return fail_invalid("certificate DNS name '" + dns + "' is not valid");
    alt_names += (alt_names.empty() ? "DNS:" : ",DNS:") + dns;
  }
  for (const std::string& ip : options.ip_addresses) {
    if (!is_plain_name(ip)) return fail_invalid("certificate IP address '" + ip + "' is not valid");
    alt_names += (alt_names.empty() ? "IP:" : ",IP:") + ip;
  }
  if (auto s = add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE"); !s) {
    return fail(s.error());
  }
  if (auto s = add_extension(cert.get(), NID_key_usage, "critical,digitalSignature"); !s) {
    return fail(s.error());
  }
  if (auto s = add_extension(cert.get(), NID_ext_key_usage, "serverAuth"); !s) {
    return fail(s.error());
  }
  if (auto s = add_extension(cert.get(), NID_subject_key_identifier, "hash"); !s) {
    return fail(s.error());
  }
  if (!alt_names.empty()) {
    if (auto s = add_extension(cert.get(), NID_subject_alt_name, alt_names); !s) {
      return fail(s.error());
    }
  }
  if (X509_sign(cert.get(), key, EVP_sha256()) <= 0) {
    return fail(openssl_error(EIO, "sign certificate"));
  }
  return cert;
}

Status generate_identity(const std::filesystem::path& cert_file,
                         const std::filesystem::path& key_file, const TlsIdentityOptions& options) {
  if (options.valid_days <= 0) return fail_invalid("certificate validity must be at least 1 day");
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return fail(openssl_error(EIO, "generate ECDSA P-256 key"));
  auto cert = build_self_signed(key.get(), options);
  if (!cert) return fail(std::move(cert).error());

  // Secure-heap memory BIO: the PEM of the private key is wiped when it is freed.
  BioPtr key_pem(BIO_new(BIO_s_secmem()));
  BioPtr cert_pem(BIO_new(BIO_s_mem()));
  if (!key_pem || !cert_pem ||
      PEM_write_bio_PrivateKey(key_pem.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
          1 ||
      PEM_write_bio_X509(cert_pem.get(), cert->get()) != 1) {
    return fail(openssl_error(ENOMEM, "encode certificate and key as PEM"));
  }

  for (const auto& dir : {cert_file.parent_path(), key_file.parent_path()}) {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    if (ec) return fail(Error(ec, "create directory " + quoted(dir)));
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(key_pem.get(), &data);
  if (auto s = write_new_file(key_file, data, static_cast<size_t>(size), 0600); !s) {
    return fail(std::move(s).error().wrap("write TLS key"));
  }
  size = BIO_get_mem_data(cert_pem.get(), &data);
  if (auto s = write_new_file(cert_file, data, static_cast<size_t>(size), 0644); !s) {
    // Without its certificate the new key is useless and would block the next attempt.
    ::unlink(key_file.c_str());
    return fail(std::move(s).error().wrap("write TLS certificate"));
  }
  return {};
}

Sha256Digest sha256(const unsigned char* data, size_t size) {
  Sha256Digest d;
  unsigned int len = 0;
  // SHA-256 of a buffer in memory cannot fail short of allocation failure.
  int ok = EVP_Digest(data, size, d.bytes.data(), &len, EVP_sha256(), nullptr);
  (void)ok;
  return d;
}

}  // namespace

std::string Sha256Digest::hex_colon() const {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(bytes.size() * 3);
  for (std::uint8_t b : bytes) {
    if (!out.empty()) out += ':';
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

std::string Sha256Digest::base64() const {
  unsigned char out[4 * ((32 + 2) / 3) + 1];
  int n = EVP_EncodeBlock(out, bytes.data(), static_cast<int>(bytes.size()));
  return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
}

Result<TlsIdentity> load_tls_identity(const std::filesystem::path& cert_file,
                                      const std::filesystem::path& key_file) {
  struct stat st {};
  if (::stat(key_file.c_str(), &st) != 0) {
    return fail(Error::last_errno("stat TLS key " + quoted(key_file)));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail_errno(EPERM, "TLS key " + quoted(key_file) +
                                 " is readable by group or others (mode " + mode +
                                 "): chmod 600 it");
  }

  FileBytes cert_bytes(false);
  if (auto s = read_file(cert_file, cert_bytes); !s) {
    return fail(std::move(s).error().wrap("read TLS certificate"));
  }
  FileBytes key_bytes(true);
  if (auto s = read_file(key_file, key_bytes); !s) {
    return fail(std::move(s).error().wrap("read TLS key"));
  }

  BioPtr cert_bio(
      BIO_new_mem_buf(cert_bytes.data().data(), static_cast<int>(cert_bytes.data().size())));
  BioPtr key_bio(
      BIO_new_mem_buf(key_bytes.data().data(), static_cast<int>(key_bytes.data().size())));
  if (!cert_bio || !key_bio) return fail(openssl_error(ENOMEM, "allocate PEM buffers"));
  X509Ptr cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return fail(openssl_error(EINVAL, "parse TLS certificate " + quoted(cert_file) +
                                          ": expected a PEM 'CERTIFICATE' block"));
  }
  // No passphrase: the daemon starts unattended. An empty password callback makes an encrypted
  // key fail instead of prompting on the terminal.
  PkeyPtr key(PEM_read_bio_PrivateKey(
      key_bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (!key) {
    return fail(openssl_error(
        EINVAL, "parse TLS key " + quoted(key_file) + ": expected an unencrypted PEM private key"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return fail(openssl_error(EINVAL, "TLS key " + quoted(key_file) +
                                          " does not belong to certificate " + quoted(cert_file) +
                                          ": restore the matching pair, or remove both to "
                                          "generate a new one (agents must then re-pin)"));
  }

  TlsIdentity id;
  id.cert_file = cert_file;
  id.key_file = key_file;
  unsigned int len = 0;
  if (X509_digest(cert.get(), EVP_sha256(), id.cert_sha256.bytes.data(), &len) != 1 ||
      len != id.cert_sha256.bytes.size()) {
    return fail(openssl_error(EIO, "compute certificate fingerprint"));
  }
  unsigned char* spki = nullptr;
  int spki_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &spki);
  if (spki_len <= 0) return fail(openssl_error(EIO, "encode certificate public key"));
  id.spki_sha256 = sha256(spki, static_cast<size_t>(spki_len));
  OPENSSL_free(spki);
  return id;
}

Result<TlsIdentity> ensure_tls_identity(const std::filesystem::path& cert_file,
                                        const std::filesystem::path& key_file,
                                        const TlsIdentityOptions& options) {
  std::error_code ec;
  bool have_cert = std::filesystem::exists(cert_file, ec);
  if (ec) return fail(Error(ec, "check TLS certificate " + quoted(cert_file)));
  bool have_key = std::filesystem::exists(key_file, ec);
  if (ec) return fail(Error(ec, "check TLS key " + quoted(key_file)));

  if (have_cert != have_key) {
    const auto& present = have_cert ? cert_file : key_file;
    const auto& missing = have_cert ? key_file : cert_file;
    return fail_errno(ENOENT, "TLS " + std::string(have_cert ? "key " : "certificate ") +
                                  quoted(missing) + " is missing but " + quoted(present) +
                                  " exists: restore it, or remove both to generate a new pair "
                                  "(agents must then re-pin)");
  }
  bool generated = false;
  if (!have_cert) {
    if (auto s = generate_identity(cert_file, key_file, options); !s) {
      return fail(std::move(s).error().wrap("generate self-signed TLS certificate"));
    }
    generated = true;
  }
  auto id = load_tls_identity(cert_file, key_file);
  if (id) id->generated = generated;
  return id;
}

}  // namespace portcullis::http
