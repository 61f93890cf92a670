#include "controlplane/daemon/admin_commands.h"

#include <gtest/gtest.h>

#include "controlplane/state/sqlite_store.h"
#include "tests/support/temp_dir.h"

namespace portcullis::daemon {
namespace {

class AdminCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = state::SqliteStore::open(dir_.file("db"));
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
    ctx_ = std::make_unique<AdminContext>(AdminContext{
        *store_, {{filter::Protocol::kTcp, 5985}}, [this] { return now_; }, [this] { ++wakes_; }});
  }
  void TearDown() override {
    ctx_.reset();
    store_.reset();
  }

  Result<nlohmann::json> call(const std::string& cmd,
                              nlohmann::json args = nlohmann::json::object()) {
    return run_admin_command(*ctx_, cmd, args);
  }

  std::string pending_enrollment() {
    state::Enrollment e;
    e.hostname = "agent-1";
    e.agent_key = SecretKey::generate_private().public_key();
    e.wg_key = SecretKey::generate_private().public_key();
    e.created_at = now_;
    auto r = store_->add_enrollment(e);
    EXPECT_TRUE(r) << r.error().message();
    return r ? r->id : "";
  }

  portcullis::testing::TempDir dir_{"pcl-admincmd"};
  std::unique_ptr<state::SqliteStore> store_;
  std::unique_ptr<AdminContext> ctx_;
  std::int64_t now_ = 1'800'000'000;
  int wakes_ = 0;
};

TEST_F(AdminCommandsTest, EnrollmentCodeIsSingleUseAndExpires) {
  auto r = call("enrollment-code.create", {{"ttl_s", 60}});
  ASSERT_TRUE(r) << r.error().message();
  std::string code = (*r)["code"];
  EXPECT_EQ(code.size(), 39u);  // 32 characters in 8 groups
  EXPECT_EQ((*r)["expires_at"], now_ + 60);
  auto e1 = pending_enrollment(), e2 = pending_enrollment();
  EXPECT_EQ(store_->consume_enrollment_code(code, now_ + 1, e1).value_or(false), true);
  EXPECT_EQ(store_->consume_enrollment_code(code, now_ + 2, e2).value_or(true), false);

  auto late = call("enrollment-code.create", {{"ttl_s", 60}});
  ASSERT_TRUE(late);
  EXPECT_EQ(store_->consume_enrollment_code((*late)["code"], now_ + 61, e2).value_or(true), false);
}

TEST_F(AdminCommandsTest, RejectsBadArguments) {
  EXPECT_FALSE(call("enrollment-code.create", {{"ttl_s", -1}}));
  EXPECT_FALSE(call("enrollment-code.create", {{"ttl_s", "1h"}}));
  EXPECT_FALSE(call("enrollment.approve"));
  EXPECT_FALSE(call("device.revoke", {{"id", 7}}));
  EXPECT_FALSE(call("device.ports", {{"id", "x"}, {"ports", {"70000"}}}));
  auto r = call("device.launch");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().context().find("unknown command"), std::string::npos);
}

TEST_F(AdminCommandsTest, ApproveSetPortsRevokeWakeTheReconcilerAndAudit) {
  auto id = pending_enrollment();
  auto approved = call("enrollment.approve", {{"id", id}});
  ASSERT_TRUE(approved) << approved.error().message();
  std::string device = (*approved)["device_id"];
  EXPECT_EQ(wakes_, 1);

  auto ports = call("device.ports", {{"id", device}, {"ports", {"3478", "5900/tcp"}}});
  ASSERT_TRUE(ports) << ports.error().message();
  // Sorted by protocol, then port.
  EXPECT_EQ((*ports)["ports"], nlohmann::json({"3478/tcp", "5900/tcp", "3478/udp"}));
  EXPECT_EQ(wakes_, 2);

  auto list = call("device.list");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0]["status"], "active");
  EXPECT_EQ((*list)[0]["ports"].size(), 3u);

  ASSERT_TRUE(call("device.revoke", {{"id", device}}));
  EXPECT_EQ(wakes_, 3);
  EXPECT_EQ((*call("device.list"))[0]["status"], "revoked");

  auto audit = store_->list_audit(0, 100);
  ASSERT_TRUE(audit);
  std::vector<std::string> actions;
  for (const auto& e : *audit) actions.push_back(e.action);
  EXPECT_NE(std::find(actions.begin(), actions.end(), "enrollment.approve"), actions.end());
  EXPECT_NE(std::find(actions.begin(), actions.end(), "device.revoke"), actions.end());
}

TEST_F(AdminCommandsTest, DenyAndUnknownIds) {
  auto id = pending_enrollment();
  ASSERT_TRUE(call("enrollment.deny", {{"id", id}}));
  EXPECT_FALSE(call("enrollment.approve", {{"id", id}}));
  EXPECT_FALSE(call("device.revoke", {{"id", "nosuchdevice"}}));
  EXPECT_EQ(wakes_, 0);
}

}  // namespace
}  // namespace portcullis::daemon
