#include "tests/support/portcullisd_process.h"

#include "tests/support/child_process.h"
#include "tests/support/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

extern char** environ;

namespace portcullis::testing {
namespace {

std::string read_from(const std::string& path, std::size_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::size_t>(st.st_size) : 0;
}

// "<5>message k=v ..." -> "message k=v ..."
std::string_view without_level(std::string_view line) {
  if (line.size() > 3 && line[0] == '<' && line[2] == '>') line.remove_prefix(3);
  return line;
}

bool has_message(std::string_view line, std::string_view message) {
  line = without_level(line);
  return line.starts_with(message) &&
         (line.size() == message.size() || line[message.size()] == ' ');
}

std::string tail(const std::string& text, std::size_t n = 3000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

}  // namespace

std::optional<std::string> log_line_field(std::string_view line, std::string_view key) {
  const std::string needle = " " + std::string(key) + "=";
  auto at = line.find(needle);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = line.substr(at + needle.size());
  std::string value;
  if (rest.starts_with('"')) {
    for (std::size_t i = 1; i < rest.size(); ++i) {
      if (rest[i] == '\\' && i + 1 < rest.size()) {
        value.push_back(rest[++i] == 'n' ? '\n' : rest[i]);
      } else if (rest[i] == '"') {
        break;
      } else {
        value.push_back(rest[i]);
      }
    }
    return value;
  }
  return std::string(rest.substr(0, rest.find(' ')));
}

PortcullisdProcess::PortcullisdProcess(PortcullisdOptions options) : options_(std::move(options)) {
  const std::string parent = std::filesystem::path(options_.state_dir).parent_path().string();
  auto it = options_.env.find("PORTCULLIS_ADMIN_SOCKET");
  admin_socket_ = it != options_.env.end() ? it->second : parent + "/admin.sock";
  options_.env["PORTCULLIS_ADMIN_SOCKET"] = admin_socket_;
  options_.env["PORTCULLIS_GATEWAY_STATE_DIR"] = options_.state_dir;
  log_path_ = parent + "/portcullisd.log";
}

PortcullisdProcess::~PortcullisdProcess() { kill9(); }

std::string PortcullisdProcess::start(std::chrono::milliseconds timeout) {
  if (running()) return "already running (pid " + std::to_string(pid_) + ")";
  std::error_code ec;
  std::filesystem::create_directories(options_.state_dir, ec);
  if (ec) return "create " + options_.state_dir + ": " + ec.message();

  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v(*e);
    if (v.starts_with("PORTCULLIS_") || v.starts_with("NOTIFY_SOCKET=") ||
        v.starts_with("JOURNAL_STREAM=")) {
      continue;
    }
    env.emplace_back(v);
  }
  for (const auto& [k, v] : options_.env) env.push_back(k + "=" + v);

  log_offset_ = file_size(log_path_);
  const auto t0 = std::chrono::steady_clock::now();
  auto pid = spawn_child({.binary = options_.binary,
                          .args = {"--config", "/dev/null"},
                          .env = std::move(env),
                          .netns_path = options_.netns_path,
                          .log_path = log_path_,
                          .cwd = options_.state_dir});
  if (!pid) return pid.error().message();
  pid_ = *pid;

  const auto deadline = t0 + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return "portcullisd exited during start (status " + std::to_string(status) + "):\n" +
             tail(log());
    }
    std::istringstream lines(log());
    for (std::string line; std::getline(lines, line);) {
      if (has_message(line, "portcullisd ready")) {
        start_to_ready_ = std::chrono::steady_clock::now() - t0;
        return "";
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "portcullisd not ready after " + std::to_string(timeout.count()) + " ms:\n" + tail(log());
}

int PortcullisdProcess::stop(std::chrono::milliseconds timeout) {
  if (!running()) return -1;
  const int code = stop_child(pid_, timeout);
  pid_ = -1;
  return code;
}

void PortcullisdProcess::kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string PortcullisdProcess::log() const { return read_from(log_path_, log_offset_); }

std::optional<std::string> PortcullisdProcess::log_field(std::string_view message,
                                                         std::string_view key) const {
  std::optional<std::string> found;
  std::istringstream lines(log());
  for (std::string line; std::getline(lines, line);) {
    if (has_message(line, message)) found = log_line_field(line, key);
  }
  return found;
}

void remove_bpf_pins(const std::string& ifname) {
  if (ifname.empty()) return;
  run("rm -rf /sys/fs/bpf/portcullis/" + ifname);
  run("rmdir /sys/fs/bpf/portcullis 2>/dev/null");  // fails, harmlessly, while others pin there
}

}  // namespace portcullis::testing
