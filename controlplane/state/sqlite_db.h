#pragma once
// Thin RAII layer over the sqlite3 C API, private to controlplane/state: one owner for the
// connection (Db), cached prepared statements, a Query that resets its statement when it goes out
// of scope, and a Transaction that rolls back unless committed. SQLite result codes become Error
// values with errno codes (see sqlite_error); the SQL text never enters an error message.

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dataplane/base/result.h"

namespace portcullis::state {

// errno for an SQLite (extended) result code:
//   BUSY, LOCKED -> EBUSY; CONSTRAINT_UNIQUE / PRIMARYKEY -> EEXIST; CONSTRAINT_FOREIGNKEY ->
//   ENOENT; CONSTRAINT_TRIGGER -> EPERM; other constraints -> EINVAL; FULL -> ENOSPC;
//   READONLY -> EROFS; NOMEM -> ENOMEM; CORRUPT, NOTADB -> EUCLEAN; CANTOPEN, IOERR -> the
//   system errno if SQLite recorded one, else EACCES / EIO; anything else -> EIO.
int sqlite_errno(int rc, int system_errno);

struct SqliteClose {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct SqliteFinalize {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using SqlitePtr = std::unique_ptr<sqlite3, SqliteClose>;
using StatementPtr = std::unique_ptr<sqlite3_stmt, SqliteFinalize>;

class Db;

// A cached statement in use: bind, step, read columns. Resets and clears bindings when destroyed
// so the statement releases its read snapshot and can be reused.
class Query {
 public:
  Query(Db& db, sqlite3_stmt* stmt, std::string_view what) : db_(&db), stmt_(stmt), what_(what) {}
  Query(Query&& o) noexcept
      : db_(o.db_), stmt_(o.stmt_), what_(std::move(o.what_)), bind_rc_(o.bind_rc_) {
    o.stmt_ = nullptr;
  }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  Query& operator=(Query&&) = delete;
  ~Query();

  // Parameters are 1-based, in the order of the `?` in the SQL.
  Query& bind(int i, std::int64_t v);
  Query& bind(int i, std::string_view text);
  Query& bind(int i, std::span<const std::uint8_t> blob);
  Query& bind_null(int i);

  // true: a row is ready; false: done.
  Result<bool> step();
  // Steps to completion, expecting no row.
  Status run();

  std::int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string text(int col) const;
  std::span<const std::uint8_t> blob(int col) const;

 private:
  Db* db_;
  sqlite3_stmt* stmt_;
  std::string what_;
  int bind_rc_ = SQLITE_OK;
};

class Db {
 public:
  Db() = default;
  explicit Db(SqlitePtr handle) : handle_(std::move(handle)) {}

  sqlite3* get() const { return handle_.get(); }

  // A prepared statement for `sql`, compiled once and cached for the connection's life. `what`
  // names the operation for error contexts ("revoke device 'ab12cd34…'").
  Result<Query> query(const char* sql, std::string_view what);
  // One or more statements without parameters or results (schema steps, pragmas).
  Status exec(const char* sql, std::string_view what);
  // One statement without parameters or results, through the statement cache (the savepoints
  // and commits of every transaction).
  Status run(const char* sql, std::string_view what);

  // Rows changed by the last INSERT / UPDATE / DELETE.
  std::int64_t changes() const { return sqlite3_changes64(handle_.get()); }
  // Error for the connection's last failure, with `rc` as the result code.
  Error error(int rc, std::string_view what) const;

 private:
  SqlitePtr handle_;
  std::unordered_map<const char*, StatementPtr> statements_;  // keyed by the SQL literal
};

// BEGIN IMMEDIATE on construction (takes the write lock at once, so a transaction never fails
// half-way on a lock upgrade); ROLLBACK in the destructor unless commit() succeeded.
// BEGIN IMMEDIATE ... COMMIT; inside an open transaction a savepoint instead, so that a store
// call made within SqliteStore::atomically() joins the outer transaction and its failure undoes
// only its own part. Rolled back when destroyed uncommitted.
class Transaction {
 public:
  static Result<Transaction> begin(Db& db, std::string_view what);
  Transaction(Transaction&& o) noexcept
      : db_(o.db_), what_(std::move(o.what_)), nested_(o.nested_) {
    o.db_ = nullptr;
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();

  Status commit();

 private:
  Transaction(Db& db, std::string_view what, bool nested)
      : db_(&db), what_(what), nested_(nested) {}
  Db* db_;
  std::string what_;
  bool nested_;
};

}  // namespace portcullis::state
