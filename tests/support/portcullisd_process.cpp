#include "tests/support/portcullisd_process.h"

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

  // Everything the child needs is prepared before fork(): after it only async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v(*e);
    if (v.starts_with("PORTCULLIS_") || v.starts_with("NOTIFY_SOCKET=") ||
        v.starts_with("JOURNAL_STREAM=")) {
      continue;
    }
    env_strings.emplace_back(v);
  }
  for (const auto& [k, v] : options_.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string binary = options_.binary, config_flag = "--config", config = "/dev/null";
  std::vector<char*> argv = {binary.data(), config_flag.data(), config.data(), nullptr};

  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) return "open " + log_path_ + ": " + std::strerror(errno);
  int ns_fd = -1;
  if (!options_.netns_path.empty()) {
    ns_fd = ::open(options_.netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) {
      ::close(log_fd);
      return "open " + options_.netns_path + ": " + std::strerror(errno);
    }
  }
  log_offset_ = file_size(log_path_);
  const auto t0 = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    if (ns_fd >= 0 && ::setns(ns_fd, CLONE_NEWNET) != 0) ::_exit(126);
    if (::chdir(options_.state_dir.c_str()) != 0) ::_exit(126);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd < 0 || ::dup2(null_fd, 0) < 0) ::_exit(126);
    if (::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) ::_exit(126);
    ::execve(binary.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(log_fd);
  if (ns_fd >= 0) ::close(ns_fd);
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  pid_ = pid;

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
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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
