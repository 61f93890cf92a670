#include "controlplane/state/sqlite_store.h"

#include <signal.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "controlplane/state/ids.h"
#include "tests/support/temp_dir.h"

namespace portcullis::state {
namespace {

using filter::Protocol;
using portcullis::testing::TempDir;

Key test_key(std::uint8_t seed, std::uint8_t kind) {
  KeyBytes b{};
  b.fill(seed);
  b[0] = kind;
  b[31] = static_cast<std::uint8_t>(seed ^ 0x5a);
  return Key(b);
}

Enrollment enrollment(std::uint8_t n) {
  Enrollment e;
  e.hostname = "host-" + std::to_string(n);
  e.agent_key = test_key(n, 1);
  e.wg_key = test_key(n, 2);
  e.inventory_json = R"({"os":"windows"})";
  e.source_address = "192.0.2.1";
  e.created_at = 1000 + n;
  return e;
}

// Sorted, as the store returns port lists.
const std::vector<PortRule> kDefaultPorts = {
    {Protocol::kTcp, 5985}, {Protocol::kTcp, 5986}, {Protocol::kUdp, 3478}};

IpPrefix pool(const char* text) { return *IpPrefix::parse(text); }
IpAddress ip(const char* text) { return *IpAddress::parse(text); }

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = SqliteStore::open(path_);
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
  }

  void reopen() {
    store_.reset();
    auto s = SqliteStore::open(path_);
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
  }

  // Enrolls and approves agent n; returns the device.
  Device approved(std::uint8_t n) {
    auto e = store_->add_enrollment(enrollment(n));
    EXPECT_TRUE(e) << e.error().message();
    auto d = store_->approve_enrollment(e->id, "operator:alice", kDefaultPorts, 2000);
    EXPECT_TRUE(d) << d.error().message();
    return *d;
  }

  std::int64_t gen() { return *store_->generation(); }

  TempDir dir_{"pcl-state"};
  std::string path_ = dir_.file("portcullis.db");
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(SqliteStoreTest, FreshDatabaseIsMigratedAndEmpty) {
  EXPECT_EQ(gen(), 0);
  EXPECT_EQ(*store_->applied_generation(), 0);
  EXPECT_TRUE(store_->list_devices()->empty());
  EXPECT_TRUE(store_->list_enrollments(std::nullopt)->empty());
  EXPECT_TRUE(store_->check_integrity()) << store_->check_integrity().error().message();
  EXPECT_GE(SqliteStore::schema_version(), 1);
  store_.reset();
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  SqlitePtr db(raw);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db.get(), "PRAGMA user_version", -1, &st, nullptr), SQLITE_OK);
  StatementPtr stmt(st);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), SqliteStore::schema_version());
  ASSERT_EQ(sqlite3_prepare_v2(db.get(), "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  stmt.reset(st);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
}

TEST_F(SqliteStoreTest, FileIsPrivate) {
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // WAL and shared-memory files take the database file's mode.
  approved(1);
  for (const char* suffix : {"-wal", "-shm"}) {
    auto p = path_ + suffix;
    ASSERT_EQ(::stat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << p;
  }
}

TEST_F(SqliteStoreTest, OpenViaStoreInterface) {
  store_.reset();
  auto s = Store::open(path_);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(*(*s)->generation(), 0);
}

TEST_F(SqliteStoreTest, ReopenKeepsData) {
  auto d = approved(1);
  auto addr = store_->ensure_device_address(d.id, pool("10.255.0.0/16"), ip("10.255.0.1"));
  ASSERT_TRUE(addr);
  ASSERT_TRUE(store_->audit({0, 5, "operator:alice", "device.approve", d.id, "", "local"}));
  ASSERT_TRUE(store_->set_applied_generation(gen()));
  reopen();
  auto again = store_->find_device(d.id);
  ASSERT_TRUE(again && *again);
  EXPECT_EQ((*again)->address, *addr);
  EXPECT_EQ((*again)->ports, kDefaultPorts);
  EXPECT_EQ(gen(), 2);
  EXPECT_EQ(*store_->applied_generation(), 2);
  EXPECT_EQ(store_->list_audit(0, 10)->size(), 1u);
}

TEST_F(SqliteStoreTest, NewerSchemaIsRefused) {
  store_.reset();
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    SqlitePtr db(raw);
    std::string sql = "PRAGMA user_version = " + std::to_string(SqliteStore::schema_version() + 1);
    ASSERT_EQ(sqlite3_exec(db.get(), sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  }
  auto s = SqliteStore::open(path_);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errno_value(), ENOTSUP);
  EXPECT_NE(s.error().message().find("newer than this portcullisd"), std::string::npos)
      << s.error().message();
}

TEST_F(SqliteStoreTest, NotADatabaseIsRefused) {
  store_.reset();
  auto other = dir_.file("junk.db");
  {
    FILE* f = std::fopen(other.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("this is not an SQLite database, just text long enough to look like a header\n", f);
    std::fclose(f);
  }
  auto s = SqliteStore::open(other);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errno_value(), EUCLEAN) << s.error().message();
}

TEST_F(SqliteStoreTest, MissingDirectoryIsAnError) {
  auto s = SqliteStore::open(dir_.file("no/such/dir/portcullis.db"));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errno_value(), ENOENT) << s.error().message();
}

TEST_F(SqliteStoreTest, AppliedGenerationRoundTrip) {
  approved(1);
  approved(2);
  EXPECT_EQ(gen(), 2);
  ASSERT_TRUE(store_->set_applied_generation(1));
  EXPECT_EQ(*store_->applied_generation(), 1);
  ASSERT_TRUE(store_->set_applied_generation(2));
  EXPECT_EQ(*store_->applied_generation(), 2);
  EXPECT_EQ(store_->set_applied_generation(3).error().errno_value(), EINVAL);
  EXPECT_EQ(store_->set_applied_generation(-1).error().errno_value(), EINVAL);
  EXPECT_EQ(gen(), 2) << "setting applied_generation is not a change";
}

// ---- enrollment codes ----

TEST_F(SqliteStoreTest, AtomicallyCommitsEveryCallOrNone) {
  const std::int64_t audits = static_cast<std::int64_t>(store_->list_audit(0, 100)->size());
  AuditEvent e{0, 1, "test", "code.create", "CODE-1", "", "local"};
  // fn fails after two changes: neither stays.
  Status s = store_->atomically([&]() -> Status {
    if (auto r = store_->add_enrollment_code("CODE-1", 5000, "test"); !r) return r;
    if (auto r = store_->audit(e); !r) return r;
    return fail_errno(EIO, "later step");
  });
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errno_value(), EIO);
  EXPECT_EQ(static_cast<std::int64_t>(store_->list_audit(0, 100)->size()), audits);
  auto e1 = store_->add_enrollment(enrollment(1));
  ASSERT_TRUE(e1);
  EXPECT_FALSE(*store_->consume_enrollment_code("CODE-1", 10, e1->id)) << "rolled back";

  // A store call that fails inside undoes its own part; fn decides what the whole does.
  s = store_->atomically([&]() -> Status {
    if (auto r = store_->add_enrollment_code("CODE-2", 5000, "test"); !r) return r;
    EXPECT_FALSE(store_->add_enrollment_code("", 5000, "test"));  // refused: EINVAL
    return store_->audit(e);
  });
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(static_cast<std::int64_t>(store_->list_audit(0, 100)->size()), audits + 1);
  EXPECT_TRUE(*store_->consume_enrollment_code("CODE-2", 10, e1->id));

  // Other threads' calls wait for it to end, and see all of it or nothing.
  std::atomic<bool> inside{false};
  std::thread other;
  s = store_->atomically([&]() -> Status {
    if (auto r = store_->add_enrollment_code("CODE-3", 5000, "test"); !r) return r;
    other = std::thread([&] {
      // Blocks until the transaction below has committed.
      auto e2 = store_->add_enrollment(enrollment(2));
      EXPECT_FALSE(inside.load()) << "ran inside another thread's transaction";
      EXPECT_TRUE(e2 && *store_->consume_enrollment_code("CODE-3", 10, e2->id));
    });
    inside = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    inside = false;
    return {};
  });
  ASSERT_TRUE(s);
  other.join();
}

TEST_F(SqliteStoreTest, ReadsOutsideATransactionSeeTheLastCommitWithoutWaiting) {
  auto d = approved(1);
  std::atomic<bool> checked{false};
  std::thread reader;
  Status s = store_->atomically([&]() -> Status {
    if (auto r = store_->set_device_ports(d.id, {{Protocol::kTcp, 22}}); !r) return r;
    // Inside: the writer connection, which sees the uncommitted change.
    auto inside = store_->find_device(d.id);
    EXPECT_EQ((*inside)->ports, (std::vector<PortRule>{{Protocol::kTcp, 22}}));
    // Another thread reads at once (a read connection), the last committed version.
    reader = std::thread([&] {
      auto seen = store_->find_device(d.id);
      ASSERT_TRUE(seen && *seen);
      EXPECT_EQ((*seen)->ports, kDefaultPorts);
      checked = true;
    });
    for (int i = 0; i < 200 && !checked; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(checked.load()) << "the read waited for the transaction";
    return {};
  });
  ASSERT_TRUE(s);
  reader.join();
  EXPECT_EQ((*store_->find_device(d.id))->ports, (std::vector<PortRule>{{Protocol::kTcp, 22}}));
}

// Group commit: callers of atomically() that queue behind one another share a COMMIT, each
// answers only after it, and each one's failure stays its own. The first caller holds the lock
// until the others are asleep on it (started one by one, 30 ms apart, so the queue order is
// known).
class GroupCommitTest : public SqliteStoreTest {
 protected:
  // Runs first() inside atomically() on this thread while `queued` start one after another on
  // threads of their own; returns the statuses: [0] for first, then one per queued caller.
  std::vector<Status> run_queued(const std::function<Status()>& first,
                                 const std::vector<std::function<Status()>>& queued) {
    std::vector<Status> out(queued.size() + 1);
    std::vector<std::thread> threads;
    out[0] = store_->atomically([&]() -> Status {
      for (std::size_t i = 0; i < queued.size(); ++i) {
        threads.emplace_back([&, i] { out[i + 1] = queued[i](); });
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
      }
      return first();
    });
    for (auto& t : threads) t.join();
    return out;
  }
  Status add_code(const std::string& code) {
    return store_->atomically([&] { return store_->add_enrollment_code(code, 5000, "test"); });
  }
  bool code_stored(const std::string& code) {
    auto e = store_->add_enrollment(enrollment(static_cast<std::uint8_t>(100 + codes_checked_++)));
    EXPECT_TRUE(e) << e.error().message();
    return e && *store_->consume_enrollment_code(code, 10, e->id);
  }
  int codes_checked_ = 0;
};

TEST_F(GroupCommitTest, QueuedTransactionsCommitTogetherAndAreDurable) {
  const auto before = store_->commit_counts();
  std::vector<std::function<Status()>> queued;
  for (int i = 1; i <= 6; ++i) {
    queued.push_back([this, i] { return add_code("GROUP-" + std::to_string(i)); });
  }
  auto statuses =
      run_queued([this] { return store_->add_enrollment_code("GROUP-0", 5000, "t"); }, queued);
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    EXPECT_TRUE(statuses[i]) << i << ": " << statuses[i].error().message();
  }
  const auto after = store_->commit_counts();
  EXPECT_EQ(after.transactions - before.transactions, 7u);
  // The first ran alone (nobody was queued when it began); the six queued behind it are one
  // batch with one COMMIT.
  EXPECT_EQ(after.commits - before.commits, 2u) << "the six queued callers did not share";

  reopen();  // durable: another connection (a fresh store) sees all seven
  for (int i = 0; i <= 6; ++i) EXPECT_TRUE(code_stored("GROUP-" + std::to_string(i))) << i;
}

TEST_F(GroupCommitTest, AFailingMemberRollsBackOnlyItsOwnChanges) {
  auto statuses =
      run_queued([this] { return store_->add_enrollment_code("KEEP-0", 5000, "t"); },
                 {[this] { return add_code("KEEP-1"); },
                  [this] {
                    return store_->atomically([&]() -> Status {
                      if (auto r = store_->add_enrollment_code("DROP-2", 5000, "t"); !r) {
                        return r;
                      }
                      return fail_errno(EIO, "a later step of this request");
                    });
                  },
                  [this] { return add_code("KEEP-3"); }});
  EXPECT_TRUE(statuses[0] && statuses[1] && statuses[3]);
  ASSERT_FALSE(statuses[2]);
  EXPECT_EQ(statuses[2].error().errno_value(), EIO);
  reopen();
  EXPECT_TRUE(code_stored("KEEP-0"));
  EXPECT_TRUE(code_stored("KEEP-1"));
  EXPECT_FALSE(code_stored("DROP-2")) << "the failed member's change was committed";
  EXPECT_TRUE(code_stored("KEEP-3"));
}

TEST_F(GroupCommitTest, AStoreCallOutsideAtomicallyIsNeverPartOfABatch) {
  const auto before = store_->commit_counts();
  // Queue: a caller of atomically(), a plain store call, another caller of atomically().
  auto statuses = run_queued([this] { return store_->add_enrollment_code("G-0", 5000, "t"); },
                             {[this] { return add_code("G-1"); },
                              [this] { return store_->add_enrollment_code("PLAIN", 5000, "t"); },
                              [this] { return add_code("G-3"); }});
  for (const auto& s : statuses) EXPECT_TRUE(s) << s.error().message();
  const auto after = store_->commit_counts();
  EXPECT_EQ(after.transactions - before.transactions, 3u);
  // G-0 alone; the plain call has a transaction of its own (it waited on the lock, first in
  // line); G-1 and G-3 are one batch.
  EXPECT_EQ(after.commits - before.commits, 2u);
  reopen();
  for (const char* code : {"G-0", "G-1", "PLAIN", "G-3"}) EXPECT_TRUE(code_stored(code)) << code;
}

TEST_F(GroupCommitTest, ABatchRunsNestedAtomicallyAndStoreCallsOfItsMembers) {
  auto d = approved(1);
  auto statuses = run_queued(
      [this] { return store_->add_enrollment_code("N-0", 5000, "t"); },
      {[&] {
         return store_->atomically([&]() -> Status {
           // Runs on the combiner's thread: store calls and a nested atomically() inside it
           // must see this member's own uncommitted change.
           if (auto r = store_->set_device_ports(d.id, {{Protocol::kTcp, 22}}); !r) return r;
           auto seen = store_->find_device(d.id);
           if (!seen || !*seen) return fail_errno(EIO, "device not found");
           EXPECT_EQ((*seen)->ports, (std::vector<PortRule>{{Protocol::kTcp, 22}}));
           return store_->atomically([&] { return store_->add_enrollment_code("N-1", 5000, "t"); });
         });
       },
       [this] { return add_code("N-2"); }});
  for (const auto& s : statuses) EXPECT_TRUE(s) << s.error().message();
  reopen();
  EXPECT_EQ((*store_->find_device(d.id))->ports, (std::vector<PortRule>{{Protocol::kTcp, 22}}));
  for (const char* code : {"N-0", "N-1", "N-2"}) EXPECT_TRUE(code_stored(code)) << code;
}

// The store runs the WAL checkpoints itself (after a batch is answered, or at once after a
// plain store call): without them the WAL would grow by every page written.
TEST_F(GroupCommitTest, CheckpointsKeepTheWalBounded) {
  const std::string detail(6000, 'x');  // two overflow pages per audit row
  auto write_many = [&](bool batched) {
    for (int i = 0; i < 1500; ++i) {
      AuditEvent e{0, 1, "test", "wal.fill", std::to_string(i), detail, "local"};
      Status s = batched ? store_->atomically([&] { return store_->audit(e); }) : store_->audit(e);
      ASSERT_TRUE(s) << s.error().message();
    }
  };
  const auto wal_bytes = [&] { return std::filesystem::file_size(path_ + "-wal"); };
  // About 4,500 frames (18 MB) each way; a checkpoint every 1,000 lets the WAL start over.
  write_many(true);
  EXPECT_LT(wal_bytes(), 8u << 20) << "atomically(): the WAL was not checkpointed";
  write_many(false);
  EXPECT_LT(wal_bytes(), 8u << 20) << "plain store calls: the WAL was not checkpointed";
}

TEST_F(SqliteStoreTest, EnrollmentCodeIsSingleUse) {
  ASSERT_TRUE(store_->add_enrollment_code("ABCD-EFGH", 5000, "operator:alice"));
  auto e1 = store_->add_enrollment(enrollment(1));
  auto e2 = store_->add_enrollment(enrollment(2));
  ASSERT_TRUE(e1 && e2);
  EXPECT_EQ(store_->consume_enrollment_code("ABCD-EFGH", 4000, e1->id), true);
  EXPECT_EQ(store_->consume_enrollment_code("ABCD-EFGH", 4000, e2->id), false);
  EXPECT_EQ(store_->consume_enrollment_code("ABCD-EFGH", 4000, e1->id), false);
  EXPECT_EQ(store_->consume_enrollment_code("WRONG", 4000, e2->id), false);
  EXPECT_EQ(gen(), 0) << "codes are not desired kernel state";
}

TEST_F(SqliteStoreTest, EnrollmentCodeExpires) {
  ASSERT_TRUE(store_->add_enrollment_code("CODE", 5000, "operator:alice"));
  auto e = store_->add_enrollment(enrollment(1));
  ASSERT_TRUE(e);
  EXPECT_EQ(store_->consume_enrollment_code("CODE", 5000, e->id), false) << "expired at 5000";
  EXPECT_EQ(store_->consume_enrollment_code("CODE", 4999, e->id), true);
}

TEST_F(SqliteStoreTest, EnrollmentCodeErrors) {
  EXPECT_EQ(store_->add_enrollment_code("", 5000, "x").error().errno_value(), EINVAL);
  ASSERT_TRUE(store_->add_enrollment_code("CODE", 5000, "x"));
  auto dup = store_->add_enrollment_code("CODE", 6000, "y");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().errno_value(), EEXIST);
  EXPECT_EQ(dup.error().message().find("CODE"), std::string::npos) << "never echo a secret";
  auto r = store_->consume_enrollment_code("CODE", 1, "no-such-enrollment");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ENOENT);
}

TEST_F(SqliteStoreTest, EnrollmentCodeStoredOnlyAsHash) {
  ASSERT_TRUE(store_->add_enrollment_code("SECRET-CODE-1234", 5000, "x"));
  store_.reset();
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  SqlitePtr db(raw);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(
      sqlite3_prepare_v2(db.get(), "SELECT code_hash FROM enrollment_codes", -1, &st, nullptr),
      SQLITE_OK);
  StatementPtr stmt(st);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  auto expected = sha256("SECRET-CODE-1234");
  ASSERT_EQ(sqlite3_column_bytes(st, 0), 32);
  EXPECT_EQ(std::memcmp(sqlite3_column_blob(st, 0), expected.data(), 32), 0);
}

// ---- enrollments ----

TEST_F(SqliteStoreTest, AddEnrollmentStoresPending) {
  auto in = enrollment(1);
  in.status = EnrollmentStatus::kApproved;  // ignored: a new enrollment is pending
  auto e = store_->add_enrollment(in);
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->id.size(), 26u);
  EXPECT_EQ(e->status, EnrollmentStatus::kPending);
  auto found = store_->find_enrollment(e->id);
  ASSERT_TRUE(found && *found);
  EXPECT_EQ((*found)->hostname, "host-1");
  EXPECT_EQ((*found)->agent_key, in.agent_key);
  EXPECT_EQ((*found)->wg_key, in.wg_key);
  EXPECT_EQ((*found)->inventory_json, in.inventory_json);
  EXPECT_EQ((*found)->source_address, "192.0.2.1");
  EXPECT_EQ((*found)->created_at, 1001);
  EXPECT_TRUE((*found)->device_id.empty());
  EXPECT_FALSE(*store_->find_enrollment("nope"));
  EXPECT_EQ(gen(), 0);
}

TEST_F(SqliteStoreTest, AddEnrollmentIsIdempotentByAgentKey) {
  auto first = store_->add_enrollment(enrollment(1));
  ASSERT_TRUE(first);
  auto again_in = enrollment(1);
  again_in.hostname = "renamed";
  auto again = store_->add_enrollment(again_in);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->id, first->id);
  EXPECT_EQ(again->hostname, "host-1") << "the existing enrollment, unchanged";
  EXPECT_EQ(store_->list_enrollments(std::nullopt)->size(), 1u);

  // Approved: still returns it.
  ASSERT_TRUE(store_->approve_enrollment(first->id, "operator:alice", kDefaultPorts, 2000));
  auto approved_again = store_->add_enrollment(enrollment(1));
  ASSERT_TRUE(approved_again);
  EXPECT_EQ(approved_again->status, EnrollmentStatus::kApproved);
  EXPECT_FALSE(approved_again->device_id.empty());
}

TEST_F(SqliteStoreTest, AddEnrollmentRefusedAfterDenyOrRevoke) {
  auto e1 = store_->add_enrollment(enrollment(1));
  ASSERT_TRUE(store_->deny_enrollment(e1->id, "operator:alice", 3000));
  EXPECT_EQ(store_->add_enrollment(enrollment(1)).error().errno_value(), EPERM);

  auto d = approved(2);
  ASSERT_TRUE(store_->revoke_device(d.id, 3000));
  EXPECT_EQ(store_->add_enrollment(enrollment(2)).error().errno_value(), EPERM);
}

TEST_F(SqliteStoreTest, AddEnrollmentRejectsReusedWireguardKeyAndZeroKeys) {
  ASSERT_TRUE(store_->add_enrollment(enrollment(1)));
  auto other = enrollment(2);
  other.wg_key = enrollment(1).wg_key;
  EXPECT_EQ(store_->add_enrollment(other).error().errno_value(), EEXIST);
  auto zero = enrollment(3);
  zero.agent_key = Key();
  EXPECT_EQ(store_->add_enrollment(zero).error().errno_value(), EINVAL);
  zero = enrollment(3);
  zero.wg_key = Key();
  EXPECT_EQ(store_->add_enrollment(zero).error().errno_value(), EINVAL);
}

TEST_F(SqliteStoreTest, ListEnrollmentsFilters) {
  auto e1 = store_->add_enrollment(enrollment(1));
  auto e2 = store_->add_enrollment(enrollment(2));
  auto e3 = store_->add_enrollment(enrollment(3));
  ASSERT_TRUE(store_->approve_enrollment(e2->id, "operator:alice", {}, 2000));
  ASSERT_TRUE(store_->deny_enrollment(e3->id, "operator:alice", 2000));
  auto all = store_->list_enrollments(std::nullopt);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].id, e1->id) << "ordered by creation";
  auto pending = store_->list_enrollments(EnrollmentStatus::kPending);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].id, e1->id);
  EXPECT_EQ(store_->list_enrollments(EnrollmentStatus::kApproved)->at(0).id, e2->id);
  EXPECT_EQ(store_->list_enrollments(EnrollmentStatus::kDenied)->at(0).id, e3->id);
}

TEST_F(SqliteStoreTest, ApproveCreatesDeviceWithDefaultPortsInOneChange) {
  auto e = store_->add_enrollment(enrollment(1));
  auto d = store_->approve_enrollment(
      e->id, "enrollment-code",
      {{Protocol::kTcp, 5985}, {Protocol::kTcp, 5985}, {Protocol::kUdp, 3478}}, 2000);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(gen(), 1);
  EXPECT_EQ(d->generation, 1);
  EXPECT_EQ(d->status, DeviceStatus::kActive);
  EXPECT_EQ(d->hostname, "host-1");
  EXPECT_EQ(d->agent_key, enrollment(1).agent_key);
  EXPECT_EQ(d->created_at, 2000);
  EXPECT_FALSE(d->address);
  std::vector<PortRule> want = {{Protocol::kTcp, 5985}, {Protocol::kUdp, 3478}};
  EXPECT_EQ(d->ports, want) << "sorted, duplicates merged";

  auto found = store_->find_device(d->id);
  ASSERT_TRUE(found && *found);
  EXPECT_EQ((*found)->ports, want);
  EXPECT_EQ((*found)->inventory_json, enrollment(1).inventory_json);
  auto en = store_->find_enrollment(e->id);
  EXPECT_EQ((*en)->status, EnrollmentStatus::kApproved);
  EXPECT_EQ((*en)->device_id, d->id);
  EXPECT_TRUE((*en)->by_code);
  EXPECT_EQ((*en)->decided_by, "enrollment-code");
  EXPECT_EQ((*en)->decided_at, 2000);

  // Approving again returns the same device without a change.
  auto again = store_->approve_enrollment(e->id, "operator:bob", {}, 3000);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, d->id);
  EXPECT_EQ(gen(), 1);
}

TEST_F(SqliteStoreTest, ApproveErrors) {
  EXPECT_EQ(store_->approve_enrollment("nope", "x", {}, 1).error().errno_value(), ENOENT);
  auto e = store_->add_enrollment(enrollment(1));
  EXPECT_EQ(store_->approve_enrollment(e->id, "x", {{Protocol::kTcp, 0}}, 1).error().errno_value(),
            EINVAL);
  ASSERT_TRUE(store_->deny_enrollment(e->id, "x", 1));
  EXPECT_EQ(store_->approve_enrollment(e->id, "x", {}, 1).error().errno_value(), EPERM);
  EXPECT_EQ(gen(), 0);
  EXPECT_TRUE(store_->list_devices()->empty()) << "a failed approval leaves nothing behind";
}

TEST_F(SqliteStoreTest, DenyErrors) {
  EXPECT_EQ(store_->deny_enrollment("nope", "x", 1).error().errno_value(), ENOENT);
  auto d = approved(1);
  auto e = store_->add_enrollment(enrollment(1));
  EXPECT_EQ(store_->deny_enrollment(e->id, "x", 1).error().errno_value(), EEXIST);
  auto e2 = store_->add_enrollment(enrollment(2));
  ASSERT_TRUE(store_->deny_enrollment(e2->id, "operator:alice", 7));
  EXPECT_TRUE(store_->deny_enrollment(e2->id, "operator:alice", 8)) << "idempotent";
  auto found = store_->find_enrollment(e2->id);
  EXPECT_EQ((*found)->status, EnrollmentStatus::kDenied);
  EXPECT_EQ((*found)->decided_at, 7);
  EXPECT_EQ((*found)->decided_by, "operator:alice");
}

// ---- devices ----

TEST_F(SqliteStoreTest, AddressAllocationIsLowestFreeAndStable) {
  auto p = pool("10.255.0.0/16");
  auto gw = ip("10.255.0.1");
  auto d1 = approved(1);
  auto d2 = approved(2);
  auto d3 = approved(3);
  auto a1 = store_->ensure_device_address(d1.id, p, gw);
  ASSERT_TRUE(a1) << a1.error().message();
  EXPECT_EQ(a1->to_string(), "10.255.0.2") << "network and gateway skipped";
  EXPECT_EQ(store_->ensure_device_address(d2.id, p, gw)->to_string(), "10.255.0.3");
  auto g = gen();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(*store_->ensure_device_address(d1.id, p, gw), *a1);
  }
  EXPECT_EQ(gen(), g) << "ensure is idempotent: no change after the first";
  // A revoked device keeps its address; it is not given to another device.
  ASSERT_TRUE(store_->revoke_device(d1.id, 5));
  EXPECT_EQ((*store_->find_device(d1.id))->address, *a1);
  EXPECT_EQ(store_->ensure_device_address(d3.id, p, gw)->to_string(), "10.255.0.4");
  EXPECT_EQ(store_->ensure_device_address(d1.id, p, gw).error().errno_value(), EPERM);
}

TEST_F(SqliteStoreTest, AddressAllocationFillsGapsAfterReopen) {
  // Gaps only arise from outside the allocator (e.g. a pool change); the allocator still takes
  // the lowest free address. Reopening drops the in-memory hint.
  auto p = pool("10.255.0.0/16");
  auto gw = ip("10.255.0.1");
  std::vector<Device> devs;
  for (std::uint8_t i = 1; i <= 4; ++i) devs.push_back(approved(i));
  for (auto& d : devs) ASSERT_TRUE(store_->ensure_device_address(d.id, p, gw));
  store_.reset();
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    SqlitePtr db(raw);
    std::string sql = "UPDATE devices SET address = NULL WHERE id = '" + devs[1].id + "'";
    ASSERT_EQ(sqlite3_exec(db.get(), sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  }
  reopen();
  auto d5 = approved(5);
  EXPECT_EQ(store_->ensure_device_address(d5.id, p, gw)->to_string(), "10.255.0.3");
  auto d6 = approved(6);
  EXPECT_EQ(store_->ensure_device_address(d6.id, p, gw)->to_string(), "10.255.0.6");
}

TEST_F(SqliteStoreTest, AddressPoolExhaustion) {
  // 10.9.0.0/29: .0 network, .1 gateway, .7 broadcast -> hosts .2 to .6.
  auto p = pool("10.9.0.0/29");
  auto gw = ip("10.9.0.1");
  for (std::uint8_t i = 1; i <= 5; ++i) {
    auto d = approved(i);
    auto a = store_->ensure_device_address(d.id, p, gw);
    ASSERT_TRUE(a) << a.error().message();
    EXPECT_EQ(a->to_string(), "10.9.0." + std::to_string(i + 1));
  }
  auto g = gen();
  auto d6 = approved(6);
  auto full = store_->ensure_device_address(d6.id, p, gw);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().errno_value(), ENOSPC);
  EXPECT_NE(full.error().message().find("10.9.0.0/29"), std::string::npos);
  EXPECT_EQ(gen(), g + 1) << "only the approval changed";
  EXPECT_FALSE((*store_->find_device(d6.id))->address);
}

TEST_F(SqliteStoreTest, AddressGatewayInTheMiddle) {
  auto p = pool("10.9.0.0/29");
  auto gw = ip("10.9.0.3");
  std::vector<std::string> got;
  for (std::uint8_t i = 1; i <= 5; ++i) {
    auto d = approved(i);
    auto a = store_->ensure_device_address(d.id, p, gw);
    ASSERT_TRUE(a) << a.error().message();
    got.push_back(a->to_string());
  }
  EXPECT_EQ(got,
            (std::vector<std::string>{"10.9.0.1", "10.9.0.2", "10.9.0.4", "10.9.0.5", "10.9.0.6"}));
}

TEST_F(SqliteStoreTest, AddressErrors) {
  auto d = approved(1);
  EXPECT_EQ(store_->ensure_device_address("nope", pool("10.255.0.0/16"), ip("10.255.0.1"))
                .error()
                .errno_value(),
            ENOENT);
  EXPECT_EQ(store_->ensure_device_address(d.id, pool("10.255.0.0/16"), ip("10.1.0.1"))
                .error()
                .errno_value(),
            EINVAL);
  EXPECT_EQ(
      store_->ensure_device_address(d.id, pool("fd00::/64"), ip("fd00::1")).error().errno_value(),
      EINVAL);
  EXPECT_EQ(store_->ensure_device_address(d.id, pool("10.9.0.0/31"), ip("10.9.0.1"))
                .error()
                .errno_value(),
            ENOSPC);
}

TEST_F(SqliteStoreTest, SetDevicePorts) {
  auto d = approved(1);
  auto g = gen();
  ASSERT_TRUE(store_->set_device_ports(d.id, kDefaultPorts));
  EXPECT_EQ(gen(), g) << "same set: no change";
  std::vector<PortRule> next = {{Protocol::kTcp, 22}, {Protocol::kUdp, 53}};
  ASSERT_TRUE(store_->set_device_ports(d.id, next));
  EXPECT_EQ(gen(), g + 1);
  auto found = store_->find_device(d.id);
  EXPECT_EQ((*found)->ports, next);
  EXPECT_EQ((*found)->generation, g + 1);
  ASSERT_TRUE(store_->set_device_ports(d.id, {}));
  EXPECT_TRUE((*store_->find_device(d.id))->ports.empty());

  EXPECT_EQ(store_->set_device_ports("nope", next).error().errno_value(), ENOENT);
  EXPECT_EQ(store_->set_device_ports(d.id, {{Protocol::kTcp, 0}}).error().errno_value(), EINVAL);
  ASSERT_TRUE(store_->revoke_device(d.id, 9));
  EXPECT_EQ(store_->set_device_ports(d.id, next).error().errno_value(), EPERM);
}

TEST_F(SqliteStoreTest, RevokeDeviceRevokesItsTokens) {
  auto d = approved(1);
  auto other = approved(2);
  auto h1 = sha256("token-1");
  auto h2 = sha256("token-2");
  auto h3 = sha256("token-3");
  ASSERT_TRUE(store_->add_refresh_token(h1, {d.id, "fam-a", 9000, false, false}));
  ASSERT_TRUE(store_->add_refresh_token(h2, {d.id, "fam-b", 9000, true, false}));
  ASSERT_TRUE(store_->add_refresh_token(h3, {other.id, "fam-c", 9000, false, false}));
  auto g = gen();
  ASSERT_TRUE(store_->revoke_device(d.id, 4242));
  EXPECT_EQ(gen(), g + 1);
  auto found = store_->find_device(d.id);
  EXPECT_EQ((*found)->status, DeviceStatus::kRevoked);
  EXPECT_EQ((*found)->revoked_at, 4242);
  EXPECT_EQ((*found)->generation, g + 1);
  EXPECT_TRUE((*store_->find_refresh_token(h1))->revoked);
  EXPECT_TRUE((*store_->find_refresh_token(h2))->revoked);
  EXPECT_FALSE((*store_->find_refresh_token(h3))->revoked) << "other devices untouched";

  ASSERT_TRUE(store_->revoke_device(d.id, 5000)) << "idempotent";
  EXPECT_EQ(gen(), g + 1);
  EXPECT_EQ((*store_->find_device(d.id))->revoked_at, 4242);
  EXPECT_EQ(store_->revoke_device("nope", 1).error().errno_value(), ENOENT);
  EXPECT_EQ(store_->add_refresh_token(sha256("t4"), {d.id, "f", 9000, false, false})
                .error()
                .errno_value(),
            EPERM);
}

TEST_F(SqliteStoreTest, HeartbeatDoesNotBumpGeneration) {
  auto d = approved(1);
  auto g = gen();
  ASSERT_TRUE(store_->record_heartbeat(d.id, 777, R"({"os":"linux"})"));
  ASSERT_TRUE(store_->record_heartbeat(d.id, 778, ""));
  auto found = store_->find_device(d.id);
  EXPECT_EQ((*found)->last_heartbeat, 778);
  EXPECT_EQ((*found)->inventory_json, R"({"os":"linux"})") << "empty inventory keeps the last";
  EXPECT_EQ(gen(), g);
  EXPECT_EQ(store_->record_heartbeat("nope", 1, "").error().errno_value(), ENOENT);
  ASSERT_TRUE(store_->revoke_device(d.id, 800));
  EXPECT_EQ(store_->record_heartbeat(d.id, 801, "").error().errno_value(), EPERM);
}

TEST_F(SqliteStoreTest, ListDevicesHasPortsAndAllStatuses) {
  auto d1 = approved(1);
  auto d2 = approved(2);
  auto d3 = approved(3);
  ASSERT_TRUE(store_->set_device_ports(d2.id, {{Protocol::kTcp, 22}}));
  ASSERT_TRUE(store_->set_device_ports(d3.id, {}));
  ASSERT_TRUE(store_->revoke_device(d1.id, 9));
  auto all = store_->list_devices();
  ASSERT_TRUE(all) << all.error().message();
  ASSERT_EQ(all->size(), 3u);
  for (const auto& d : *all) {
    if (d.id == d1.id) {
      EXPECT_EQ(d.status, DeviceStatus::kRevoked);
      EXPECT_EQ(d.ports, kDefaultPorts);
    } else if (d.id == d2.id) {
      EXPECT_EQ(d.ports, (std::vector<PortRule>{{Protocol::kTcp, 22}}));
    } else {
      EXPECT_EQ(d.id, d3.id);
      EXPECT_TRUE(d.ports.empty());
    }
  }
}

TEST_F(SqliteStoreTest, ListDevicesChangedAfterAGenerationHasExactlyThoseWithTheirPorts) {
  auto d1 = approved(1);
  auto d2 = approved(2);
  auto d3 = approved(3);
  const std::int64_t g = gen();
  auto ids = [](const std::vector<Device>& v) {
    std::vector<std::string> out;
    for (const auto& d : v) out.push_back(d.id);
    return out;
  };
  EXPECT_TRUE(store_->list_devices_changed_after(g)->empty());
  EXPECT_EQ(store_->list_devices_changed_after(-1)->size(), 3u);

  ASSERT_TRUE(store_->set_device_ports(d3.id, {{Protocol::kTcp, 22}, {Protocol::kUdp, 53}}));
  ASSERT_TRUE(store_->revoke_device(d1.id, 9));
  ASSERT_TRUE(store_->record_heartbeat(d2.id, 10, ""));  // programs nothing: not a change
  auto changed = store_->list_devices_changed_after(g);
  ASSERT_TRUE(changed) << changed.error().message();
  std::vector<std::string> want = {d1.id, d3.id};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ids(*changed), want) << "in id order";
  for (const auto& d : *changed) {
    if (d.id == d1.id) {
      EXPECT_EQ(d.status, DeviceStatus::kRevoked);
      EXPECT_EQ(d.ports, kDefaultPorts);
    } else {
      EXPECT_EQ(d.ports, (std::vector<PortRule>{{Protocol::kTcp, 22}, {Protocol::kUdp, 53}}));
    }
    EXPECT_GT(d.generation, g);
  }
  // After the newest generation: nothing; the full list still has all three.
  EXPECT_TRUE(store_->list_devices_changed_after(gen())->empty());
  EXPECT_EQ(store_->list_devices()->size(), 3u);
}

TEST_F(SqliteStoreTest, WireguardKeyIsUniqueAcrossDevices) {
  // Enrollments refuse a reused WireGuard key up front; a device created from an enrollment row
  // edited behind the store's back still cannot share the key.
  auto d = approved(1);
  auto e2 = store_->add_enrollment(enrollment(2));
  store_.reset();
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    SqlitePtr db(raw);
    std::string sql =
        "UPDATE enrollments SET wg_key = (SELECT wg_key FROM devices) WHERE id = '" + e2->id + "'";
    ASSERT_EQ(sqlite3_exec(db.get(), sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  }
  reopen();
  auto r = store_->approve_enrollment(e2->id, "x", {}, 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EEXIST);
  EXPECT_EQ(r.error().message().find("SELECT"), std::string::npos);
}

// ---- refresh tokens ----

TEST_F(SqliteStoreTest, RefreshTokenLifecycle) {
  auto d = approved(1);
  auto h = sha256("refresh-1");
  ASSERT_TRUE(store_->add_refresh_token(h, {d.id, "fam", 9000, false, false}));
  auto t = store_->find_refresh_token(h);
  ASSERT_TRUE(t && *t);
  EXPECT_EQ((*t)->device_id, d.id);
  EXPECT_EQ((*t)->family_id, "fam");
  EXPECT_EQ((*t)->expires_at, 9000);
  EXPECT_FALSE((*t)->used);
  EXPECT_FALSE((*t)->revoked);

  ASSERT_TRUE(store_->mark_refresh_token_used(h));
  EXPECT_TRUE((*store_->find_refresh_token(h))->used);
  EXPECT_EQ(store_->mark_refresh_token_used(h).error().errno_value(), EALREADY)
      << "a second use is detected atomically";

  auto h2 = sha256("refresh-2");
  ASSERT_TRUE(store_->add_refresh_token(h2, {d.id, "fam", 9000, false, false}));
  ASSERT_TRUE(store_->revoke_token_family("fam"));
  EXPECT_TRUE((*store_->find_refresh_token(h))->revoked);
  EXPECT_TRUE((*store_->find_refresh_token(h2))->revoked);
  EXPECT_EQ(gen(), 1) << "tokens are not desired kernel state";
}

TEST_F(SqliteStoreTest, RefreshTokenErrors) {
  auto d = approved(1);
  auto h = sha256("x");
  EXPECT_FALSE(*store_->find_refresh_token(h));
  EXPECT_EQ(store_->mark_refresh_token_used(h).error().errno_value(), ENOENT);
  EXPECT_EQ(store_->revoke_token_family("nope").error().errno_value(), ENOENT);
  EXPECT_EQ(store_->add_refresh_token(h, {"no-device", "f", 1, false, false}).error().errno_value(),
            ENOENT);
  ASSERT_TRUE(store_->add_refresh_token(h, {d.id, "f", 1, false, false}));
  EXPECT_EQ(store_->add_refresh_token(h, {d.id, "f", 1, false, false}).error().errno_value(),
            EEXIST);
}

// ---- audit ----

TEST_F(SqliteStoreTest, AuditIsOrderedAndPaged) {
  for (int i = 0; i < 25; ++i) {
    ASSERT_TRUE(store_->audit(
        {0, 100 + i, "operator:alice", "device.revoke", "dev" + std::to_string(i), "", "local"}));
  }
  auto page1 = store_->list_audit(0, 10);
  ASSERT_TRUE(page1);
  ASSERT_EQ(page1->size(), 10u);
  EXPECT_EQ(page1->front().target, "dev0");
  EXPECT_EQ(page1->front().at, 100);
  EXPECT_EQ(page1->front().actor, "operator:alice");
  EXPECT_EQ(page1->front().action, "device.revoke");
  EXPECT_EQ(page1->front().source, "local");
  for (std::size_t i = 1; i < page1->size(); ++i) {
    EXPECT_LT((*page1)[i - 1].id, (*page1)[i].id);
  }
  auto page2 = store_->list_audit(page1->back().id, 10);
  EXPECT_EQ(page2->front().target, "dev10");
  auto page3 = store_->list_audit((*page2).back().id, 10);
  EXPECT_EQ(page3->size(), 5u);
  EXPECT_TRUE(store_->list_audit(page3->back().id, 10)->empty());
  EXPECT_EQ(gen(), 0) << "audit is not a change of desired state";

  EXPECT_EQ(store_->list_audit(0, 0).error().errno_value(), EINVAL);
  EXPECT_EQ(store_->list_audit(0, 1001).error().errno_value(), EINVAL);
  EXPECT_EQ(store_->audit({0, 1, "x", "", "", "", ""}).error().errno_value(), EINVAL);
}

TEST_F(SqliteStoreTest, AuditIsAppendOnly) {
  ASSERT_TRUE(store_->audit({0, 1, "x", "a.b", "t", "", "local"}));
  store_.reset();
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  SqlitePtr db(raw);
  EXPECT_NE(sqlite3_exec(db.get(), "UPDATE audit SET actor = 'y'", nullptr, nullptr, nullptr),
            SQLITE_OK);
  EXPECT_NE(sqlite3_exec(db.get(), "DELETE FROM audit", nullptr, nullptr, nullptr), SQLITE_OK);
}

// ---- errors and concurrency ----

TEST_F(SqliteStoreTest, ConcurrentCallersGetDistinctAddresses) {
  // Threads share one store (the daemon's HTTP workers and reconciler do), and a second store on
  // the same file allocates too: its hint must not hand out an address twice.
  auto second = SqliteStore::open(path_);
  ASSERT_TRUE(second);
  constexpr int kThreads = 6;
  constexpr int kPerThread = 20;
  std::vector<Device> devices;
  for (int i = 0; i < kThreads * kPerThread; ++i) devices.push_back(approved(i));
  std::vector<std::vector<std::string>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      SqliteStore& s = t % 2 == 0 ? *store_ : **second;
      for (int i = 0; i < kPerThread; ++i) {
        auto a = s.ensure_device_address(devices[t * kPerThread + i].id, pool("10.255.0.0/16"),
                                         ip("10.255.0.1"));
        got[t].push_back(a ? a->to_string() : a.error().message());
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> all;
  for (const auto& v : got) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_TRUE(all.count("10.255.0.2"));
  EXPECT_EQ(gen(), 2 * kThreads * kPerThread);
}

TEST_F(SqliteStoreTest, BusyDatabaseIsEbusy) {
  auto other = SqliteStore::open(path_, SqliteOptions{.busy_timeout_ms = 50});
  ASSERT_TRUE(other);
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  SqlitePtr locker(raw);
  ASSERT_EQ(sqlite3_exec(locker.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  auto r = (*other)->add_enrollment(enrollment(1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EBUSY) << r.error().message();
  EXPECT_NE(r.error().message().find("add enrollment"), std::string::npos);
  ASSERT_EQ(sqlite3_exec(locker.get(), "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  EXPECT_TRUE((*other)->add_enrollment(enrollment(1)));
}

TEST(SqliteErrno, Mapping) {
  EXPECT_EQ(sqlite_errno(SQLITE_BUSY, 0), EBUSY);
  EXPECT_EQ(sqlite_errno(SQLITE_LOCKED, 0), EBUSY);
  EXPECT_EQ(sqlite_errno(SQLITE_CONSTRAINT_UNIQUE, 0), EEXIST);
  EXPECT_EQ(sqlite_errno(SQLITE_CONSTRAINT_PRIMARYKEY, 0), EEXIST);
  EXPECT_EQ(sqlite_errno(SQLITE_CONSTRAINT_FOREIGNKEY, 0), ENOENT);
  EXPECT_EQ(sqlite_errno(SQLITE_CONSTRAINT_CHECK, 0), EINVAL);
  EXPECT_EQ(sqlite_errno(SQLITE_FULL, 0), ENOSPC);
  EXPECT_EQ(sqlite_errno(SQLITE_READONLY, 0), EROFS);
  EXPECT_EQ(sqlite_errno(SQLITE_CORRUPT, 0), EUCLEAN);
  EXPECT_EQ(sqlite_errno(SQLITE_IOERR_WRITE, ENOSPC), ENOSPC);
  EXPECT_EQ(sqlite_errno(SQLITE_IOERR, 0), EIO);
  EXPECT_EQ(sqlite_errno(SQLITE_CANTOPEN, 0), EACCES);
}

// A child process applies a burst of changes and is SIGKILLed in the middle; the database must
// be intact and its generation must match the rows: each approval and each allocation is exactly
// one generation, and each device's generation is within the store's.
TEST_F(SqliteStoreTest, KillDuringBurstLeavesConsistentDatabase) {
  store_.reset();
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto s = SqliteStore::open(path_);
    if (!s) _exit(2);
    auto p = pool("10.255.0.0/16");
    auto gw = ip("10.255.0.1");
    bool signalled = false;
    for (int i = 0;; ++i) {
      Enrollment e;
      e.hostname = "h" + std::to_string(i);
      KeyBytes ak{}, wk{};
      randombytes_buf(ak.data(), ak.size());
      randombytes_buf(wk.data(), wk.size());
      e.agent_key = Key(ak);
      e.wg_key = Key(wk);
      e.created_at = i;
      auto en = (*s)->add_enrollment(e);
      if (!en) _exit(3);
      auto d = (*s)->approve_enrollment(en->id, "x", kDefaultPorts, i);
      if (!d) _exit(4);
      if (!(*s)->ensure_device_address(d->id, p, gw)) _exit(5);
      if (i % 3 == 0 && !(*s)->set_device_ports(d->id, {{Protocol::kTcp, 22}})) _exit(6);
      if (i == 50 && !signalled) {
        signalled = true;
        char c = 1;
        if (write(ready[1], &c, 1) != 1) _exit(7);
      }
    }
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1) << "child failed before its burst";
  ::close(ready[0]);
  usleep(100 * 1000);
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);

  reopen();
  ASSERT_TRUE(store_->check_integrity()) << store_->check_integrity().error().message();
  auto devices = store_->list_devices();
  ASSERT_TRUE(devices) << devices.error().message();
  ASSERT_GT(devices->size(), 50u);
  std::int64_t expected = 0;
  std::int64_t max_device_gen = 0;
  for (const auto& d : *devices) {
    expected += 1;                           // approval
    if (d.address) expected += 1;            // allocation
    if (d.ports.size() == 1) expected += 1;  // port change
    EXPECT_TRUE(d.ports.size() == 1 || d.ports == kDefaultPorts) << d.id;
    max_device_gen = std::max(max_device_gen, d.generation);
  }
  EXPECT_EQ(gen(), expected);
  EXPECT_EQ(max_device_gen, gen());
  auto enrollments = store_->list_enrollments(EnrollmentStatus::kApproved);
  EXPECT_EQ(enrollments->size(), devices->size()) << "approval and device commit together";
}

}  // namespace
}  // namespace portcullis::state
