#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "controlplane/state/ids.h"
#include "controlplane/state/sqlite_store.h"
#include "tests/support/temp_dir.h"

namespace portcullis::state {
namespace {

class OperatorStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = SqliteStore::open(dir_.file("portcullis.db"));
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
  }

  portcullis::testing::TempDir dir_{"pcl-opstore"};
  std::unique_ptr<SqliteStore> store_;
};

OperatorAccount account(std::string name, Role role) {
  return {std::move(name), "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA", role, 100};
}

TEST_F(OperatorStoreTest, FirstAdminOnlyOnce) {
  EXPECT_EQ(*store_->has_admin(), false);
  ASSERT_TRUE(store_->create_first_admin(account("root", Role::kAdmin)));
  EXPECT_EQ(*store_->has_admin(), true);
  auto again = store_->create_first_admin(account("other", Role::kAdmin));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().errno_value(), EEXIST);
  EXPECT_FALSE(store_->find_operator("other")->has_value());
}

TEST_F(OperatorStoreTest, OperatorsAreUniqueByName) {
  ASSERT_TRUE(store_->add_operator(account("alice", Role::kOperator)));
  auto dup = store_->add_operator(account("alice", Role::kAuditor));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().errno_value(), EEXIST);
  auto found = store_->find_operator("alice");
  ASSERT_TRUE(found && found->has_value());
  EXPECT_EQ((*found)->role, Role::kOperator);
  ASSERT_TRUE(store_->add_operator(account("bob", Role::kAuditor)));
  auto all = store_->list_operators();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "alice");
  EXPECT_FALSE(*store_->has_admin());
}

TEST_F(OperatorStoreTest, SessionsExpireAndAreDeleted) {
  ASSERT_TRUE(store_->add_operator(account("alice", Role::kOperator)));
  auto token = sha256(std::string_view("token"));
  OperatorSession s;
  s.operator_name = "alice";
  s.csrf_hash = sha256(std::string_view("csrf"));
  s.source = "127.0.0.1";
  s.created_at = 1000;
  s.expires_at = 2000;
  ASSERT_TRUE(store_->add_session(token, s, 1000));
  auto found = store_->find_session(token, 1999);
  ASSERT_TRUE(found && found->has_value());
  EXPECT_EQ((*found)->operator_name, "alice");
  EXPECT_EQ((*found)->role, Role::kOperator);
  EXPECT_EQ((*found)->csrf_hash, s.csrf_hash);
  EXPECT_FALSE(store_->find_session(token, 2000)->has_value());
  // A later login prunes expired sessions.
  auto token2 = sha256(std::string_view("token2"));
  s.expires_at = 5000;
  ASSERT_TRUE(store_->add_session(token2, s, 3000));
  EXPECT_FALSE(store_->find_session(token, 1500)->has_value());
  ASSERT_TRUE(store_->delete_session(token2));
  EXPECT_FALSE(store_->find_session(token2, 3000)->has_value());
  EXPECT_TRUE(store_->delete_session(token2));
}

TEST_F(OperatorStoreTest, AuditNewestFirstPages) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(store_->audit({0, 100 + i, "operator:a", "x", std::to_string(i), "", "local"}));
  }
  auto page = store_->list_audit_newest(0, 2);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].target, "4");
  EXPECT_EQ((*page)[1].target, "3");
  auto next = store_->list_audit_newest((*page)[1].id, 10);
  ASSERT_TRUE(next);
  ASSERT_EQ(next->size(), 3u);
  EXPECT_EQ((*next)[2].target, "0");
  EXPECT_FALSE(store_->list_audit_newest(0, 0));
  EXPECT_FALSE(store_->list_audit_newest(0, 1001));
}

}  // namespace
}  // namespace portcullis::state
