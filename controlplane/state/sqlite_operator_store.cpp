// SqliteStore's OperatorStore half: operator accounts, sessions, the audit log newest first.
// Tables: migration 2 in sqlite_store.cpp.

#include <cstring>

#include "controlplane/state/ids.h"
#include "controlplane/state/sqlite_store.h"

namespace portcullis::state {
namespace {

std::span<const std::uint8_t> bytes_of(const KeyBytes& k) { return {k.data(), k.size()}; }

Result<Role> role_column(const Query& q, int col, const std::string& what) {
  auto role = role_from_name(q.text(col));
  if (!role) return fail_errno(EUCLEAN, what + ": unknown operator role");
  return *role;
}

Result<OperatorAccount> read_account(const Query& q, const std::string& what) {
  OperatorAccount a;
  a.name = q.text(0);
  a.password_hash = q.text(1);
  auto role = role_column(q, 2, what);
  if (!role) return fail(std::move(role.error()));
  a.role = *role;
  a.created_at = q.int64(3);
  return a;
}

}  // namespace

const char* role_name(Role r) {
  switch (r) {
    case Role::kAdmin:
      return "admin";
    case Role::kOperator:
      return "operator";
    case Role::kAuditor:
      return "auditor";
  }
  return "unknown";
}

std::optional<Role> role_from_name(std::string_view name) {
  if (name == "admin") return Role::kAdmin;
  if (name == "operator") return Role::kOperator;
  if (name == "auditor") return Role::kAuditor;
  return std::nullopt;
}

Result<bool> SqliteStore::has_admin() {
  std::lock_guard lock(mu_);
  auto q = db_.query("SELECT 1 FROM operators WHERE role = 'admin' LIMIT 1", "look for an admin");
  if (!q) return fail(std::move(q.error()));
  auto row = q->step();
  if (!row) return fail(std::move(row.error()));
  return *row;
}

Status SqliteStore::insert_operator_locked(const OperatorAccount& a, const std::string& what) {
  if (a.name.empty()) return fail_invalid(what + ": the name is empty");
  if (a.password_hash.empty()) return fail_invalid(what + ": the password hash is empty");
  auto q = db_.query(
      "INSERT INTO operators (name, password_hash, role, created_at) VALUES (?, ?, ?, ?)", what);
  if (!q) return fail(std::move(q.error()));
  auto r = q->bind(1, a.name)
               .bind(2, a.password_hash)
               .bind(3, role_name(a.role))
               .bind(4, a.created_at)
               .run();
  if (!r && r.error().errno_value() == EEXIST) {
    return fail_errno(EEXIST, what + ": the name is taken");
  }
  return r;
}

Status SqliteStore::create_first_admin(const OperatorAccount& account) {
  std::lock_guard lock(mu_);
  const std::string what = "create the first admin";
  if (account.role != Role::kAdmin) return fail_invalid(what + ": the role must be admin");
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  {
    auto q = db_.query("SELECT 1 FROM operators WHERE role = 'admin' LIMIT 1", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->step();
    if (!row) return fail(std::move(row.error()));
    if (*row) return fail_errno(EEXIST, what + ": an admin already exists");
  }
  if (auto r = insert_operator_locked(account, what); !r) return r;
  return txn->commit();
}

Status SqliteStore::add_operator(const OperatorAccount& account) {
  std::lock_guard lock(mu_);
  return insert_operator_locked(account, "add operator");
}

Result<std::optional<OperatorAccount>> SqliteStore::find_operator(const std::string& name) {
  std::lock_guard lock(mu_);
  const std::string what = "find operator";
  auto q =
      db_.query("SELECT name, password_hash, role, created_at FROM operators WHERE name = ?", what);
  if (!q) return fail(std::move(q.error()));
  auto row = q->bind(1, name).step();
  if (!row) return fail(std::move(row.error()));
  if (!*row) return std::optional<OperatorAccount>();
  auto a = read_account(*q, what);
  if (!a) return fail(std::move(a.error()));
  return std::optional<OperatorAccount>(std::move(*a));
}

Result<std::vector<OperatorAccount>> SqliteStore::list_operators() {
  std::lock_guard lock(mu_);
  const std::string what = "list operators";
  auto q =
      db_.query("SELECT name, password_hash, role, created_at FROM operators ORDER BY name", what);
  if (!q) return fail(std::move(q.error()));
  std::vector<OperatorAccount> out;
  for (;;) {
    auto row = q->step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) break;
    auto a = read_account(*q, what);
    if (!a) return fail(std::move(a.error()));
    out.push_back(std::move(*a));
  }
  return out;
}

Status SqliteStore::add_session(const KeyBytes& token_hash, const OperatorSession& s,
                                Timestamp now) {
  std::lock_guard lock(mu_);
  const std::string what = "add session";
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  {
    auto q = db_.query("DELETE FROM operator_sessions WHERE expires_at <= ?", what);
    if (!q) return fail(std::move(q.error()));
    if (auto r = q->bind(1, now).run(); !r) return fail(std::move(r.error()));
  }
  auto q = db_.query(
      "INSERT INTO operator_sessions (token_hash, operator_name, csrf_hash, source, created_at, "
      "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
      what);
  if (!q) return fail(std::move(q.error()));
  if (auto r = q->bind(1, bytes_of(token_hash))
                   .bind(2, s.operator_name)
                   .bind(3, bytes_of(s.csrf_hash))
                   .bind(4, s.source)
                   .bind(5, s.created_at)
                   .bind(6, s.expires_at)
                   .run();
      !r) {
    return fail(std::move(r.error()));
  }
  return txn->commit();
}

Result<std::optional<OperatorSession>> SqliteStore::find_session(const KeyBytes& token_hash,
                                                                 Timestamp now) {
  std::lock_guard lock(mu_);
  const std::string what = "find session";
  auto q = db_.query(
      "SELECT s.operator_name, o.role, s.csrf_hash, s.source, s.created_at, s.expires_at "
      "FROM operator_sessions s JOIN operators o ON o.name = s.operator_name "
      "WHERE s.token_hash = ? AND s.expires_at > ?",
      what);
  if (!q) return fail(std::move(q.error()));
  auto row = q->bind(1, bytes_of(token_hash)).bind(2, now).step();
  if (!row) return fail(std::move(row.error()));
  if (!*row) return std::optional<OperatorSession>();
  OperatorSession s;
  s.operator_name = q->text(0);
  auto role = role_column(*q, 1, what);
  if (!role) return fail(std::move(role.error()));
  s.role = *role;
  auto csrf = q->blob(2);
  if (csrf.size() != s.csrf_hash.size()) return fail_errno(EUCLEAN, what + ": bad CSRF hash");
  std::memcpy(s.csrf_hash.data(), csrf.data(), csrf.size());
  s.source = q->text(3);
  s.created_at = q->int64(4);
  s.expires_at = q->int64(5);
  return std::optional<OperatorSession>(std::move(s));
}

Status SqliteStore::delete_session(const KeyBytes& token_hash) {
  std::lock_guard lock(mu_);
  auto q = db_.query("DELETE FROM operator_sessions WHERE token_hash = ?", "delete session");
  if (!q) return fail(std::move(q.error()));
  return q->bind(1, bytes_of(token_hash)).run();
}

Result<std::vector<AuditEvent>> SqliteStore::list_audit_newest(std::int64_t before_id, int limit) {
  std::lock_guard lock(mu_);
  if (before_id <= 0) before_id = INT64_MAX;
  return audit_page_locked(
      "SELECT id, at, actor, action, target, detail, source FROM audit WHERE id < ? "
      "ORDER BY id DESC LIMIT ?",
      before_id, limit, "list audit events, newest first");
}

}  // namespace portcullis::state
