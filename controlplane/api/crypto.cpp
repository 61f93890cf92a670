#include "controlplane/api/crypto.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "dataplane/base/unique_fd.h"

namespace portcullis::api {
namespace {

void init_sodium() {
  // Idempotent and thread-safe; fails only when the system has no usable randomness.
  if (sodium_init() < 0) std::abort();
}

const std::uint8_t* bytes_of(std::string_view s) {
  return reinterpret_cast<const std::uint8_t*>(s.data());
}

std::string encode(std::span<const std::uint8_t> bytes, int variant) {
  std::string out(sodium_base64_encoded_len(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), variant);
  out.resize(out.size() - 1);  // the encoder's terminating NUL
  return out;
}

Result<std::string> decode(std::string_view text, int variant, const char* what) {
  std::string out(text.size() * 3 / 4 + 3, '\0');
  std::size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, &end, variant) != 0 ||
      end != text.data() + text.size()) {
    return fail_invalid(std::string("not valid ") + what);
  }
  out.resize(len);
  return out;
}

}  // namespace

Sha256 sha256(std::string_view bytes) {
  Sha256 out;
  crypto_hash_sha256(out.data(), bytes_of(bytes), bytes.size());
  return out;
}

std::string hex(std::span<const std::uint8_t> bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
  out.resize(out.size() - 1);
  return out;
}

std::string random_base64url(std::size_t n) {
  init_sodium();
  std::string raw(n, '\0');
  randombytes_buf(raw.data(), raw.size());
  std::string out = base64url_encode({bytes_of(raw), raw.size()});
  sodium_memzero(raw.data(), raw.size());
  return out;
}

std::string base64url_encode(std::span<const std::uint8_t> bytes) {
  return encode(bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

Result<std::string> base64url_decode(std::string_view text) {
  return decode(text, sodium_base64_VARIANT_URLSAFE_NO_PADDING, "base64url (no padding)");
}

std::string base64_encode(std::span<const std::uint8_t> bytes) {
  return encode(bytes, sodium_base64_VARIANT_ORIGINAL);
}

Result<std::string> base64_decode(std::string_view text) {
  return decode(text, sodium_base64_VARIANT_ORIGINAL, "base64");
}

Result<Signature> decode_signature(std::string_view text) {
  auto raw = base64_decode(text);
  if (!raw) return fail_invalid("signature is not valid base64");
  if (raw->size() != kSignatureLen) {
    return fail_invalid("signature must be 64 bytes (88 base64 characters)");
  }
  Signature sig;
  std::copy(raw->begin(), raw->end(), sig.begin());
  return sig;
}

bool ed25519_verify(const Key& public_key, std::string_view message, const Signature& signature) {
  init_sodium();
  return crypto_sign_verify_detached(signature.data(), bytes_of(message), message.size(),
                                     public_key.data()) == 0;
}

SigningKey SigningKey::from_seed(const SecretKey& seed) {
  init_sodium();
  SigningKey key;
  KeyBytes pk;
  crypto_sign_seed_keypair(pk.data(), key.secret_.data(), seed.data());
  key.public_key_ = Key(pk);
  Sha256 digest = sha256({reinterpret_cast<const char*>(pk.data()), pk.size()});
  key.key_id_ = base64url_encode(std::span<const std::uint8_t>(digest.data(), 16));
  return key;
}

SigningKey SigningKey::generate() { return from_seed(SecretKey::generate_preshared()); }

SigningKey::~SigningKey() { sodium_memzero(secret_.data(), secret_.size()); }

Signature SigningKey::sign(std::string_view message) const {
  Signature sig;
  crypto_sign_detached(sig.data(), nullptr, bytes_of(message), message.size(), secret_.data());
  return sig;
}

std::string SigningKey::sign_base64(std::string_view message) const {
  return base64_encode(sign(message));
}

Result<SigningKey> SigningKey::load_or_create(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd && errno == ENOENT) {
    SecretKey seed = SecretKey::generate_preshared();
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) return fail(Error::last_errno("create signing key file '" + path + "'"));
    std::string text = seed.reveal_base64() + "\n";
    bool ok = ::write(out.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
              ::fsync(out.get()) == 0;
    sodium_memzero(text.data(), text.size());
    if (!ok) {
      auto e = Error::last_errno("write signing key file '" + path + "'");
      ::unlink(path.c_str());  // a half-written key would fail every later start
      return fail(std::move(e));
    }
    return from_seed(seed);
  }
  if (!fd) return fail(Error::last_errno("open signing key file '" + path + "'"));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return fail(Error::last_errno("stat '" + path + "'"));
  if (st.st_mode & 077) {
    return fail_errno(
        EPERM, "signing key file '" + path + "' is readable by group or others: chmod 600 it");
  }
  char buf[128];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n < 0) return fail(Error::last_errno("read '" + path + "'"));
  std::string_view text(buf, static_cast<std::size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  auto seed = SecretKey::from_base64(text);
  sodium_memzero(buf, sizeof buf);
  if (!seed) return fail(std::move(seed.error()).wrap("signing key file '" + path + "'"));
  return from_seed(*seed);
}

}  // namespace portcullis::api
