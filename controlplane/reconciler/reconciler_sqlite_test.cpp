// The reconciler over the real SqliteStore (a temporary file) and the in-memory dataplane fakes:
// the flow of the daemon from approval to revocation, and a restart that re-opens the database.

#include <gtest/gtest.h>

#include <filesystem>

#include "controlplane/reconciler/reconciler.h"
#include "controlplane/state/sqlite_store.h"
#include "dataplane/testing/fake_packet_filter.h"
#include "dataplane/testing/fake_wireguard_device.h"
#include "tests/support/temp_dir.h"

namespace portcullis::reconciler {
namespace {

using filter::Protocol;
using portcullis::testing::FakePacketFilter;
using portcullis::testing::FakeWireguardDevice;
using portcullis::testing::TempDir;

IpAddress ip(const char* s) { return *IpAddress::parse(s); }
const IpPrefix kPool = *IpPrefix::parse("10.255.0.0/16");

Key key(std::uint8_t n, std::uint8_t kind) {
  KeyBytes b{};
  b.fill(n);
  b[0] = kind;
  return Key(b);
}

class ReconcilerSqliteTest : public ::testing::Test {
 protected:
  void SetUp() override { open(); }
  void open() {
    store_.reset();
    auto s = state::SqliteStore::open(dir_.file("portcullis.db"));
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
  }
  std::unique_ptr<Reconciler> make() {
    ReconcilerOptions o;
    o.gateway = {gateway_key_, 30000};
    o.filter = {"portcullis0", ip("10.255.0.1"), kPool, {}};
    return std::make_unique<Reconciler>(
        *store_, wg_, std::vector<FilterLayer>{{"nftables", nft_}, {"ebpf", bpf_}}, o, metrics_,
        ReconcilerClock::system());
  }
  // Enrolls, approves and ensures agent n; returns its device id.
  std::string ensured(std::uint8_t n) {
    state::Enrollment e;
    e.hostname = "host-" + std::to_string(n);
    e.agent_key = key(n, 1);
    e.wg_key = key(n, 2);
    e.inventory_json = "{}";
    auto added = store_->add_enrollment(e);
    EXPECT_TRUE(added) << added.error().message();
    auto d = store_->approve_enrollment(added->id, "operator:alice",
                                        {{Protocol::kTcp, 5985}, {Protocol::kUdp, 3478}}, 1000);
    EXPECT_TRUE(d) << d.error().message();
    auto a = store_->ensure_device_address(d->id, kPool, ip("10.255.0.1"));
    EXPECT_TRUE(a) << a.error().message();
    return d->id;
  }

  TempDir dir_{"pcl-recon"};
  std::unique_ptr<state::SqliteStore> store_;
  SecretKey gateway_key_ = SecretKey::generate_private();
  FakeWireguardDevice wg_{"portcullis0"};
  FakePacketFilter nft_;
  FakePacketFilter bpf_;
  metrics::Registry metrics_;
};

TEST_F(ReconcilerSqliteTest, ApproveEnsureDriftRevokeAndRestart) {
  std::string a = ensured(1);
  std::string b = ensured(2);
  auto rec = make();
  auto r = rec->reconcile_once();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->applied) << r->to_string();
  EXPECT_EQ(wg_.state().peers.size(), 2u);
  EXPECT_EQ(*store_->applied_generation(), *store_->generation());
  EXPECT_NE(nft_.to_text().find("allow 10.255.0.2 udp 3478 device=" + a), std::string::npos)
      << nft_.to_text();

  // Drift: an element disappears; the repair is audited in SQLite.
  filter::FilterDelta gone;
  gone.remove_allowed = {{ip("10.255.0.3"), Protocol::kTcp, 5985, ""}};
  ASSERT_TRUE(nft_.apply(gone));
  r = rec->reconcile_once();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->drift);
  auto audit = store_->list_audit(0, 1000);
  ASSERT_TRUE(audit);
  auto repair = std::find_if(audit->begin(), audit->end(),
                             [](const auto& e) { return e.action == "drift.repair"; });
  ASSERT_NE(repair, audit->end());
  EXPECT_EQ(repair->actor, "reconciler");
  EXPECT_EQ(repair->detail, "nftables: +1 -0 elements");

  // Revoke b.
  ASSERT_TRUE(store_->revoke_device(b, 2000));
  r = rec->reconcile_once();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->applied);
  EXPECT_EQ(wg_.state().peers.size(), 1u);
  EXPECT_EQ(nft_.to_text().find(b), std::string::npos);
  EXPECT_EQ(*store_->applied_generation(), *store_->generation());

  // Restart: the database is re-opened, the kernel kept everything: no write.
  rec.reset();
  open();
  auto applies = wg_.apply_calls() + nft_.apply_calls() + nft_.build_calls() + bpf_.apply_calls() +
                 bpf_.build_calls();
  rec = make();
  r = rec->reconcile_once();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->adoption);
  EXPECT_EQ(r->changing_calls(), 0) << r->to_string();
  EXPECT_EQ(wg_.apply_calls() + nft_.apply_calls() + nft_.build_calls() + bpf_.apply_calls() +
                bpf_.build_calls(),
            applies);
}

}  // namespace
}  // namespace portcullis::reconciler
