#include "tests/support/netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <sstream>
#include <vector>

namespace portcullis::testing {
namespace {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

bool pid_running(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

std::vector<pid_t> netns_pids(const std::string& name) {
  std::vector<pid_t> pids;
  std::istringstream in(run("ip netns pids " + shell_quote(name) + " 2>/dev/null").out);
  for (pid_t p; in >> p;) pids.push_back(p);
  return pids;
}

void kill_and_delete(const std::string& name) {
  for (int round = 0; round < 50; ++round) {
    auto pids = netns_pids(name);
    if (pids.empty()) break;
    for (pid_t p : pids) ::kill(p, SIGKILL);
    ::usleep(20000);
  }
  run("ip netns del " + shell_quote(name) + " 2>/dev/null");
}

}  // namespace

RunResult run(const std::string& command) {
  RunResult r;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  if (status == -1) return r;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

TestNetns::TestNetns(std::string_view role)
    : name_("pcl-" + std::string(role) + "-" + std::to_string(::getpid())) {
  kill_and_delete(name_);  // a leftover of a crashed run that had our PID
  created_ = ::portcullis::testing::run("ip netns add " + shell_quote(name_)).ok();
  if (created_) run("ip link set lo up");
}

TestNetns::~TestNetns() {
  if (created_) kill_and_delete(name_);
}

RunResult TestNetns::run(const std::string& command) const {
  return ::portcullis::testing::run("ip netns exec " + shell_quote(name_) + " sh -c " +
                                    shell_quote(command));
}

void TestNetns::kill_all() const {
  for (int round = 0; round < 50; ++round) {
    auto pids = netns_pids(name_);
    if (pids.empty()) return;
    for (pid_t p : pids) ::kill(p, SIGKILL);
    ::usleep(20000);
  }
}

NetnsGuard::NetnsGuard(const std::string& netns_path) {
  saved_fd_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  int target = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (saved_fd_ >= 0 && target >= 0) ok_ = ::setns(target, CLONE_NEWNET) == 0;
  if (target >= 0) ::close(target);
}

NetnsGuard::~NetnsGuard() {
  if (saved_fd_ < 0) return;
  if (ok_ && ::setns(saved_fd_, CLONE_NEWNET) != 0) std::abort();  // never run on in a test netns
  ::close(saved_fd_);
}

bool add_veth(const TestNetns& a, const std::string& a_if, const TestNetns& b,
              const std::string& b_if) {
  return a.run("ip link add " + a_if + " type veth peer name " + b_if + " netns " + b.name())
             .ok() &&
         a.run("ip link set " + a_if + " up").ok() && b.run("ip link set " + b_if + " up").ok();
}

int remove_stale_netns(const std::string& socket_dir) {
  int removed = 0;
  if (DIR* d = ::opendir("/run/netns")) {
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      auto dash = name.rfind('-');
      if (!name.starts_with("pcl-") || dash == std::string::npos || dash < 4) continue;
      char* end = nullptr;
      long pid = std::strtol(name.c_str() + dash + 1, &end, 10);
      if (pid <= 0 || *end != '\0' || pid_running(static_cast<pid_t>(pid))) continue;
      stale.push_back(name);
    }
    ::closedir(d);
    for (const auto& name : stale) {
      kill_and_delete(name);
      ++removed;
    }
  }
  if (DIR* d = ::opendir(socket_dir.c_str())) {
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (!name.starts_with("pcl") || !name.ends_with(".sock")) continue;
      std::string path = socket_dir + "/" + name;
      int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 &&
          errno == ECONNREFUSED) {
        stale.push_back(path);
      }
      ::close(fd);
    }
    ::closedir(d);
    for (const auto& path : stale) {
      if (::unlink(path.c_str()) == 0) ++removed;
    }
  }
  return removed;
}

}  // namespace portcullis::testing
