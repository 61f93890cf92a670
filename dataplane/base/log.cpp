#include "dataplane/base/log.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "dataplane/base/unique_fd.h"

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

// One journal field in the native protocol: "KEY=value\n", or, when the value holds a newline,
// "KEY\n", the value's length as 64-bit little-endian, the value, "\n".
void append_journal_field(std::string& out, std::string_view key, std::string_view value) {
  out.append(key);
  if (value.find('\n') == std::string_view::npos) {
    out.push_back('=');
  } else {
    out.push_back('\n');
    std::uint64_t n = value.size();
    for (int i = 0; i < 8; ++i, n >>= 8) out.push_back(static_cast<char>(n & 0xff));
  }
  out.append(value);
  out.push_back('\n');
}

// One entry as one datagram to journald's native socket
// (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/), as sd_journal_sendv() sends it. Not
// libsystemd itself: it brings libgcrypt, libgpg-error, lz4, lzma, zstd and libcap into every
// process, 0.8 MiB of portcullis-agent's RSS (bench/README.md, agent_bench). An entry too large
// for a datagram (sd_journal_sendv() would pass a sealed memfd) goes to stderr instead.
bool send_to_journal(const std::string& entry) {
  static const UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un to{};
  to.sun_family = AF_UNIX;
  constexpr char kSocket[] = "/run/systemd/journal/socket";
  std::memcpy(to.sun_path, kSocket, sizeof kSocket);
  for (;;) {
    if (::sendto(fd.get(), entry.data(), entry.size(), MSG_NOSIGNAL,
                 reinterpret_cast<sockaddr*>(&to), sizeof to) >= 0) {
      return true;
    }
    if (errno != EINTR) return false;
  }
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

std::string format_journal_entry(LogLevel level, std::string_view line,
                                 std::initializer_list<LogField> fields) {
  std::string entry;
  append_journal_field(entry, "MESSAGE", line);
  append_journal_field(entry, "PRIORITY", std::to_string(static_cast<int>(level)));
  for (const auto& f : fields) append_journal_field(entry, journal_field_name(f.key), f.value);
  return entry;
}

void log_event(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) {
  if (static_cast<int>(level) > g_max_level.load(std::memory_order_relaxed)) return;
  std::string line = format_log_line(message, fields);
  if (stderr_is_journal() && send_to_journal(format_journal_entry(level, line, fields))) return;
  static std::mutex mu;
  std::lock_guard lock(mu);
  std::fprintf(stderr, "<%d>%s\n", static_cast<int>(level), line.c_str());
}

}  // namespace portcullis
