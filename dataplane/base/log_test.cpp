#include "dataplane/base/log.h"

#include <gtest/gtest.h>

namespace portcullis {
namespace {

TEST(Log, FormatsKeyValueFields) {
  EXPECT_EQ(format_log_line("peer added", {{"agent", "7f3c"}, {"ip", "10.255.0.5"}}),
            "peer added agent=7f3c ip=10.255.0.5");
}

TEST(Log, QuotesValuesThatNeedIt) {
  EXPECT_EQ(format_log_line("x", {{"error", "No such device"}}), "x error=\"No such device\"");
  EXPECT_EQ(format_log_line("x", {{"v", ""}}), "x v=\"\"");
  EXPECT_EQ(format_log_line("x", {{"v", "a\"b\nc"}}), "x v=\"a\\\"b\\nc\"");
  // A control character cannot forge a second log line.
  EXPECT_EQ(format_log_line("x", {{"v", std::string("a\rb")}}), "x v=\"a\\x0db\"");
}

}  // namespace
}  // namespace portcullis
