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

// systemd's native journal protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one field
// per line as KEY=value; a value holding a newline as KEY, newline, its length as 64-bit
// little-endian, the value, newline. Keys become PORTCULLIS_<KEY> in upper case.
TEST(Log, JournalEntryIsTheNativeProtocol) {
  using namespace std::string_literals;
  EXPECT_EQ(format_journal_entry(LogLevel::kWarning, "peer added agent=7f3c",
                                 {{"agent", "7f3c"}, {"tls-pin", "sha256//AB="}}),
            "MESSAGE=peer added agent=7f3c\nPRIORITY=4\nPORTCULLIS_AGENT=7f3c\n"
            "PORTCULLIS_TLS_PIN=sha256//AB=\n");
  EXPECT_EQ(format_journal_entry(LogLevel::kError, "x", {{"detail", "a\nb"}}),
            "MESSAGE=x\nPRIORITY=3\nPORTCULLIS_DETAIL\n\x03\0\0\0\0\0\0\0a\nb\n"s);
}

}  // namespace
}  // namespace portcullis
