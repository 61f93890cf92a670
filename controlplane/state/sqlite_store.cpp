#include "controlplane/state/sqlite_store.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <string_view>

#include "controlplane/state/ids.h"
#include "dataplane/base/log.h"
#include "dataplane/base/unique_fd.h"

namespace portcullis::state {
namespace {

// Schema steps, applied in order; step i brings the database to user_version i + 1. Append new
// steps at the end, never edit a released one.
//
// Keys are 32-byte BLOBs, addresses IPv4 host-order INTEGERs (unique: the allocator finds the
// first gap with an index seek), times Unix seconds. `generation` on a device is the store
// generation of its last change; meta holds the store's generation and applied_generation.
// audit is append-only (triggers refuse UPDATE and DELETE).
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  generation INTEGER NOT NULL,
  applied_generation INTEGER NOT NULL
);
INSERT INTO meta (id, generation, applied_generation) VALUES (1, 0, 0);

CREATE TABLE devices (
  id TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  agent_key BLOB NOT NULL UNIQUE CHECK (length(agent_key) = 32),
  wg_key BLOB NOT NULL UNIQUE CHECK (length(wg_key) = 32),
  address INTEGER UNIQUE CHECK (address BETWEEN 0 AND 4294967295),
  status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
  inventory_json TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL DEFAULT 0,
  last_heartbeat INTEGER NOT NULL DEFAULT 0,
  generation INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE device_ports (
  device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  protocol INTEGER NOT NULL CHECK (protocol IN (6, 17)),
  port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
  PRIMARY KEY (device_id, protocol, port)
) WITHOUT ROWID;

CREATE TABLE enrollments (
  id TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  agent_key BLOB NOT NULL UNIQUE CHECK (length(agent_key) = 32),
  wg_key BLOB NOT NULL CHECK (length(wg_key) = 32),
  inventory_json TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
  by_code INTEGER NOT NULL DEFAULT 0,
  source_address TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  decided_at INTEGER NOT NULL DEFAULT 0,
  decided_by TEXT NOT NULL DEFAULT '',
  device_id TEXT REFERENCES devices (id)
) WITHOUT ROWID;
CREATE INDEX enrollments_by_status ON enrollments (status, created_at);
CREATE INDEX enrollments_by_wg_key ON enrollments (wg_key);

CREATE TABLE enrollment_codes (
  code_hash BLOB PRIMARY KEY CHECK (length(code_hash) = 32),
  created_by TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER,
  used_by TEXT REFERENCES enrollments (id)
) WITHOUT ROWID;

CREATE TABLE refresh_tokens (
  token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
  device_id TEXT NOT NULL REFERENCES devices (id),
  family_id TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  used INTEGER NOT NULL DEFAULT 0,
  revoked INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_device ON refresh_tokens (device_id);

CREATE TABLE audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  detail TEXT NOT NULL,
  source TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
)sql",
    // 2: operator accounts and sessions (operator_store.h, sqlite_operator_store.cpp).
    R"sql(
CREATE TABLE operators (
  name TEXT PRIMARY KEY,
  password_hash TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'auditor')),
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE operator_sessions (
  token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
  operator_name TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
  csrf_hash BLOB NOT NULL CHECK (length(csrf_hash) = 32),
  source TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX operator_sessions_by_expiry ON operator_sessions (expires_at);
)sql",
    // 3: the reconciler's wake passes read only the devices changed since their last pass.
    R"sql(
CREATE INDEX devices_by_generation ON devices (generation);
)sql",
};

constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));
constexpr int kMaxAuditPage = 1000;
constexpr std::string_view kByCode = "enrollment-code";

std::span<const std::uint8_t> bytes_of(const Key& k) { return {k.data(), kKeyLen}; }
std::span<const std::uint8_t> bytes_of(const KeyBytes& k) { return {k.data(), k.size()}; }

Error corrupt(const std::string& what, const std::string& why) {
  return Error::from_errno(EUCLEAN, what + ": " + why);
}

Result<Key> key_column(const Query& q, int col, const std::string& what) {
  auto k = Key::from_bytes(q.blob(col));
  if (!k) return fail(corrupt(what, "stored key is not 32 bytes"));
  return *k;
}

const char* status_text(EnrollmentStatus s) { return enrollment_status_name(s); }

Result<EnrollmentStatus> enrollment_status_from(const std::string& s, const std::string& what) {
  if (s == "pending") return EnrollmentStatus::kPending;
  if (s == "approved") return EnrollmentStatus::kApproved;
  if (s == "denied") return EnrollmentStatus::kDenied;
  return fail(corrupt(what, "unknown enrollment status"));
}

// Columns in the order of kEnrollmentColumns.
#define PCL_ENROLLMENT_COLUMNS                                                         \
  "id, hostname, agent_key, wg_key, inventory_json, status, by_code, source_address, " \
  "created_at, decided_at, decided_by, device_id"

Result<Enrollment> read_enrollment(const Query& q, const std::string& what) {
  Enrollment e;
  e.id = q.text(0);
  e.hostname = q.text(1);
  auto ak = key_column(q, 2, what);
  if (!ak) return fail(std::move(ak.error()));
  e.agent_key = *ak;
  auto wk = key_column(q, 3, what);
  if (!wk) return fail(std::move(wk.error()));
  e.wg_key = *wk;
  e.inventory_json = q.text(4);
  auto st = enrollment_status_from(q.text(5), what);
  if (!st) return fail(std::move(st.error()));
  e.status = *st;
  e.by_code = q.int64(6) != 0;
  e.source_address = q.text(7);
  e.created_at = q.int64(8);
  e.decided_at = q.int64(9);
  e.decided_by = q.text(10);
  e.device_id = q.is_null(11) ? std::string() : q.text(11);
  return e;
}

#define PCL_DEVICE_COLUMNS                                                                     \
  "id, hostname, agent_key, wg_key, address, status, inventory_json, created_at, revoked_at, " \
  "last_heartbeat, generation"

// A device row without its ports.
Result<Device> read_device(const Query& q, const std::string& what) {
  Device d;
  d.id = q.text(0);
  d.hostname = q.text(1);
  auto ak = key_column(q, 2, what);
  if (!ak) return fail(std::move(ak.error()));
  d.agent_key = *ak;
  auto wk = key_column(q, 3, what);
  if (!wk) return fail(std::move(wk.error()));
  d.wg_key = *wk;
  if (!q.is_null(4)) d.address = IpAddress::v4_host_order(static_cast<std::uint32_t>(q.int64(4)));
  auto status = q.text(5);
  if (status == "active") {
    d.status = DeviceStatus::kActive;
  } else if (status == "revoked") {
    d.status = DeviceStatus::kRevoked;
  } else {
    return fail(corrupt(what, "unknown device status"));
  }
  d.inventory_json = q.text(6);
  d.created_at = q.int64(7);
  d.revoked_at = q.int64(8);
  d.last_heartbeat = q.int64(9);
  d.generation = q.int64(10);
  return d;
}

Result<PortRule> read_port(const Query& q, int col, const std::string& what) {
  auto proto = q.int64(col);
  auto port = q.int64(col + 1);
  if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || port < 1 || port > 65535) {
    return fail(corrupt(what, "stored port rule out of range"));
  }
  return PortRule{static_cast<filter::Protocol>(proto), static_cast<std::uint16_t>(port)};
}

Result<std::vector<PortRule>> normalize_ports(std::vector<PortRule> ports,
                                              const std::string& what) {
  for (const auto& p : ports) {
    if (p.port == 0) return fail_invalid(what + ": port 0 is not a valid allowlist entry");
    if (p.protocol != filter::Protocol::kTcp && p.protocol != filter::Protocol::kUdp) {
      return fail_invalid(what + ": protocol must be tcp or udp");
    }
  }
  std::sort(ports.begin(), ports.end());
  ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
  return ports;
}

// Creates the database file 0600 if it does not exist, so SQLite never creates it with the
// umask's mode; SQLite gives the -wal and -shm files the mode of the database file.
Status create_private_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd && errno != EEXIST) return fail(Error::last_errno("create database '" + path + "'"));
  return {};
}

Result<std::int64_t> single_int(Db& db, const char* sql, const std::string& what) {
  auto q = db.query(sql, what);
  if (!q) return fail(std::move(q.error()));
  auto row = q->step();
  if (!row) return fail(std::move(row.error()));
  if (!*row) return fail(corrupt(what, "no row"));
  return q->int64(0);
}

Status migrate(Db& db, const std::string& path) {
  const std::string what = "migrate database '" + path + "'";
  auto version = single_int(db, "PRAGMA user_version", what);
  if (!version) return fail(std::move(version.error()));
  if (*version > kSchemaVersion) {
    return fail_errno(ENOTSUP, "database '" + path + "' has schema version " +
                                   std::to_string(*version) + ", newer than this portcullisd (" +
                                   std::to_string(kSchemaVersion) +
                                   "); run a newer portcullisd or restore a backup");
  }
  for (int step = static_cast<int>(*version); step < kSchemaVersion; ++step) {
    const std::string step_what = what + " to version " + std::to_string(step + 1);
    auto txn = Transaction::begin(db, step_what);
    if (!txn) return fail(std::move(txn.error()));
    // Another process may have migrated between our read and our write lock.
    auto now_version = single_int(db, "PRAGMA user_version", step_what);
    if (!now_version) return fail(std::move(now_version.error()));
    if (*now_version > step) continue;
    if (auto r = db.exec(kMigrations[step], step_what); !r) return fail(std::move(r.error()));
    const std::string set_version = "PRAGMA user_version = " + std::to_string(step + 1);
    if (auto r = db.exec(set_version.c_str(), step_what); !r) return fail(std::move(r.error()));
    if (auto r = txn->commit(); !r) return fail(std::move(r.error()));
  }
  return {};
}

}  // namespace

const char* enrollment_status_name(EnrollmentStatus s) {
  switch (s) {
    case EnrollmentStatus::kPending:
      return "pending";
    case EnrollmentStatus::kApproved:
      return "approved";
    case EnrollmentStatus::kDenied:
      return "denied";
  }
  return "unknown";
}

const char* device_status_name(DeviceStatus s) {
  return s == DeviceStatus::kActive ? "active" : "revoked";
}

Result<std::unique_ptr<Store>> Store::open(const std::string& path) {
  auto s = SqliteStore::open(path);
  if (!s) return fail(std::move(s.error()));
  return std::unique_ptr<Store>(std::move(*s));
}

int SqliteStore::schema_version() { return kSchemaVersion; }

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path,
                                                       const SqliteOptions& options) {
  if (sodium_init() < 0) return fail_errno(EIO, "initialise libsodium");
  const std::string what = "open database '" + path + "'";
  if (auto r = create_private_file(path); !r) return fail(std::move(r.error()));

  sqlite3* raw = nullptr;
  // NOMUTEX: the store's own mutex serializes every use of the connection.
  int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  Db db{SqlitePtr(raw)};
  if (rc != SQLITE_OK) return fail(db.error(rc, what));
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), options.busy_timeout_ms);

  // journal_mode answers with the mode in force; a file system without shared memory support
  // silently stays in "delete" mode, which we refuse rather than run without WAL.
  {
    auto q = db.query("PRAGMA journal_mode = WAL", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->step();
    if (!row) return fail(std::move(row.error()));
    if (!*row || q->text(0) != "wal") {
      return fail_errno(ENOTSUP, what + ": the file system does not support WAL mode");
    }
  }
  if (auto r = db.exec("PRAGMA foreign_keys = ON", what); !r) return fail(std::move(r.error()));
  const char* sync =
      options.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL";
  if (auto r = db.exec(sync, what); !r) return fail(std::move(r.error()));
  if (auto r = migrate(db, path); !r) return fail(std::move(r.error()));
  {
    FILE* f = std::fopen("/tmp/CKPT", "r");
    int v = 0;
    if (f) {
      if (std::fscanf(f, "%d", &v) == 1) sqlite3_wal_autocheckpoint(db.get(), v);
      std::fclose(f);
    }
  }

  std::unique_ptr<SqliteStore> store(new SqliteStore(std::move(db), path, options));
  // Replaces SQLite's automatic checkpoint (the same rule, one place more to run it).
  sqlite3_wal_hook(store->db_.get(), &SqliteStore::on_wal_commit, store.get());
  return store;
}

Status SqliteStore::check_integrity() {
  std::lock_guard lock(mu_);
  const std::string what = "check database integrity";
  {
    auto q = db_.query("PRAGMA integrity_check", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return fail(corrupt(what, "no result"));
    if (auto text = q->text(0); text != "ok") return fail(corrupt(what, text));
  }
  auto q = db_.query("PRAGMA foreign_key_check", what);
  if (!q) return fail(std::move(q.error()));
  auto row = q->step();
  if (!row) return fail(std::move(row.error()));
  if (*row) return fail(corrupt(what, "a row in '" + q->text(0) + "' has a dangling reference"));
  return {};
}

Result<std::int64_t> SqliteStore::bump_generation_locked(const std::string& what) {
  return single_int(db_, "UPDATE meta SET generation = generation + 1 RETURNING generation", what);
}

Status SqliteStore::atomically(const std::function<Status()>& fn) {
  if (mu_.held_by_this_thread()) {
    // Inside another store call or atomically(): a savepoint of the enclosing transaction.
    std::lock_guard lock(mu_);
    auto txn = Transaction::begin(db_, "one transaction");
    if (!txn) return fail(std::move(txn.error()));
    if (auto s = fn(); !s) return s;  // ~Transaction rolls back to the savepoint
    return txn->commit();
  }
  Member me{.fn = &fn, .status = {}};
  std::unique_lock queue(queue_mu_);
  queue_.push_back(&me);
  // Wait while another thread combines: it may run fn for us. Take over when it has left and
  // we are first in the queue.
  queue_cv_.wait(
      queue, [&] { return me.done || (!combining_ && !queue_.empty() && queue_.front() == &me); });
  if (me.done) return me.status;
  combining_ = true;
  while (!me.done) {
    const std::size_t n = std::min<std::size_t>(queue_.size(), kMaxBatch);
    std::vector<Member*> batch(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    queue.unlock();
    std::unique_lock lock(mu_);
    run_batch_locked(batch);
    queue.lock();
    for (Member* m : batch) m->done = true;
    queue.unlock();
    queue_cv_.notify_all();
    // The batch is answered; now the checkpoint its COMMIT made due (see on_wal_commit).
    if (checkpoint_due_) {
      checkpoint_due_ = false;
      sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    }
    lock.unlock();
    queue.lock();
  }
  combining_ = false;
  queue.unlock();
  queue_cv_.notify_all();
  return me.status;
}

int SqliteStore::on_wal_commit(void* self, sqlite3* db, const char*, int frames) {
  auto* store = static_cast<SqliteStore*>(self);
  if (frames < kCheckpointFrames) return SQLITE_OK;
  if (store->in_batch_commit_) {
    store->checkpoint_due_ = true;  // atomically() runs it once the batch is answered
  } else {
    sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  }
  return SQLITE_OK;
}

void SqliteStore::run_batch_locked(const std::vector<Member*>& batch) {
  std::size_t next = 0;
  while (next < batch.size()) {
    // One transaction for batch[first..next); each member's part is a savepoint of it (a
    // Transaction begun inside one), released into it or rolled back alone.
    const std::size_t first = next;
    auto txn = Transaction::begin(
        db_, "a batch of " + std::to_string(batch.size() - first) + " transaction(s)");
    if (!txn) {
      for (std::size_t i = first; i < batch.size(); ++i)
        batch[i]->status = fail(Error(txn.error()));
      return;
    }
    bool lost = false;
    for (; next < batch.size() && !lost; ++next) {
      Member& m = *batch[next];
      auto own = Transaction::begin(db_, "one transaction");
      m.status = own ? (*m.fn)() : Status(fail(std::move(own.error())));
      if (sqlite3_get_autocommit(db_.get()) != 0) {
        // SQLite ended the whole transaction itself (I/O error, disk full, ...): the changes
        // of every member before this one are gone too. The rest get a transaction of their
        // own.
        const Status gone = fail_errno(EIO, "the transaction was rolled back by SQLite");
        for (std::size_t i = first; i <= next; ++i) {
          if (batch[i]->status) batch[i]->status = gone;
        }
        lost = true;
      } else if (m.status) {
        m.status = own->commit();
      }  // else ~own rolls back to the savepoint
    }
    if (lost) continue;
    in_batch_commit_ = true;
    const Status committed = txn->commit();  // ~txn rolls back after a failed COMMIT
    in_batch_commit_ = false;
    if (committed) group_commits_.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t i = first; i < next; ++i) {
      Status& s = batch[i]->status;
      if (s && !committed) s = committed;  // a failed COMMIT is every member's error
      if (s) transactions_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

std::unique_ptr<Db> SqliteStore::take_reader() {
  std::unique_lock lock(readers_mu_);
  for (;;) {
    if (readers_failed_ || options_.readers <= 0) return nullptr;
    if (!idle_readers_.empty()) {
      auto r = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return r;
    }
    if (open_readers_ < options_.readers) break;
    readers_cv_.wait(lock);
  }
  ++open_readers_;
  lock.unlock();
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path_.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  auto db = std::make_unique<Db>(SqlitePtr(raw));
  const std::string what = "open a read connection to '" + path_ + "'";
  Status ok = rc == SQLITE_OK ? Status{} : fail(db->error(rc, what));
  if (ok) {
    sqlite3_extended_result_codes(db->get(), 1);
    sqlite3_busy_timeout(db->get(), options_.busy_timeout_ms);
    // A small page cache each: the writer's cache holds the hot pages.
    ok = db->exec("PRAGMA cache_size = -512", what);
  }
  if (!ok) {
    log_warning("database reads stay on the writer connection", {{"error", ok.error().message()}});
    std::lock_guard relock(readers_mu_);
    --open_readers_;
    readers_failed_ = true;
    readers_cv_.notify_all();
    return nullptr;
  }
  return db;
}

void SqliteStore::give_back(std::unique_ptr<Db> reader) {
  {
    std::lock_guard lock(readers_mu_);
    idle_readers_.push_back(std::move(reader));
  }
  readers_cv_.notify_one();
}

template <class Fn>
auto SqliteStore::read(const std::string& what, Fn&& fn) -> decltype(fn(std::declval<Db&>())) {
  std::unique_ptr<Db> reader;
  if (!mu_.held_by_this_thread()) reader = take_reader();
  if (!reader) {
    std::lock_guard lock(mu_);
    return fn(db_);
  }
  struct Return {
    SqliteStore& store;
    std::unique_ptr<Db>& reader;
    ~Return() { store.give_back(std::move(reader)); }
  } give_back_at_end{*this, reader};
  // One snapshot for every statement of fn (a device and its ports from the same commit).
  if (auto r = reader->exec("BEGIN", what); !r) return fail(std::move(r.error()));
  auto result = fn(*reader);
  sqlite3_exec(reader->get(), "COMMIT", nullptr, nullptr, nullptr);
  return result;
}

Result<std::int64_t> SqliteStore::generation() {
  return read("read generation", [](Db& db) {
    return single_int(db, "SELECT generation FROM meta", "read generation");
  });
}

Result<std::int64_t> SqliteStore::applied_generation() {
  return read("read applied generation", [](Db& db) {
    return single_int(db, "SELECT applied_generation FROM meta", "read applied generation");
  });
}

Status SqliteStore::set_applied_generation(std::int64_t g) {
  std::lock_guard lock(mu_);
  const std::string what = "set applied generation " + std::to_string(g);
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  auto current = single_int(db_, "SELECT generation FROM meta", what);
  if (!current) return fail(std::move(current.error()));
  if (g < 0 || g > *current) {
    return fail_invalid(what + ": must be between 0 and the store generation " +
                        std::to_string(*current));
  }
  auto q = db_.query("UPDATE meta SET applied_generation = ?", what);
  if (!q) return fail(std::move(q.error()));
  if (auto r = q->bind(1, g).run(); !r) return fail(std::move(r.error()));
  return txn->commit();
}

// ---- enrollment codes ----

Status SqliteStore::add_enrollment_code(const std::string& code, Timestamp expires_at,
                                        const std::string& created_by) {
  std::lock_guard lock(mu_);
  const std::string what = "add enrollment code";
  if (code.empty()) return fail_invalid(what + ": the code is empty");
  auto hash = sha256(code);
  auto q = db_.query(
      "INSERT INTO enrollment_codes (code_hash, created_by, expires_at) VALUES (?, ?, ?)", what);
  if (!q) return fail(std::move(q.error()));
  auto r = q->bind(1, bytes_of(hash)).bind(2, created_by).bind(3, expires_at).run();
  if (!r && r.error().errno_value() == EEXIST) {
    return fail_errno(EEXIST, what + ": the code already exists");
  }
  return r;
}

Result<bool> SqliteStore::consume_enrollment_code(const std::string& code, Timestamp now,
                                                  const std::string& enrollment_id) {
  std::lock_guard lock(mu_);
  const std::string what = "use enrollment code for enrollment '" + short_id(enrollment_id) + "'";
  auto hash = sha256(code);
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  {
    auto e = db_.query("SELECT 1 FROM enrollments WHERE id = ?", what);
    if (!e) return fail(std::move(e.error()));
    auto row = e->bind(1, enrollment_id).step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return fail_errno(ENOENT, what + ": no such enrollment");
  }
  auto q = db_.query(
      "UPDATE enrollment_codes SET used_at = ?, used_by = ? "
      "WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
      what);
  if (!q) return fail(std::move(q.error()));
  if (auto r = q->bind(1, now).bind(2, enrollment_id).bind(3, bytes_of(hash)).bind(4, now).run();
      !r) {
    return fail(std::move(r.error()));
  }
  bool used = db_.changes() == 1;
  if (auto r = txn->commit(); !r) return fail(std::move(r.error()));
  return used;
}

// ---- enrollments ----

Result<std::optional<Enrollment>> SqliteStore::find_enrollment_on(Db& db, const std::string& id) {
  const std::string what = "find enrollment '" + short_id(id) + "'";
  auto q = db.query("SELECT " PCL_ENROLLMENT_COLUMNS " FROM enrollments WHERE id = ?", what);
  if (!q) return fail(std::move(q.error()));
  auto row = q->bind(1, id).step();
  if (!row) return fail(std::move(row.error()));
  if (!*row) return std::optional<Enrollment>();
  auto e = read_enrollment(*q, what);
  if (!e) return fail(std::move(e.error()));
  return std::optional<Enrollment>(std::move(*e));
}

Result<Enrollment> SqliteStore::add_enrollment(const Enrollment& e) {
  std::lock_guard lock(mu_);
  const std::string what = "add enrollment for agent key '" + e.agent_key.short_name() + "'";
  if (e.agent_key.is_zero()) return fail_invalid(what + ": the agent key is missing");
  if (e.wg_key.is_zero()) return fail_invalid(what + ": the WireGuard key is missing");
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));

  // Idempotent by agent key.
  {
    auto q =
        db_.query("SELECT " PCL_ENROLLMENT_COLUMNS " FROM enrollments WHERE agent_key = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, bytes_of(e.agent_key)).step();
    if (!row) return fail(std::move(row.error()));
    if (*row) {
      auto existing = read_enrollment(*q, what);
      if (!existing) return fail(std::move(existing.error()));
      if (existing->status == EnrollmentStatus::kDenied) {
        return fail_errno(EPERM, what + ": the enrollment of this agent was denied");
      }
      if (existing->status == EnrollmentStatus::kApproved) {
        auto d = db_.query("SELECT status FROM devices WHERE id = ?", what);
        if (!d) return fail(std::move(d.error()));
        auto drow = d->bind(1, existing->device_id).step();
        if (!drow) return fail(std::move(drow.error()));
        if (*drow && d->text(0) == "revoked") {
          return fail_errno(EPERM, what + ": the device of this agent was revoked");
        }
      }
      return std::move(*existing);
    }
  }
  // A WireGuard key belongs to one agent.
  {
    auto q = db_.query(
        "SELECT 1 FROM enrollments WHERE wg_key = ?1 UNION ALL "
        "SELECT 1 FROM devices WHERE wg_key = ?1 LIMIT 1",
        what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, bytes_of(e.wg_key)).step();
    if (!row) return fail(std::move(row.error()));
    if (*row) return fail_errno(EEXIST, what + ": the WireGuard key is used by another agent");
  }

  Enrollment stored = e;
  if (stored.id.empty()) stored.id = random_id();
  stored.status = EnrollmentStatus::kPending;
  stored.by_code = false;
  stored.decided_at = 0;
  stored.decided_by.clear();
  stored.device_id.clear();
  if (stored.inventory_json.empty()) stored.inventory_json = "{}";
  auto q = db_.query(
      "INSERT INTO enrollments (id, hostname, agent_key, wg_key, inventory_json, status, "
      "source_address, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
      what);
  if (!q) return fail(std::move(q.error()));
  auto r = q->bind(1, stored.id)
               .bind(2, stored.hostname)
               .bind(3, bytes_of(stored.agent_key))
               .bind(4, bytes_of(stored.wg_key))
               .bind(5, stored.inventory_json)
               .bind(6, stored.source_address)
               .bind(7, stored.created_at)
               .run();
  if (!r) return fail(std::move(r.error()));
  if (auto c = txn->commit(); !c) return fail(std::move(c.error()));
  return stored;
}

Result<std::optional<Enrollment>> SqliteStore::find_enrollment(const std::string& id) {
  return read("find enrollment", [&](Db& db) { return find_enrollment_on(db, id); });
}

Result<std::vector<Enrollment>> SqliteStore::list_enrollments(
    std::optional<EnrollmentStatus> only) {
  std::lock_guard lock(mu_);
  const std::string what = "list enrollments";
  auto q =
      only ? db_.query("SELECT " PCL_ENROLLMENT_COLUMNS
                       " FROM enrollments WHERE status = ? ORDER BY created_at, id",
                       what)
           : db_.query("SELECT " PCL_ENROLLMENT_COLUMNS " FROM enrollments ORDER BY created_at, id",
                       what);
  if (!q) return fail(std::move(q.error()));
  if (only) q->bind(1, std::string_view(status_text(*only)));
  std::vector<Enrollment> out;
  for (;;) {
    auto row = q->step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) break;
    auto e = read_enrollment(*q, what);
    if (!e) return fail(std::move(e.error()));
    out.push_back(std::move(*e));
  }
  return out;
}

Result<Device> SqliteStore::approve_enrollment(const std::string& id, const std::string& by,
                                               const std::vector<PortRule>& default_ports,
                                               Timestamp now) {
  std::lock_guard lock(mu_);
  const std::string what = "approve enrollment '" + short_id(id) + "'";
  auto ports = normalize_ports(default_ports, what);
  if (!ports) return fail(std::move(ports.error()));
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));

  auto e = find_enrollment_on(db_, id);
  if (!e) return fail(std::move(e.error()));
  if (!*e) return fail_errno(ENOENT, what + ": no such enrollment");
  if ((*e)->status == EnrollmentStatus::kDenied) {
    return fail_errno(EPERM, what + ": the enrollment was denied");
  }
  if ((*e)->status == EnrollmentStatus::kApproved) {
    // Idempotent: the device it created.
    auto d = find_device_on(db_, (*e)->device_id);
    if (!d) return fail(std::move(d.error()));
    if (!*d) return fail(corrupt(what, "approved enrollment without its device"));
    return std::move(**d);
  }
  {
    auto q = db_.query("SELECT id FROM devices WHERE wg_key = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, bytes_of((*e)->wg_key)).step();
    if (!row) return fail(std::move(row.error()));
    if (*row) {
      return fail_errno(
          EEXIST, what + ": its WireGuard key is used by device '" + short_id(q->text(0)) + "'");
    }
  }

  auto gen = bump_generation_locked(what);
  if (!gen) return fail(std::move(gen.error()));
  Device d;
  d.id = random_id();
  d.hostname = (*e)->hostname;
  d.agent_key = (*e)->agent_key;
  d.wg_key = (*e)->wg_key;
  d.ports = std::move(*ports);
  d.status = DeviceStatus::kActive;
  d.inventory_json = (*e)->inventory_json;
  d.created_at = now;
  d.generation = *gen;
  {
    auto q = db_.query(
        "INSERT INTO devices (id, hostname, agent_key, wg_key, status, inventory_json, "
        "created_at, generation) VALUES (?, ?, ?, ?, 'active', ?, ?, ?)",
        what);
    if (!q) return fail(std::move(q.error()));
    auto r = q->bind(1, d.id)
                 .bind(2, d.hostname)
                 .bind(3, bytes_of(d.agent_key))
                 .bind(4, bytes_of(d.wg_key))
                 .bind(5, d.inventory_json)
                 .bind(6, now)
                 .bind(7, d.generation)
                 .run();
    if (!r) return fail(std::move(r.error()));
  }
  for (const auto& p : d.ports) {
    auto q =
        db_.query("INSERT INTO device_ports (device_id, protocol, port) VALUES (?, ?, ?)", what);
    if (!q) return fail(std::move(q.error()));
    auto r = q->bind(1, d.id)
                 .bind(2, static_cast<std::int64_t>(p.protocol))
                 .bind(3, static_cast<std::int64_t>(p.port))
                 .run();
    if (!r) return fail(std::move(r.error()));
  }
  {
    auto q = db_.query(
        "UPDATE enrollments SET status = 'approved', by_code = ?, decided_at = ?, "
        "decided_by = ?, device_id = ? WHERE id = ?",
        what);
    if (!q) return fail(std::move(q.error()));
    auto r = q->bind(1, std::int64_t{by == kByCode})
                 .bind(2, now)
                 .bind(3, by)
                 .bind(4, d.id)
                 .bind(5, id)
                 .run();
    if (!r) return fail(std::move(r.error()));
  }
  if (auto c = txn->commit(); !c) return fail(std::move(c.error()));
  return d;
}

Status SqliteStore::deny_enrollment(const std::string& id, const std::string& by, Timestamp now) {
  std::lock_guard lock(mu_);
  const std::string what = "deny enrollment '" + short_id(id) + "'";
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  auto e = find_enrollment_on(db_, id);
  if (!e) return fail(std::move(e.error()));
  if (!*e) return fail_errno(ENOENT, what + ": no such enrollment");
  if ((*e)->status == EnrollmentStatus::kDenied) return {};
  if ((*e)->status == EnrollmentStatus::kApproved) {
    return fail_errno(EEXIST, what + ": it is already approved; revoke its device instead");
  }
  auto q = db_.query(
      "UPDATE enrollments SET status = 'denied', decided_at = ?, decided_by = ? WHERE id = ?",
      what);
  if (!q) return fail(std::move(q.error()));
  if (auto r = q->bind(1, now).bind(2, by).bind(3, id).run(); !r) return fail(std::move(r.error()));
  return txn->commit();
}

// ---- devices ----

Result<std::vector<PortRule>> SqliteStore::device_ports_on(Db& db, const std::string& id,
                                                           const std::string& what) {
  auto q = db.query(
      "SELECT protocol, port FROM device_ports WHERE device_id = ? ORDER BY protocol, port", what);
  if (!q) return fail(std::move(q.error()));
  q->bind(1, id);
  std::vector<PortRule> out;
  for (;;) {
    auto row = q->step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) break;
    auto p = read_port(*q, 0, what);
    if (!p) return fail(std::move(p.error()));
    out.push_back(*p);
  }
  return out;
}

Result<std::optional<Device>> SqliteStore::find_device_on(Db& db, const std::string& id) {
  const std::string what = "find device '" + short_id(id) + "'";
  Device d;
  {
    auto q = db.query("SELECT " PCL_DEVICE_COLUMNS " FROM devices WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, id).step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return std::optional<Device>();
    auto read = read_device(*q, what);
    if (!read) return fail(std::move(read.error()));
    d = std::move(*read);
  }
  auto ports = device_ports_on(db, id, what);
  if (!ports) return fail(std::move(ports.error()));
  d.ports = std::move(*ports);
  return std::optional<Device>(std::move(d));
}

Result<std::optional<Device>> SqliteStore::find_device(const std::string& id) {
  return read("find device", [&](Db& db) { return find_device_on(db, id); });
}

Result<std::vector<Device>> SqliteStore::list_devices() {
  return read("list devices",
              [&](Db& db) { return list_devices_on(db, std::nullopt, "list devices"); });
}

Result<std::vector<Device>> SqliteStore::list_devices_changed_after(std::int64_t generation) {
  const std::string what = "list devices changed after generation " + std::to_string(generation);
  return read(what, [&](Db& db) { return list_devices_on(db, generation, what); });
}

Result<std::vector<Device>> SqliteStore::list_devices_on(Db& db,
                                                         std::optional<std::int64_t> changed_after,
                                                         const std::string& what) {
  // Without a generation, `generation > -1` holds for every row.
  const std::int64_t after = changed_after.value_or(-1);
  std::vector<Device> out;
  {
    auto q = db.query("SELECT " PCL_DEVICE_COLUMNS " FROM devices WHERE generation > ? ORDER BY id",
                      what);
    if (!q) return fail(std::move(q.error()));
    q->bind(1, after);
    for (;;) {
      auto row = q->step();
      if (!row) return fail(std::move(row.error()));
      if (!*row) break;
      auto d = read_device(*q, what);
      if (!d) return fail(std::move(d.error()));
      out.push_back(std::move(*d));
    }
  }
  auto q = db.query(changed_after ? "SELECT p.device_id, p.protocol, p.port FROM device_ports p "
                                    "JOIN devices d ON d.id = p.device_id WHERE d.generation > ? "
                                    "ORDER BY p.device_id, p.protocol, p.port"
                                  : "SELECT device_id, protocol, port FROM device_ports "
                                    "ORDER BY device_id, protocol, port",
                    what);
  if (!q) return fail(std::move(q.error()));
  if (changed_after) q->bind(1, after);
  // Both lists are ordered by device id: merge.
  std::size_t i = 0;
  for (;;) {
    auto row = q->step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) break;
    auto device_id = q->text(0);
    while (i < out.size() && out[i].id < device_id) ++i;
    if (i == out.size() || out[i].id != device_id) {
      return fail(corrupt(what, "port rule of an unknown device"));
    }
    auto p = read_port(*q, 1, what);
    if (!p) return fail(std::move(p.error()));
    out[i].ports.push_back(*p);
  }
  return out;
}

Result<IpAddress> SqliteStore::ensure_device_address(const std::string& device_id,
                                                     const IpPrefix& pool,
                                                     const IpAddress& gateway) {
  std::lock_guard lock(mu_);
  const std::string what = "allocate an address for device '" + short_id(device_id) + "'";
  if (pool.family() != AF_INET || !gateway.is_v4()) {
    return fail_invalid(what + ": the pool and gateway must be IPv4");
  }
  if (!pool.contains(gateway)) {
    return fail_invalid(what + ": gateway " + gateway.to_string() + " is outside pool " +
                        pool.to_string());
  }
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  {
    auto q = db_.query("SELECT status, address FROM devices WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, device_id).step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return fail_errno(ENOENT, what + ": no such device");
    if (q->text(0) != "active") return fail_errno(EPERM, what + ": the device is revoked");
    // Stable: an allocated address is returned as is, even if the pool changed since.
    if (!q->is_null(1)) {
      return IpAddress::v4_host_order(static_cast<std::uint32_t>(q->int64(1)));
    }
  }

  const std::uint32_t network = pool.masked().address().v4_host_order();
  const int cidr = pool.cidr();
  const std::uint32_t host_mask = cidr == 0 ? 0xffffffffu : (1u << (32 - cidr)) - 1;
  const std::uint32_t broadcast = network | host_mask;
  const std::uint32_t gw = gateway.v4_host_order();
  if (host_mask < 3) return fail_errno(ENOSPC, what + ": pool " + pool.to_string() + " is full");
  const std::uint64_t first = std::uint64_t{network} + 1;
  const std::uint64_t last = std::uint64_t{broadcast} - 1;

  std::uint64_t candidate = first;
  if (hint_.cidr == cidr && hint_.network == network && hint_.gateway == gw) {
    candidate = std::max<std::uint64_t>(candidate, hint_.next);
  }
  // Lowest free address at or above `candidate`: one index seek finds the next taken address;
  // if it is the candidate itself, a second seek finds the end of the run of taken addresses.
  for (;;) {
    if (candidate == gw) ++candidate;
    if (candidate > last) {
      return fail_errno(ENOSPC, what + ": pool " + pool.to_string() + " is full");
    }
    auto q =
        db_.query("SELECT address FROM devices WHERE address >= ? ORDER BY address LIMIT 1", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, static_cast<std::int64_t>(candidate)).step();
    if (!row) return fail(std::move(row.error()));
    if (!*row || static_cast<std::uint64_t>(q->int64(0)) != candidate) break;
    auto run = db_.query(
        "SELECT d.address + 1 FROM devices d WHERE d.address >= ? AND NOT EXISTS "
        "(SELECT 1 FROM devices n WHERE n.address = d.address + 1) ORDER BY d.address LIMIT 1",
        what);
    if (!run) return fail(std::move(run.error()));
    auto run_row = run->bind(1, static_cast<std::int64_t>(candidate)).step();
    if (!run_row) return fail(std::move(run_row.error()));
    if (!*run_row) return fail(corrupt(what, "address run without an end"));
    candidate = static_cast<std::uint64_t>(run->int64(0));
  }

  auto gen = bump_generation_locked(what);
  if (!gen) return fail(std::move(gen.error()));
  {
    auto q = db_.query("UPDATE devices SET address = ?, generation = ? WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto r =
        q->bind(1, static_cast<std::int64_t>(candidate)).bind(2, *gen).bind(3, device_id).run();
    if (!r) return fail(std::move(r.error()));
  }
  if (auto c = txn->commit(); !c) return fail(std::move(c.error()));
  hint_ = AddressHint{network, cidr, gw, static_cast<std::uint32_t>(candidate + 1)};
  return IpAddress::v4_host_order(static_cast<std::uint32_t>(candidate));
}

Status SqliteStore::set_device_ports(const std::string& device_id,
                                     const std::vector<PortRule>& ports) {
  std::lock_guard lock(mu_);
  const std::string what = "set ports of device '" + short_id(device_id) + "'";
  auto wanted = normalize_ports(ports, what);
  if (!wanted) return fail(std::move(wanted.error()));
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  {
    auto q = db_.query("SELECT status FROM devices WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, device_id).step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return fail_errno(ENOENT, what + ": no such device");
    if (q->text(0) != "active") return fail_errno(EPERM, what + ": the device is revoked");
  }
  auto current = device_ports_on(db_, device_id, what);
  if (!current) return fail(std::move(current.error()));
  if (*current == *wanted) return {};  // unchanged: no new generation

  auto gen = bump_generation_locked(what);
  if (!gen) return fail(std::move(gen.error()));
  {
    auto q = db_.query("DELETE FROM device_ports WHERE device_id = ?", what);
    if (!q) return fail(std::move(q.error()));
    if (auto r = q->bind(1, device_id).run(); !r) return fail(std::move(r.error()));
  }
  for (const auto& p : *wanted) {
    auto q =
        db_.query("INSERT INTO device_ports (device_id, protocol, port) VALUES (?, ?, ?)", what);
    if (!q) return fail(std::move(q.error()));
    auto r = q->bind(1, device_id)
                 .bind(2, static_cast<std::int64_t>(p.protocol))
                 .bind(3, static_cast<std::int64_t>(p.port))
                 .run();
    if (!r) return fail(std::move(r.error()));
  }
  {
    auto q = db_.query("UPDATE devices SET generation = ? WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    if (auto r = q->bind(1, *gen).bind(2, device_id).run(); !r) return fail(std::move(r.error()));
  }
  return txn->commit();
}

Status SqliteStore::revoke_device(const std::string& device_id, Timestamp now) {
  std::lock_guard lock(mu_);
  const std::string what = "revoke device '" + short_id(device_id) + "'";
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  {
    auto q = db_.query("SELECT status FROM devices WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, device_id).step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return fail_errno(ENOENT, what + ": no such device");
    if (q->text(0) == "revoked") return {};  // already revoked: nothing changes
  }
  auto gen = bump_generation_locked(what);
  if (!gen) return fail(std::move(gen.error()));
  {
    auto q = db_.query(
        "UPDATE devices SET status = 'revoked', revoked_at = ?, generation = ? WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    if (auto r = q->bind(1, now).bind(2, *gen).bind(3, device_id).run(); !r) {
      return fail(std::move(r.error()));
    }
  }
  {
    auto q = db_.query("UPDATE refresh_tokens SET revoked = 1 WHERE device_id = ?", what);
    if (!q) return fail(std::move(q.error()));
    if (auto r = q->bind(1, device_id).run(); !r) return fail(std::move(r.error()));
  }
  return txn->commit();
}

Status SqliteStore::record_heartbeat(const std::string& device_id, Timestamp now,
                                     const std::string& inventory_json) {
  std::lock_guard lock(mu_);
  const std::string what = "record heartbeat of device '" + short_id(device_id) + "'";
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  {
    auto q = db_.query("SELECT status FROM devices WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, device_id).step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return fail_errno(ENOENT, what + ": no such device");
    if (q->text(0) != "active") return fail_errno(EPERM, what + ": the device is revoked");
  }
  auto q =
      inventory_json.empty()
          ? db_.query("UPDATE devices SET last_heartbeat = ?1 WHERE id = ?2", what)
          : db_.query("UPDATE devices SET last_heartbeat = ?1, inventory_json = ?3 WHERE id = ?2",
                      what);
  if (!q) return fail(std::move(q.error()));
  q->bind(1, now).bind(2, device_id);
  if (!inventory_json.empty()) q->bind(3, inventory_json);
  if (auto r = q->run(); !r) return fail(std::move(r.error()));
  return txn->commit();
}

// ---- refresh tokens ----

Status SqliteStore::add_refresh_token(const KeyBytes& token_hash, const RefreshToken& t) {
  std::lock_guard lock(mu_);
  const std::string what = "add refresh token for device '" + short_id(t.device_id) + "'";
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  {
    auto q = db_.query("SELECT status FROM devices WHERE id = ?", what);
    if (!q) return fail(std::move(q.error()));
    auto row = q->bind(1, t.device_id).step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) return fail_errno(ENOENT, what + ": no such device");
    if (q->text(0) != "active") return fail_errno(EPERM, what + ": the device is revoked");
  }
  auto q = db_.query(
      "INSERT INTO refresh_tokens (token_hash, device_id, family_id, expires_at, used, revoked) "
      "VALUES (?, ?, ?, ?, ?, ?)",
      what);
  if (!q) return fail(std::move(q.error()));
  auto r = q->bind(1, bytes_of(token_hash))
               .bind(2, t.device_id)
               .bind(3, t.family_id)
               .bind(4, t.expires_at)
               .bind(5, std::int64_t{t.used})
               .bind(6, std::int64_t{t.revoked})
               .run();
  if (!r) {
    if (r.error().errno_value() == EEXIST) {
      return fail_errno(EEXIST, what + ": the token already exists");
    }
    return fail(std::move(r.error()));
  }
  return txn->commit();
}

Result<std::optional<RefreshToken>> SqliteStore::find_refresh_token(const KeyBytes& token_hash) {
  std::lock_guard lock(mu_);
  const std::string what = "find refresh token";
  auto q = db_.query(
      "SELECT device_id, family_id, expires_at, used, revoked FROM refresh_tokens "
      "WHERE token_hash = ?",
      what);
  if (!q) return fail(std::move(q.error()));
  auto row = q->bind(1, bytes_of(token_hash)).step();
  if (!row) return fail(std::move(row.error()));
  if (!*row) return std::optional<RefreshToken>();
  RefreshToken t;
  t.device_id = q->text(0);
  t.family_id = q->text(1);
  t.expires_at = q->int64(2);
  t.used = q->int64(3) != 0;
  t.revoked = q->int64(4) != 0;
  return std::optional<RefreshToken>(std::move(t));
}

Status SqliteStore::mark_refresh_token_used(const KeyBytes& token_hash) {
  std::lock_guard lock(mu_);
  const std::string what = "mark refresh token used";
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  auto q = db_.query("UPDATE refresh_tokens SET used = 1 WHERE token_hash = ? AND used = 0", what);
  if (!q) return fail(std::move(q.error()));
  if (auto r = q->bind(1, bytes_of(token_hash)).run(); !r) return fail(std::move(r.error()));
  if (db_.changes() == 0) {
    auto e = db_.query("SELECT 1 FROM refresh_tokens WHERE token_hash = ?", what);
    if (!e) return fail(std::move(e.error()));
    auto row = e->bind(1, bytes_of(token_hash)).step();
    if (!row) return fail(std::move(row.error()));
    return *row ? fail_errno(EALREADY, what + ": the token was already used")
                : fail_errno(ENOENT, what + ": no such token");
  }
  return txn->commit();
}

Status SqliteStore::revoke_token_family(const std::string& family_id) {
  std::lock_guard lock(mu_);
  const std::string what = "revoke refresh token family '" + short_id(family_id) + "'";
  auto txn = Transaction::begin(db_, what);
  if (!txn) return fail(std::move(txn.error()));
  auto q = db_.query("UPDATE refresh_tokens SET revoked = 1 WHERE family_id = ?", what);
  if (!q) return fail(std::move(q.error()));
  if (auto r = q->bind(1, family_id).run(); !r) return fail(std::move(r.error()));
  if (db_.changes() == 0) return fail_errno(ENOENT, what + ": no such family");
  return txn->commit();
}

// ---- audit ----

Status SqliteStore::audit(const AuditEvent& e) {
  std::lock_guard lock(mu_);
  const std::string what = "append audit event '" + e.action + "'";
  if (e.action.empty()) return fail_invalid(what + ": the action is empty");
  auto q = db_.query(
      "INSERT INTO audit (at, actor, action, target, detail, source) VALUES (?, ?, ?, ?, ?, ?)",
      what);
  if (!q) return fail(std::move(q.error()));
  return q->bind(1, e.at)
      .bind(2, e.actor)
      .bind(3, e.action)
      .bind(4, e.target)
      .bind(5, e.detail)
      .bind(6, e.source)
      .run();
}

Result<std::vector<AuditEvent>> SqliteStore::list_audit(std::int64_t after_id, int limit) {
  std::lock_guard lock(mu_);
  return audit_page_locked(
      "SELECT id, at, actor, action, target, detail, source FROM audit WHERE id > ? "
      "ORDER BY id LIMIT ?",
      after_id, limit, "list audit events");
}

Result<std::vector<AuditEvent>> SqliteStore::audit_page_locked(const char* sql,
                                                               std::int64_t bound_id, int limit,
                                                               const std::string& what) {
  if (limit < 1 || limit > kMaxAuditPage) {
    return fail_invalid(what + ": limit must be from 1 to " + std::to_string(kMaxAuditPage));
  }
  auto q = db_.query(sql, what);
  if (!q) return fail(std::move(q.error()));
  q->bind(1, bound_id).bind(2, std::int64_t{limit});
  std::vector<AuditEvent> out;
  for (;;) {
    auto row = q->step();
    if (!row) return fail(std::move(row.error()));
    if (!*row) break;
    AuditEvent e;
    e.id = q->int64(0);
    e.at = q->int64(1);
    e.actor = q->text(2);
    e.action = q->text(3);
    e.target = q->text(4);
    e.detail = q->text(5);
    e.source = q->text(6);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace portcullis::state
