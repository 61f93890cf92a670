#pragma once
// The daemon's desired state, in SQLite (WAL, foreign keys, busy timeout, versioned migrations).
// Every change is one transaction and bumps the generation; the reconciler turns a generation
// into kernel state and records it as applied, so "is device X live" means
// applied_generation() >= the generation of X's last change.
//
// Times are Unix seconds (int64). Secrets are never stored in clear: enrollment codes and refresh
// tokens as SHA-256, keys as public keys only (the gateway's own private keys live in 0600 files).
//
// The generation counts changes of what the reconciler programs: approving (a new device),
// allocating an address, changing a device's ports, revoking. Each such call that changes
// something is one transaction and exactly one generation. Calls that change nothing (ensure of
// an allocated address, the same ports again, revoking a revoked device) keep the generation.
// Enrollment requests and denials, codes, tokens, heartbeats and audit events are stored in
// their own transactions without a new generation: they program nothing, and the reconciler's
// own audit events must not wake it again.
//
// Errors (errno of Error::code()), so callers can answer without parsing text:
//   ENOENT  the id / token / code's enrollment does not exist
//   EEXIST  conflicts with a stored row (a WireGuard key in use, denying an approved enrollment)
//   EPERM   refused by the row's state (a denied enrollment, a revoked device)
//   EALREADY a refresh token already marked used
//   ENOSPC  the address pool is full
//   EINVAL  a bad argument (zero key, port 0, IPv6 pool, limit out of range)
//   EBUSY   the database stayed locked past the busy timeout
//   EUCLEAN the database is corrupt or not a Portcullis database; ENOTSUP: newer schema
// Contexts name the operation and a short id ("revoke device 'k5vq3m7x…'") and never contain SQL.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/base/ip.h"
#include "dataplane/base/key.h"
#include "dataplane/base/result.h"
#include "dataplane/filter/packet_filter.h"

namespace portcullis::state {

using Timestamp = std::int64_t;  // Unix seconds

struct PortRule {
  filter::Protocol protocol = filter::Protocol::kTcp;
  std::uint16_t port = 0;
  auto operator<=>(const PortRule&) const = default;
};

enum class EnrollmentStatus { kPending, kApproved, kDenied };
const char* enrollment_status_name(EnrollmentStatus s);  // "pending", "approved", "denied"

struct Enrollment {
  std::string id;  // random, URL-safe
  std::string hostname;
  Key agent_key;  // Ed25519 public key of the agent's identity
  Key wg_key;     // the agent's WireGuard public key
  std::string inventory_json;
  EnrollmentStatus status = EnrollmentStatus::kPending;
  bool by_code = false;  // approved by an enrollment code rather than an operator
  std::string source_address;
  Timestamp created_at = 0;
  Timestamp decided_at = 0;
  std::string decided_by;  // operator name or "enrollment-code"
  std::string device_id;   // set once approved
};

enum class DeviceStatus { kActive, kRevoked };
const char* device_status_name(DeviceStatus s);  // "active", "revoked"

struct Device {
  std::string id;  // random, URL-safe; the agent's identity at the API
  std::string hostname;
  Key agent_key;
  Key wg_key;
  std::optional<IpAddress> address;  // the tunnel /32, allocated once by vpn/ensure
  std::vector<PortRule> ports;       // the allowlist, sorted
  DeviceStatus status = DeviceStatus::kActive;
  std::string inventory_json;
  Timestamp created_at = 0;
  Timestamp revoked_at = 0;
  Timestamp last_heartbeat = 0;
  std::int64_t generation = 0;  // the store generation of this device's last change
};

struct AuditEvent {
  std::int64_t id = 0;
  Timestamp at = 0;
  std::string actor;   // "operator:alice", "agent:<device id>", "reconciler", "admin-socket"
  std::string action;  // "device.revoke", "enrollment.approve", "drift.repair", …
  std::string target;  // device or enrollment id
  std::string detail;  // short, never a secret
  std::string source;  // remote address, or "local"
};

// A refresh token row; the token itself is never stored, only its SHA-256.
struct RefreshToken {
  std::string device_id;
  std::string family_id;
  Timestamp expires_at = 0;
  bool used = false;
  bool revoked = false;
};

class Store {
 public:
  // Opens (creating if missing) the database at path, applies pending migrations in order, each in
  // a transaction, and sets WAL, foreign_keys=ON and busy_timeout. The file is created 0600.
  static Result<std::unique_ptr<Store>> open(const std::string& path);
  virtual ~Store() = default;

  // Runs fn as one transaction: the store calls fn makes on this thread commit together when fn
  // succeeds, and none of them does when it fails (its error is returned). Other threads' store
  // calls wait until it ends. Cuts the commits (and lock hand-overs) of a request that changes
  // several things, e.g. an enrollment approved by code and its audit rows. A store may commit
  // the transactions of concurrent callers together (SqliteStore does: group commit); it returns
  // only once this caller's changes are committed.
  virtual Status atomically(const std::function<Status()>& fn) = 0;

  // Monotonic counter bumped by every committed change.
  virtual Result<std::int64_t> generation() = 0;
  virtual Result<std::int64_t> applied_generation() = 0;
  virtual Status set_applied_generation(std::int64_t g) = 0;

  // Enrollment codes: stored as SHA-256; single use; with expiry.
  virtual Status add_enrollment_code(const std::string& code, Timestamp expires_at,
                                     const std::string& created_by) = 0;
  // Marks the code used by `enrollment_id` if it exists, is unused and unexpired at `now`
  // (valid while now < expires_at). false: no such code, used, or expired; ENOENT: no such
  // enrollment.
  virtual Result<bool> consume_enrollment_code(const std::string& code, Timestamp now,
                                               const std::string& enrollment_id) = 0;

  // Enrollment requests. An agent key enrolls once: a second request with the same key returns
  // the existing enrollment (idempotent), unless it was denied or its device revoked (then EPERM).
  // A new enrollment is stored pending with e.id (a random id if empty); EEXIST if its WireGuard
  // key belongs to another enrollment or device.
  virtual Result<Enrollment> add_enrollment(const Enrollment& e) = 0;
  virtual Result<std::optional<Enrollment>> find_enrollment(const std::string& id) = 0;
  virtual Result<std::vector<Enrollment>> list_enrollments(
      std::optional<EnrollmentStatus> only) = 0;
  // Approving creates the device (with `default_ports`, sorted and deduplicated) in the same
  // transaction. `by` == "enrollment-code" marks the enrollment by_code. Approving an approved
  // enrollment returns its device unchanged; a denied one is EPERM.
  virtual Result<Device> approve_enrollment(const std::string& id, const std::string& by,
                                            const std::vector<PortRule>& default_ports,
                                            Timestamp now) = 0;
  // Denying a denied enrollment is a no-op; an approved one is EEXIST (revoke its device).
  virtual Status deny_enrollment(const std::string& id, const std::string& by, Timestamp now) = 0;

  // Devices.
  virtual Result<std::optional<Device>> find_device(const std::string& id) = 0;
  virtual Result<std::vector<Device>> list_devices() = 0;  // all, active and revoked, in id order
  // The devices whose last change came after store generation `generation` (Device::generation
  // > generation), in id order: what a reconciler that applied `generation` has not seen.
  virtual Result<std::vector<Device>> list_devices_changed_after(std::int64_t generation) = 0;
  // Allocates the device's address from the pool once (lowest free host address, skipping the
  // network, gateway and broadcast addresses); later calls return the same address, even if the
  // pool changed since. ENOSPC when the pool is full, EPERM for a revoked device. Addresses are
  // never freed: device rows are never deleted and a revoked device keeps its address, so an
  // address is never handed to a second device (a /16 holds 65,533 devices over its life).
  virtual Result<IpAddress> ensure_device_address(const std::string& device_id,
                                                  const IpPrefix& pool,
                                                  const IpAddress& gateway) = 0;
  // Replaces the allowlist (sorted, deduplicated); EPERM for a revoked device.
  virtual Status set_device_ports(const std::string& device_id,
                                  const std::vector<PortRule>& ports) = 0;
  // Revokes the device and every refresh token of it, in one transaction. Idempotent.
  virtual Status revoke_device(const std::string& device_id, Timestamp now) = 0;
  // An empty inventory keeps the stored one. EPERM for a revoked device.
  virtual Status record_heartbeat(const std::string& device_id, Timestamp now,
                                  const std::string& inventory_json) = 0;

  // Refresh tokens (by SHA-256 of the token).
  // EPERM if the device is revoked.
  virtual Status add_refresh_token(const KeyBytes& token_hash, const RefreshToken& t) = 0;
  virtual Result<std::optional<RefreshToken>> find_refresh_token(const KeyBytes& token_hash) = 0;
  // Atomic test-and-set: of two concurrent calls for one token, one succeeds and the other gets
  // EALREADY (reuse).
  virtual Status mark_refresh_token_used(const KeyBytes& token_hash) = 0;
  // ENOENT if no token has this family.
  virtual Status revoke_token_family(const std::string& family_id) = 0;

  // Audit log, append-only (the database refuses UPDATE and DELETE). Pages in id order:
  // list_audit(0, n), then list_audit(last id seen, n); limit from 1 to 1000.
  virtual Status audit(const AuditEvent& e) = 0;
  virtual Result<std::vector<AuditEvent>> list_audit(std::int64_t after_id, int limit) = 0;
};

}  // namespace portcullis::state
