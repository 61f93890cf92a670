#pragma once
// What the operator API keeps beside the desired state: operator accounts, login sessions, and
// the audit log read newest first. SqliteStore implements it next to Store (schema version 2).
//
// Secrets are never stored in clear: passwords as Argon2id strings (libsodium crypto_pwhash_str,
// which carry their own salt and cost), session tokens and CSRF tokens as SHA-256.
//
// Errors (errno of Error::code()), as in store.h:
//   EEXIST  the user name is taken; or an admin already exists (create_first_admin)
//   EINVAL  a bad argument (empty name, limit out of range)

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "controlplane/state/store.h"
#include "dataplane/base/key.h"
#include "dataplane/base/result.h"

namespace portcullis::state {

// admin: everything, user management included; operator: devices, enrollments and tunnels;
// auditor: read-only.
enum class Role { kAdmin, kOperator, kAuditor };
const char* role_name(Role r);  // "admin", "operator", "auditor"
std::optional<Role> role_from_name(std::string_view name);

struct OperatorAccount {
  std::string name;
  std::string password_hash;  // crypto_pwhash_str output ("$argon2id$v=19$...")
  Role role = Role::kOperator;
  Timestamp created_at = 0;
};

struct OperatorSession {
  std::string operator_name;
  Role role = Role::kOperator;  // the account's role when read (a role change applies at once)
  KeyBytes csrf_hash{};         // SHA-256 of the CSRF token bound to this session
  std::string source;           // remote address at login
  Timestamp created_at = 0;
  Timestamp expires_at = 0;
};

class OperatorStore {
 public:
  virtual ~OperatorStore() = default;

  virtual Result<bool> has_admin() = 0;
  // Creates the first admin in one transaction that checks that no admin exists (two concurrent
  // set-ups: one wins, the other gets EEXIST).
  virtual Status create_first_admin(const OperatorAccount& account) = 0;
  // EEXIST if the name is taken.
  virtual Status add_operator(const OperatorAccount& account) = 0;
  virtual Result<std::optional<OperatorAccount>> find_operator(const std::string& name) = 0;
  virtual Result<std::vector<OperatorAccount>> list_operators() = 0;  // by name

  // Stores a session under the SHA-256 of its token; deletes sessions expired at `now` in the
  // same transaction (so the table holds live sessions only).
  virtual Status add_session(const KeyBytes& token_hash, const OperatorSession& s,
                             Timestamp now) = 0;
  // The live session (expires_at > now) joined with its account; nothing if unknown or expired.
  virtual Result<std::optional<OperatorSession>> find_session(const KeyBytes& token_hash,
                                                              Timestamp now) = 0;
  // Idempotent.
  virtual Status delete_session(const KeyBytes& token_hash) = 0;

  // Audit events with id < before_id (0: from the newest), newest first; limit from 1 to 1000.
  virtual Result<std::vector<AuditEvent>> list_audit_newest(std::int64_t before_id, int limit) = 0;
};

}  // namespace portcullis::state
