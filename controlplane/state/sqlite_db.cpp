#include "controlplane/state/sqlite_db.h"

#include <cerrno>

namespace portcullis::state {

int sqlite_errno(int rc, int system_errno) {
  switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return EEXIST;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return ENOENT;
    case SQLITE_CONSTRAINT_TRIGGER:
      return EPERM;
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return EBUSY;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
      return EINVAL;
    case SQLITE_FULL:
      return ENOSPC;
    case SQLITE_READONLY:
      return EROFS;
    case SQLITE_NOMEM:
      return ENOMEM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return EUCLEAN;
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return EACCES;
    case SQLITE_CANTOPEN:
      return system_errno != 0 ? system_errno : EACCES;
    case SQLITE_IOERR:
      return system_errno != 0 ? system_errno : EIO;
    default:
      return EIO;
  }
}

Error Db::error(int rc, std::string_view what) const {
  int sys = handle_ ? sqlite3_system_errno(handle_.get()) : 0;
  // sqlite3_errstr is the fixed description of the code ("database is locked"), never SQL text
  // or column names, so the context stays safe to show.
  return Error::from_errno(sqlite_errno(rc, sys),
                           std::string(what) + " (sqlite: " + sqlite3_errstr(rc) + ")");
}

Result<Query> Db::query(const char* sql, std::string_view what) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(handle_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    StatementPtr stmt(raw);
    if (rc != SQLITE_OK) return fail(error(sqlite3_extended_errcode(handle_.get()), what));
    it = statements_.emplace(sql, std::move(stmt)).first;
  }
  return Query(*this, it->second.get(), what);
}

Status Db::exec(const char* sql, std::string_view what) {
  int rc = sqlite3_exec(handle_.get(), sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return fail(error(sqlite3_extended_errcode(handle_.get()), what));
  return {};
}

Status Db::run(const char* sql, std::string_view what) {
  auto q = query(sql, what);
  if (!q) return fail(std::move(q.error()));
  return q->run();
}

Query::~Query() {
  if (stmt_ == nullptr) return;
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

Query& Query::bind(int i, std::int64_t v) {
  int rc = sqlite3_bind_int64(stmt_, i, v);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Query& Query::bind(int i, std::string_view text) {
  int rc = sqlite3_bind_text64(stmt_, i, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Query& Query::bind(int i, std::span<const std::uint8_t> blob) {
  // A zero-length blob would bind as NULL with a null pointer; pass a valid one.
  static const std::uint8_t kEmpty = 0;
  int rc = sqlite3_bind_blob64(stmt_, i, blob.empty() ? &kEmpty : blob.data(), blob.size(),
                               SQLITE_TRANSIENT);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Query& Query::bind_null(int i) {
  int rc = sqlite3_bind_null(stmt_, i);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Result<bool> Query::step() {
  if (bind_rc_ != SQLITE_OK) return fail(db_->error(bind_rc_, what_));
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return fail(db_->error(sqlite3_extended_errcode(db_->get()), what_));
}

Status Query::run() {
  for (;;) {
    auto row = step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return {};
  }
}

std::string Query::text(int col) const {
  const auto* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), n);
}

std::span<const std::uint8_t> Query::blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr) return {};
  return {static_cast<const std::uint8_t*>(p), static_cast<std::size_t>(n)};
}

Result<Transaction> Transaction::begin(Db& db, std::string_view what) {
  // Inside a transaction already (Store::atomically): a savepoint, released into it on commit.
  const bool nested = sqlite3_get_autocommit(db.get()) == 0;
  if (auto r = db.run(nested ? "SAVEPOINT pcl_nested" : "BEGIN IMMEDIATE", what); !r) {
    return fail(std::move(r.error()));
  }
  return Transaction(db, what, nested);
}

Transaction::~Transaction() {
  if (db_ == nullptr) return;
  // Best effort: if the statement that failed already rolled back, ROLLBACK fails harmlessly.
  if (sqlite3_get_autocommit(db_->get()) == 0) {
    sqlite3_exec(db_->get(), nested_ ? "ROLLBACK TO pcl_nested; RELEASE pcl_nested" : "ROLLBACK",
                 nullptr, nullptr, nullptr);
  }
}

Status Transaction::commit() {
  if (auto r = db_->run(nested_ ? "RELEASE pcl_nested" : "COMMIT", what_); !r) return r;
  db_ = nullptr;
  return {};
}

}  // namespace portcullis::state
