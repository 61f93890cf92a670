#include "dataplane/base/log.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace portcullis {
namespace {

std::atomic<int> g_max_level{static_cast<int>(LogLevel::kInfo)};

// True when stderr is the stream systemd connected to the journal (see systemd.exec(5)).
bool stderr_is_journal() {
  static const bool is = [] {
    const char* js = std::getenv("JOURNAL_STREAM");
    if (!js) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st;
    if (fstat(STDERR_FILENO, &st) != 0) return false;
    return st.st_dev == dev && st.st_ino == ino;
  }();
  return is;
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' ||
        !std::isprint(static_cast<unsigned char>(c))) {
      return true;
    }
  }
  return false;
}

void append_value(std::string& out, std::string_view v) {
  if (!needs_quotes(v)) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else if (!std::isprint(static_cast<unsigned char>(c))) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      out.append(buf);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

std::string journal_field_name(std::string_view key) {
  std::string name = "PORTCULLIS_";
  for (char c : key) {
    name.push_back(std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(c))
                                                               : '_');
  }
  return name;
}

}  // namespace

void set_log_level(LogLevel max_level) { g_max_level = static_cast<int>(max_level); }

std::string format_log_line(std::string_view message, std::initializer_list<LogField> fields) {
  std::string line(message);
  for (const auto& f : fields) {
    line.push_back(' ');
    line.append(f.key);
    line.push_back('=');
    append_value(line, f.value);
  }
  return line;
}

void log_event(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) {
  if (static_cast<int>(level) > g_max_level.load(std::memory_order_relaxed)) return;
  std::string line = format_log_line(message, fields);
  if (stderr_is_journal()) {
    std::vector<std::string> storage;
    storage.reserve(fields.size() + 2);
    storage.push_back("MESSAGE=" + line);
    storage.push_back("PRIORITY=" + std::to_string(static_cast<int>(level)));
    for (const auto& f : fields) storage.push_back(journal_field_name(f.key) + "=" + f.value);
    std::vector<iovec> iov;
    for (auto& s : storage) iov.push_back({s.data(), s.size()});
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0) return;
  }
  static std::mutex mu;
  std::lock_guard lock(mu);
  std::fprintf(stderr, "<%d>%s\n", static_cast<int>(level), line.c_str());
}

}  // namespace portcullis
