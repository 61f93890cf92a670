#include "agent/identity.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "dataplane/base/log.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::agent {
namespace {

constexpr char kKdfContext[crypto_kdf_CONTEXTBYTES + 1] = "pclagent";
constexpr std::uint64_t kSealSubkeyId = 1;

std::string what_next(int err, const std::string& dir) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return " (the file system of " + dir +
             " is full: free space there; the previous file was "
             "kept)";
    case EROFS:
      return " (" + dir + " is on a read-only file system)";
    case EACCES:
    case EPERM:
      return " (no permission: the agent must own its state directory " + dir + ")";
    default:
      return "";
  }
}

std::string dir_of(const std::string& path) {
  const std::filesystem::path p(path);
  return p.has_parent_path() ? p.parent_path().string() : ".";
}

Error io_error(int err, const std::string& what, const std::string& dir) {
  return Error::from_errno(err, what + what_next(err, dir));
}

Status write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Error::last_errno("write"));
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

}  // namespace

AgentIdentity AgentIdentity::from_seed(const SecretKey& seed) {
  AgentIdentity id;
  std::array<std::uint8_t, crypto_sign_PUBLICKEYBYTES> pk{};
  crypto_sign_seed_keypair(pk.data(), id.secret_.data(), seed.data());
  id.public_key_ = Key(pk);
  crypto_kdf_derive_from_key(id.seal_key_.data(), id.seal_key_.size(), kSealSubkeyId, kKdfContext,
                             seed.data());
  return id;
}

AgentIdentity::~AgentIdentity() {
  sodium_memzero(secret_.data(), secret_.size());
  sodium_memzero(seal_key_.data(), seal_key_.size());
}

Result<AgentIdentity> AgentIdentity::load_or_create(const std::string& path) {
  auto text = read_private_file(path);
  if (!text && text.error().errno_value() == ENOENT) {
    KeyBytes raw;
    randombytes_buf(raw.data(), raw.size());
    SecretKey seed(raw);
    sodium_memzero(raw.data(), raw.size());
    std::string line = seed.reveal_base64() + "\n";
    // O_EXCL semantics matter less than atomicity here: a half-written identity would be worse.
    auto written = write_file_atomic(path, line);
    sodium_memzero(line.data(), line.size());
    if (!written) return fail(std::move(written.error()).wrap("create identity key"));
    return from_seed(seed);
  }
  if (!text) return fail(std::move(text.error()).wrap("identity key"));
  std::string_view v(*text);
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.remove_suffix(1);
  auto seed = SecretKey::from_base64(v);
  sodium_memzero(text->data(), text->size());
  if (!seed) return fail(std::move(seed.error()).wrap("identity key file '" + path + "'"));
  return from_seed(*seed);
}

std::string AgentIdentity::sign_base64(std::string_view message) const {
  std::array<std::uint8_t, crypto_sign_BYTES> sig{};
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size(), secret_.data());
  return base64_standard(sig);
}

std::string AgentIdentity::seal(std::string_view plaintext) const {
  std::string out(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plaintext.size(), '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  randombytes_buf(p, crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(p + crypto_secretbox_NONCEBYTES,
                        reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
                        p, seal_key_.data());
  return out;
}

Result<std::string> AgentIdentity::unseal(std::string_view sealed) const {
  constexpr std::size_t kOverhead = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES;
  if (sealed.size() < kOverhead) return fail_errno(EBADMSG, "sealed data is too short");
  std::string out(sealed.size() - kOverhead, '\0');
  const auto* p = reinterpret_cast<const unsigned char*>(sealed.data());
  if (crypto_secretbox_open_easy(
          reinterpret_cast<unsigned char*>(out.data()), p + crypto_secretbox_NONCEBYTES,
          sealed.size() - crypto_secretbox_NONCEBYTES, p, seal_key_.data()) != 0) {
    return fail_errno(EBADMSG, "sealed data was not sealed by this agent identity or was changed");
  }
  return out;
}

Status write_file_atomic(const std::string& path, std::string_view bytes) {
  const std::string dir = dir_of(path);
  std::string tmp = path + ".tmp-XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) return fail(io_error(errno, "create temporary file for '" + path + "'", dir));
  auto discard = [&](int err, const std::string& what) {
    ::unlink(tmp.c_str());
    return fail(io_error(err, what + " '" + path + "'", dir));
  };
  if (::fchmod(fd.get(), 0600) != 0) return discard(errno, "chmod");
  if (auto w = write_all(fd.get(), bytes); !w) return discard(w.error().errno_value(), "write");
  if (::fsync(fd.get()) != 0) return discard(errno, "fsync");
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return discard(errno, "rename into");
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd) ::fsync(dfd.get());  // the rename's durability; a failure here loses nothing yet
  return {};
}

Result<SecretKey> load_or_create_wireguard_key(const std::string& path) {
  auto text = read_private_file(path);
  if (!text && text.error().errno_value() == ENOENT) {
    auto key = SecretKey::generate_private();
    std::string line = key.reveal_base64() + "\n";
    auto written = write_file_atomic(path, line);
    sodium_memzero(line.data(), line.size());
    if (!written) return fail(std::move(written.error()).wrap("create WireGuard key"));
    return key;
  }
  if (!text) return fail(std::move(text.error()).wrap("WireGuard key"));
  std::string_view v(*text);
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.remove_suffix(1);
  auto key = SecretKey::from_base64(v);
  sodium_memzero(text->data(), text->size());
  if (!key) return fail(std::move(key.error()).wrap("WireGuard key file '" + path + "'"));
  return key;
}

Result<StateKeys> open_state_dir(const std::string& dir, const std::atomic<bool>& stop) {
  constexpr std::chrono::milliseconds kMaxWait{60'000};
  std::chrono::milliseconds wait{1000};
  for (;;) {
    auto opened = [&]() -> Result<StateKeys> {
      if (auto s = ensure_state_dir(dir); !s) return fail(std::move(s.error()));
      auto identity = AgentIdentity::load_or_create(dir + "/" + kIdentityFile);
      if (!identity) return fail(std::move(identity.error()));
      auto wg = load_or_create_wireguard_key(dir + "/" + kWireguardKeyFile);
      if (!wg) return fail(std::move(wg.error()));
      return StateKeys{std::move(*identity), std::move(*wg)};
    }();
    if (opened) return opened;
    const int err = opened.error().errno_value();
    if (err != ENOSPC && err != EDQUOT) return opened;
    log_error("state directory full, cannot store the agent's keys; waiting for free space",
              {{"state_dir", dir},
               {"error", opened.error().message()},
               {"retry_in_s", std::to_string(wait.count() / 1000)},
               {"todo", "free space in " + dir + " (df " + dir + ")"}});
    const auto until = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < until) {
      if (stop.load()) return fail_errno(ECANCELED, "stopped while waiting for space in " + dir);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    wait = std::min(wait * 2, kMaxWait);
  }
}

Result<std::string> read_private_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return fail(Error::last_errno("open '" + path + "'"));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(Error::last_errno("stat '" + path + "'"));
  if (st.st_mode & 077) {
    return fail_errno(EPERM, "'" + path + "' is readable by group or others: chmod 600 it");
  }
  if (st.st_size > 1024 * 1024) return fail_errno(EFBIG, "'" + path + "' is too large");
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Error::last_errno("read '" + path + "'"));
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  sodium_memzero(buf, sizeof buf);
  return out;
}

Status ensure_state_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail(io_error(ec.value(), "create state directory '" + dir + "'", dir));
  if (::chmod(dir.c_str(), 0700) != 0) {
    return fail(io_error(errno, "chmod 700 state directory '" + dir + "'", dir));
  }
  return {};
}

std::string encode_enrollment(const EnrollmentState& s) {
  nlohmann::json j = {
      {"enrollment_id", s.enrollment_id}, {"device_id", s.device_id},
      {"access_token", s.access_token},   {"access_expires_at", s.access_expires_at},
      {"refresh_token", s.refresh_token}, {"refresh_expires_at", s.refresh_expires_at},
      {"gateway_url", s.gateway_url}};
  if (s.gateway_signing_key) j["gateway_signing_key"] = s.gateway_signing_key->to_base64();
  return j.dump();
}

Result<EnrollmentState> decode_enrollment(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail_invalid("enrollment state is not JSON");
  EnrollmentState s;
  auto str = [&](const char* k, std::string& out) {
    auto it = j.find(k);
    if (it != j.end() && it->is_string()) out = it->get<std::string>();
  };
  auto num = [&](const char* k, std::int64_t& out) {
    auto it = j.find(k);
    if (it != j.end() && it->is_number_integer()) out = it->get<std::int64_t>();
  };
  str("enrollment_id", s.enrollment_id);
  str("device_id", s.device_id);
  str("access_token", s.access_token);
  str("refresh_token", s.refresh_token);
  str("gateway_url", s.gateway_url);
  num("access_expires_at", s.access_expires_at);
  num("refresh_expires_at", s.refresh_expires_at);
  std::string key;
  str("gateway_signing_key", key);
  if (!key.empty()) {
    auto k = Key::from_base64(key);
    if (!k) return fail_invalid("enrollment state: bad gateway_signing_key");
    s.gateway_signing_key = *k;
  }
  return s;
}

Result<std::optional<EnrollmentState>> load_enrollment(const std::string& path,
                                                       const AgentIdentity& identity) {
  auto sealed = read_private_file(path);
  if (!sealed && sealed.error().errno_value() == ENOENT) return std::optional<EnrollmentState>();
  if (!sealed) return fail(std::move(sealed.error()));
  auto plain = identity.unseal(*sealed);
  if (!plain) return fail(std::move(plain.error()).wrap("enrollment state '" + path + "'"));
  auto s = decode_enrollment(*plain);
  sodium_memzero(plain->data(), plain->size());
  if (!s) return fail(std::move(s.error()).wrap("'" + path + "'"));
  return std::optional<EnrollmentState>(std::move(*s));
}

Status save_enrollment(const std::string& path, const AgentIdentity& identity,
                       const EnrollmentState& state) {
  std::string plain = encode_enrollment(state);
  std::string sealed = identity.seal(plain);
  sodium_memzero(plain.data(), plain.size());
  return write_file_atomic(path, sealed);
}

std::string sha256_hex(std::string_view bytes) {
  std::array<unsigned char, crypto_hash_sha256_BYTES> d{};
  crypto_hash_sha256(d.data(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  std::string out(d.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), d.data(), d.size());
  out.pop_back();
  return out;
}

std::string base64_standard(std::span<const std::uint8_t> bytes) {
  const int variant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), variant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

Result<std::string> base64_standard_decode(std::string_view text) {
  std::string out(text.size(), '\0');
  std::size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size()) {
    return fail_invalid("not standard base64");
  }
  out.resize(len);
  return out;
}

std::string random_base64url(std::size_t n) {
  std::string raw(n, '\0');
  randombytes_buf(raw.data(), raw.size());
  const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(n, variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()), n,
                    variant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

}  // namespace portcullis::agent
