#include "controlplane/operator/login_limiter.h"

#include <gtest/gtest.h>

namespace portcullis::operator_api {
namespace {

TEST(LoginLimiter, LocksAfterMaxFailuresPerUserAndSource) {
  LoginLimiter l({.max_failures = 3, .window_s = 100, .lockout_s = 60, .max_entries = 10});
  for (int i = 0; i < 2; ++i) l.record_failure("alice", "192.0.2.1", 1000 + i);
  EXPECT_EQ(l.retry_after("alice", "192.0.2.1", 1002), 0);
  l.record_failure("alice", "192.0.2.1", 1002);
  EXPECT_EQ(l.retry_after("alice", "192.0.2.1", 1002), 60);
  EXPECT_EQ(l.retry_after("alice", "192.0.2.1", 1032), 30);
  EXPECT_EQ(l.retry_after("alice", "192.0.2.1", 1062), 0);
  // Other pairs are not affected.
  EXPECT_EQ(l.retry_after("alice", "192.0.2.2", 1002), 0);
  EXPECT_EQ(l.retry_after("bob", "192.0.2.1", 1002), 0);
}

TEST(LoginLimiter, FailuresOutsideTheWindowStartOver) {
  LoginLimiter l({.max_failures = 2, .window_s = 10, .lockout_s = 60, .max_entries = 10});
  l.record_failure("a", "s", 0);
  l.record_failure("a", "s", 20);
  EXPECT_EQ(l.retry_after("a", "s", 20), 0);
  l.record_failure("a", "s", 21);
  EXPECT_EQ(l.retry_after("a", "s", 21), 60);
}

TEST(LoginLimiter, SuccessClearsAndSizeIsBounded) {
  LoginLimiter l({.max_failures = 2, .window_s = 10, .lockout_s = 60, .max_entries = 3});
  l.record_failure("a", "s", 0);
  l.record_success("a", "s");
  EXPECT_EQ(l.size(), 0u);
  for (int i = 0; i < 10; ++i) l.record_failure("u" + std::to_string(i), "s", i);
  EXPECT_EQ(l.size(), 3u);
}

}  // namespace
}  // namespace portcullis::operator_api
