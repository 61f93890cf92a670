#pragma once
// The daemon's desired state, in SQLite (WAL, foreign keys, busy timeout, versioned migrations).
// Every change is one transaction and bumps the generation; the reconciler turns a generation
// into kernel state and records it as applied, so "is device X live" means
// applied_generation() >= the generation of X's last change.
//
// Times are Unix seconds (int64). Secrets are never stored in clear: enrollment codes and refresh
// tokens as SHA-256, keys as public keys only (the gateway's own private keys live in 0600 files).

#include <cstdint>
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

  // Monotonic counter bumped by every committed change.
  virtual Result<std::int64_t> generation() = 0;
  virtual Result<std::int64_t> applied_generation() = 0;
  virtual Status set_applied_generation(std::int64_t g) = 0;

  // Enrollment codes: stored as SHA-256; single use; with expiry.
  virtual Status add_enrollment_code(const std::string& code, Timestamp expires_at,
                                     const std::string& created_by) = 0;
  // Marks the code used by `enrollment_id` if it exists, is unused and unexpired at `now`.
  virtual Result<bool> consume_enrollment_code(const std::string& code, Timestamp now,
                                               const std::string& enrollment_id) = 0;

  // Enrollment requests. An agent key enrolls once: a second request with the same key returns
  // the existing enrollment (idempotent), unless it was denied or its device revoked (then EPERM).
  virtual Result<Enrollment> add_enrollment(const Enrollment& e) = 0;
  virtual Result<std::optional<Enrollment>> find_enrollment(const std::string& id) = 0;
  virtual Result<std::vector<Enrollment>> list_enrollments(
      std::optional<EnrollmentStatus> only) = 0;
  // Approving creates the device (with `default_ports`) in the same transaction.
  virtual Result<Device> approve_enrollment(const std::string& id, const std::string& by,
                                            const std::vector<PortRule>& default_ports,
                                            Timestamp now) = 0;
  virtual Status deny_enrollment(const std::string& id, const std::string& by, Timestamp now) = 0;

  // Devices.
  virtual Result<std::optional<Device>> find_device(const std::string& id) = 0;
  virtual Result<std::vector<Device>> list_devices() = 0;  // all, active and revoked
  // Allocates the device's address from the pool once (lowest free host address, skipping the
  // network, gateway and broadcast addresses); later calls return the same address. ENOSPC when
  // the pool is full.
  virtual Result<IpAddress> ensure_device_address(const std::string& device_id,
                                                  const IpPrefix& pool,
                                                  const IpAddress& gateway) = 0;
  virtual Status set_device_ports(const std::string& device_id,
                                  const std::vector<PortRule>& ports) = 0;
  // Revokes the device and every refresh token of it, in one transaction.
  virtual Status revoke_device(const std::string& device_id, Timestamp now) = 0;
  virtual Status record_heartbeat(const std::string& device_id, Timestamp now,
                                  const std::string& inventory_json) = 0;

  // Refresh tokens (by SHA-256 of the token).
  virtual Status add_refresh_token(const KeyBytes& token_hash, const RefreshToken& t) = 0;
  virtual Result<std::optional<RefreshToken>> find_refresh_token(const KeyBytes& token_hash) = 0;
  virtual Status mark_refresh_token_used(const KeyBytes& token_hash) = 0;
  virtual Status revoke_token_family(const std::string& family_id) = 0;

  // Audit log, append-only.
  virtual Status audit(const AuditEvent& e) = 0;
  virtual Result<std::vector<AuditEvent>> list_audit(std::int64_t after_id, int limit) = 0;
};

}  // namespace portcullis::state
