#pragma once
// One event per line: a short message, then key=value fields.
//   log_info("peer added", {{"agent", "7f3c"}, {"ip", "10.255.0.5"}});
// Under systemd (JOURNAL_STREAM names our stderr) events go to the journal with PORTCULLIS_<KEY>
// fields and PRIORITY, so `journalctl PORTCULLIS_AGENT=7f3c` works. Elsewhere they go to stderr
// with a syslog level prefix ("<6>peer added agent=7f3c ip=10.255.0.5"), which journald also
// understands. Dataplane code does not log; the layer that decides (reconciler, API, main) logs
// once.

#include <initializer_list>
#include <string>
#include <string_view>

namespace portcullis {

enum class LogLevel { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };

struct LogField {
  std::string_view key;
  std::string value;
};

void set_log_level(LogLevel max_level);
void log_event(LogLevel level, std::string_view message,
               std::initializer_list<LogField> fields = {});

// The text form of one event without the level prefix; exposed for tests.
std::string format_log_line(std::string_view message, std::initializer_list<LogField> fields);
// The journal entry (native protocol datagram) of one event whose text form is `line`; exposed
// for tests.
std::string format_journal_entry(LogLevel level, std::string_view line,
                                 std::initializer_list<LogField> fields);

inline void log_error(std::string_view m, std::initializer_list<LogField> f = {}) {
  log_event(LogLevel::kError, m, f);
}
inline void log_warning(std::string_view m, std::initializer_list<LogField> f = {}) {
  log_event(LogLevel::kWarning, m, f);
}
inline void log_notice(std::string_view m, std::initializer_list<LogField> f = {}) {
  log_event(LogLevel::kNotice, m, f);
}
inline void log_info(std::string_view m, std::initializer_list<LogField> f = {}) {
  log_event(LogLevel::kInfo, m, f);
}
inline void log_debug(std::string_view m, std::initializer_list<LogField> f = {}) {
  log_event(LogLevel::kDebug, m, f);
}

}  // namespace portcullis
