#include "tests/support/child_process.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "dataplane/base/unique_fd.h"

namespace portcullis::testing {

Result<pid_t> spawn_child(const ChildSpec& spec) {
  // Everything the child needs is prepared before fork(): after it only async-signal-safe calls.
  std::vector<std::string> args = {spec.binary};
  args.insert(args.end(), spec.args.begin(), spec.args.end());
  std::vector<std::string> env = spec.env;
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  UniqueFd log(::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log) return fail(Error::last_errno("open " + spec.log_path));
  UniqueFd ns;
  if (!spec.netns_path.empty()) {
    ns = UniqueFd(::open(spec.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) return fail(Error::last_errno("open " + spec.netns_path));
  }
  UniqueFd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null_in) return fail(Error::last_errno("open /dev/null"));

  const pid_t pid = ::fork();
  if (pid < 0) return fail(Error::last_errno("fork for " + spec.binary));
  if (pid == 0) {
    if (ns && ::setns(ns.get(), CLONE_NEWNET) != 0) ::_exit(126);
    if (!spec.cwd.empty() && ::chdir(spec.cwd.c_str()) != 0) ::_exit(126);
    if (::dup2(null_in.get(), 0) < 0) ::_exit(126);
    if (::dup2(log.get(), 1) < 0 || ::dup2(log.get(), 2) < 0) ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

int stop_child(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return -1;
  ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r < 0) return -1;
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      if (::waitpid(pid, &status, 0) != pid) return -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace portcullis::testing
