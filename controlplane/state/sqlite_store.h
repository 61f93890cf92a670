#pragma once
// Store over one SQLite connection (sqlite3 C API). Thread-safe: calls are serialized by a mutex,
// which is what one SQLite connection needs anyway; each change is one BEGIN IMMEDIATE
// transaction. Schema and migrations: sqlite_store.cpp (kMigrations).

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "controlplane/state/fifo_mutex.h"
#include "controlplane/state/operator_store.h"
#include "controlplane/state/sqlite_db.h"
#include "controlplane/state/store.h"

namespace portcullis::state {

struct SqliteOptions {
  // NORMAL (the default): in WAL mode a commit is durable against a crash or kill -9 of the
  // daemon (the WAL write reaches the kernel before COMMIT returns) and the database stays
  // consistent after a power loss, which may roll back the last commits: no fsync per change, so
  // an ensure storm is not bound by the disk. FULL adds an fsync of the WAL on every commit, for
  // deployments where a change answered to an agent must survive power loss.
  bool synchronous_full = false;
  int busy_timeout_ms = 5000;
  // Read-only connections for lookups outside transactions (0: every read on the writer).
  int readers = 4;
};

class SqliteStore final : public Store, public OperatorStore {
 public:
  // The schema version this build writes (PRAGMA user_version after migrations).
  static int schema_version();

  static Result<std::unique_ptr<SqliteStore>> open(const std::string& path,
                                                   const SqliteOptions& options = {});

  // PRAGMA integrity_check plus foreign_key_check; EUCLEAN naming the first problem.
  Status check_integrity();

  // Concurrent callers' transactions commit together (see Member below). fn may run on another
  // caller's thread (this one waits meanwhile); it must not wait for other threads' store calls.
  Status atomically(const std::function<Status()>& fn) override;
  // Committed atomically() transactions and the COMMITs that made them durable.
  struct CommitCounts {
    std::uint64_t transactions = 0;
    std::uint64_t commits = 0;
  };
  CommitCounts commit_counts() const { return {transactions_.load(), group_commits_.load()}; }
  Result<std::int64_t> generation() override;
  Result<std::int64_t> applied_generation() override;
  Status set_applied_generation(std::int64_t g) override;

  Status add_enrollment_code(const std::string& code, Timestamp expires_at,
                             const std::string& created_by) override;
  Result<bool> consume_enrollment_code(const std::string& code, Timestamp now,
                                       const std::string& enrollment_id) override;

  Result<Enrollment> add_enrollment(const Enrollment& e) override;
  Result<std::optional<Enrollment>> find_enrollment(const std::string& id) override;
  Result<std::vector<Enrollment>> list_enrollments(std::optional<EnrollmentStatus> only) override;
  Result<Device> approve_enrollment(const std::string& id, const std::string& by,
                                    const std::vector<PortRule>& default_ports,
                                    Timestamp now) override;
  Status deny_enrollment(const std::string& id, const std::string& by, Timestamp now) override;

  Result<std::optional<Device>> find_device(const std::string& id) override;
  Result<std::vector<Device>> list_devices() override;
  Result<std::vector<Device>> list_devices_changed_after(std::int64_t generation) override;
  Result<IpAddress> ensure_device_address(const std::string& device_id, const IpPrefix& pool,
                                          const IpAddress& gateway) override;
  Status set_device_ports(const std::string& device_id,
                          const std::vector<PortRule>& ports) override;
  Status revoke_device(const std::string& device_id, Timestamp now) override;
  Status record_heartbeat(const std::string& device_id, Timestamp now,
                          const std::string& inventory_json) override;

  Status add_refresh_token(const KeyBytes& token_hash, const RefreshToken& t) override;
  Result<std::optional<RefreshToken>> find_refresh_token(const KeyBytes& token_hash) override;
  Status mark_refresh_token_used(const KeyBytes& token_hash) override;
  Status revoke_token_family(const std::string& family_id) override;

  Status audit(const AuditEvent& e) override;
  Result<std::vector<AuditEvent>> list_audit(std::int64_t after_id, int limit) override;

  // OperatorStore (sqlite_operator_store.cpp).
  Result<bool> has_admin() override;
  Status create_first_admin(const OperatorAccount& account) override;
  Status add_operator(const OperatorAccount& account) override;
  Result<std::optional<OperatorAccount>> find_operator(const std::string& name) override;
  Result<std::vector<OperatorAccount>> list_operators() override;
  Status add_session(const KeyBytes& token_hash, const OperatorSession& s, Timestamp now) override;
  Result<std::optional<OperatorSession>> find_session(const KeyBytes& token_hash,
                                                      Timestamp now) override;
  Status delete_session(const KeyBytes& token_hash) override;
  Result<std::vector<AuditEvent>> list_audit_newest(std::int64_t before_id, int limit) override;

 private:
  SqliteStore(Db db, std::string path, const SqliteOptions& options)
      : db_(std::move(db)), path_(std::move(path)), options_(options) {}

  // The *_on functions read through `db`: the writer connection (under mu_) or a reader.
  Result<std::optional<Enrollment>> find_enrollment_on(Db& db, const std::string& id);
  Result<std::optional<Device>> find_device_on(Db& db, const std::string& id);
  // Every device, or those changed after a generation.
  Result<std::vector<Device>> list_devices_on(Db& db, std::optional<std::int64_t> changed_after,
                                              const std::string& what);
  Result<std::vector<PortRule>> device_ports_on(Db& db, const std::string& id,
                                                const std::string& what);

  // Read-only connections (WAL: they read the last commit while the writer works), so that a
  // lookup outside a transaction does not queue behind other requests' commits. fn(db) runs in
  // one read snapshot; on the writer connection instead when this thread holds mu_ (inside
  // atomically(), whose uncommitted changes it must see) or when no reader could be opened.
  template <class Fn>
  auto read(const std::string& what, Fn&& fn) -> decltype(fn(std::declval<Db&>()));
  std::unique_ptr<Db> take_reader();
  void give_back(std::unique_ptr<Db> reader);
  Result<std::int64_t> bump_generation_locked(const std::string& what);
  // One page of audit events: sql selects the audit columns in order, with `?` for bound_id
  // and for the limit (1..kMaxAuditPage).
  Result<std::vector<AuditEvent>> audit_page_locked(const char* sql, std::int64_t bound_id,
                                                    int limit, const std::string& what);
  Status insert_operator_locked(const OperatorAccount& account, const std::string& what);

  // Group commit by combining. Under an ensure storm the store's lock is the serial resource,
  // and two things waste it: every request's COMMIT (with the WAL checkpoint every 1,000 pages
  // it triggers), and every hand-over of the lock to a thread that is asleep (measured: the lock
  // stood idle 36 % of the storm, about 150 us per hand-over while the CPUs were busy). So
  // atomically() callers queue, and one of them (the combiner) runs the queued callers' fns back
  // to back on its own thread, each in a savepoint (its failure stays its own), with one COMMIT
  // for the batch; then it wakes them with their outcomes. A caller returns only after its
  // batch committed (a failed COMMIT is every member's error), so nothing is reported done
  // before it is durable. Pages several members change (meta, audit's tail, index roots) reach
  // the WAL once per batch.
  struct Member {
    const std::function<Status()>* fn;
    Status status;      // fn's outcome, then the COMMIT's
    bool done = false;  // under queue_mu_
  };
  static constexpr std::size_t kMaxBatch = 32;
  // The WAL checkpoint: SQLite's automatic one (PASSIVE, on the committing connection, once the
  // WAL holds 1,000 frames) stalls the lock for about 10 ms (a 4 MB write and two fsyncs), a
  // third of the lock's time in a storm. After a batch's COMMIT it runs once the batch's
  // members are answered, not before; after any other commit at once, as SQLite would.
  static constexpr int kCheckpointFrames = 1000;
  static int on_wal_commit(void* self, sqlite3* db, const char* name, int frames);
  bool in_batch_commit_ = false;  // under mu_
  bool checkpoint_due_ = false;   // under mu_
  // Under mu_: runs the batch's fns in one transaction (a new one after SQLite abandoned one).
  void run_batch_locked(const std::vector<Member*>& batch);

  FifoMutex mu_;  // serialises every use of db_, first come first served
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Member*> queue_;                   // atomically() callers not yet run, under queue_mu_
  bool combining_ = false;                      // a caller is running batches, under queue_mu_
  std::atomic<std::uint64_t> transactions_{0};  // atomically() calls that committed
  std::atomic<std::uint64_t> group_commits_{0};  // their COMMITs
  Db db_;
  std::string path_;
  SqliteOptions options_;
  std::mutex readers_mu_;
  std::condition_variable readers_cv_;
  std::vector<std::unique_ptr<Db>> idle_readers_;
  int open_readers_ = 0;
  bool readers_failed_ = false;  // could not open one: reads stay on the writer
  // Address allocation hint: every host address of `hint_pool_` below `hint_next_` is taken (or
  // is the network / gateway address). Valid because addresses are never freed: device rows are
  // never deleted, and a revoked device keeps its address.
  struct AddressHint {
    std::uint32_t network = 0;
    int cidr = -1;  // -1: no hint
    std::uint32_t gateway = 0;
    std::uint32_t next = 0;
  };
  AddressHint hint_;
};

}  // namespace portcullis::state
