#pragma once
// The agent's identity and what it keeps in its state directory, all mode 0600:
//   identity.key    base64 Ed25519 seed (libsodium crypto_sign): the root of the agent's identity;
//                   enroll/request and enroll/poll are signed with it (agent_proof.h)
//   wireguard.key   base64 WireGuard private key (dataplane/base/key_file.h)
//   enrollment.sealed  the enrollment id, device id, tokens and the gateway signing key, sealed
//                   (XSalsa20-Poly1305, crypto_secretbox) with a key derived from the identity
//                   seed (crypto_kdf, context "pclagent", subkey 1): the file alone is useless,
//                   and a changed byte is refused rather than believed.
// Every file is written atomically (temporary file, fsync, rename, fsync of the directory), so a
// full disk or a crash leaves the previous version intact.

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "dataplane/base/key.h"
#include "dataplane/base/result.h"

namespace portcullis::agent {

inline constexpr const char* kIdentityFile = "identity.key";
inline constexpr const char* kWireguardKeyFile = "wireguard.key";
inline constexpr const char* kEnrollmentFile = "enrollment.sealed";

class AgentIdentity {
 public:
  // Reads <path> or creates it (0600) with a new random seed. A file readable by group or others
  // is refused ("chmod 600 it").
  static Result<AgentIdentity> load_or_create(const std::string& path);
  static AgentIdentity from_seed(const SecretKey& seed);

  AgentIdentity(const AgentIdentity&) = default;
  AgentIdentity& operator=(const AgentIdentity&) = default;
  ~AgentIdentity();

  // The Ed25519 public key (44 base64 characters on the wire, like a WireGuard key).
  const Key& public_key() const { return public_key_; }
  // base64 of the 64-byte detached signature.
  std::string sign_base64(std::string_view message) const;

  // Sealed blob: 24-byte nonce || ciphertext || 16-byte tag.
  std::string seal(std::string_view plaintext) const;
  // EBADMSG when the blob was not sealed by this identity or was changed.
  Result<std::string> unseal(std::string_view sealed) const;

 private:
  AgentIdentity() = default;

  std::array<std::uint8_t, 64> secret_{};    // libsodium's seed || public key
  std::array<std::uint8_t, 32> seal_key_{};  // crypto_kdf subkey for crypto_secretbox
  Key public_key_;
};

// wireguard.key in the format of dataplane/base/key_file.h (base64 and a newline, 0600), but
// created through write_file_atomic: a crash or a full disk never leaves a truncated key behind.
Result<SecretKey> load_or_create_wireguard_key(const std::string& path);

struct StateKeys {
  AgentIdentity identity;
  SecretKey wireguard;
};
// Creates the state directory (0700) and loads or creates identity.key and wireguard.key. A full
// file system (ENOSPC, EDQUOT) is waited out, the agent having nothing to do without its keys:
// an error line naming the file and what to do, then retries 1 s, 2 s, 4 s ... 60 s apart until
// it works or `stop` becomes true (ECANCELED). Any other error is returned at once.
Result<StateKeys> open_state_dir(const std::string& dir, const std::atomic<bool>& stop);

// Writes `bytes` to `path` atomically with mode 0600. ENOSPC / EDQUOT / EIO errors name the file
// and say what to do; the old file is left as it was.
Status write_file_atomic(const std::string& path, std::string_view bytes);
// The whole file; ENOENT when missing. Refuses (EPERM) a file group or others can read.
Result<std::string> read_private_file(const std::string& path);

// Creates the state directory (0700) if needed.
Status ensure_state_dir(const std::string& dir);

// What enrollment left us with. Persisted sealed in enrollment.sealed.
struct EnrollmentState {
  std::string enrollment_id;
  std::string device_id;  // empty until approved
  std::string access_token;
  std::int64_t access_expires_at = 0;
  std::string refresh_token;
  std::int64_t refresh_expires_at = 0;
  std::optional<Key> gateway_signing_key;  // pinned at approval; never replaced afterwards
  std::string gateway_url;                 // the gateway this enrollment belongs to

  bool approved() const { return !device_id.empty() && gateway_signing_key.has_value(); }
};

std::string encode_enrollment(const EnrollmentState& s);
Result<EnrollmentState> decode_enrollment(std::string_view text);

// Missing file: nullopt. A file that does not unseal or parse is an error naming it.
Result<std::optional<EnrollmentState>> load_enrollment(const std::string& path,
                                                       const AgentIdentity& identity);
Status save_enrollment(const std::string& path, const AgentIdentity& identity,
                       const EnrollmentState& state);

// libsodium helpers for the wire formats.
std::string sha256_hex(std::string_view bytes);
std::string base64_standard(std::span<const std::uint8_t> bytes);
Result<std::string> base64_standard_decode(std::string_view text);
std::string random_base64url(std::size_t n);

}  // namespace portcullis::agent
