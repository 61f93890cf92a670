#include "dataplane/wireguard/wireguard_go.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "dataplane/base/unique_fd.h"
#include "dataplane/wireguard/uapi_device.h"

extern char** environ;

namespace portcullis::wg {
namespace {

using SteadyClock = std::chrono::steady_clock;

std::string socket_path(const std::string& dir, const std::string& ifname) {
  return dir + "/" + ifname + ".sock";
}

// A pid is alive if /proc knows it and it is not a zombie.
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

void sleep_ms(int ms) { ::poll(nullptr, 0, ms); }

// Whether wireguard-go for ifname answers get=1 within the timeout.
bool answers(const std::string& ifname, const std::string& dir, std::chrono::milliseconds timeout) {
  UapiOptions o;
  o.timeout = timeout;
  auto dev = UapiWireguardDevice::open(ifname, dir, o);
  return dev && (*dev)->read().has_value();
}

Result<std::string> resolve_binary(const std::string& binary) {
  if (binary.find('/') != std::string::npos) {
    if (::access(binary.c_str(), X_OK) != 0) {
      return fail(Error::last_errno("wireguard-go binary '" + binary + "' is not executable"));
    }
    return binary;
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + binary;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return fail_errno(ENOENT, "'" + binary + "' not found in PATH: install wireguard-go " +
                                "(Debian package wireguard-go) or give its path");
}

// Messages from the forked children to the parent on a close-on-exec pipe.
struct SpawnMessage {
  std::int32_t kind;  // kGrandchildPid, kExecFailed, kForkFailed
  std::int32_t value;
};
constexpr std::int32_t kGrandchildPid = 1, kExecFailed = 2, kForkFailed = 3;

// Runs `argv` as a grandchild in a new session, detached from us: returns its pid once exec()
// succeeded. Between fork() and exec() only async-signal-safe calls (we may have threads).
Result<pid_t> spawn_detached(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // wireguard-go takes its TUN and socket from these when they are set: never pass ours on.
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) {
    std::string_view v(*e);
    if (v.starts_with("WG_TUN_FD=") || v.starts_with("WG_UAPI_FD=") ||
        v.starts_with("WG_PROCESS_FOREGROUND=")) {
      continue;
    }
    envp.push_back(*e);
  }
  envp.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail(Error::last_errno("create a pipe"));
  UniqueFd rd(fds[0]), wr(fds[1]);

  pid_t child = ::fork();
  if (child < 0) return fail(Error::last_errno("fork to start wireguard-go"));
  if (child == 0) {
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) {
      SpawnMessage m{grandchild > 0 ? kGrandchildPid : kForkFailed,
                     grandchild > 0 ? grandchild : errno};
      (void)!::write(wr.get(), &m, sizeof m);
      ::_exit(0);
    }
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    // Every other inherited descriptor closes on exec (the pipe already does).
    ::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGPIPE, SIGHUP, SIGINT, SIGTERM, SIGCHLD}) ::signal(sig, SIG_DFL);
    ::execve(argv[0], argv.data(), envp.data());
    SpawnMessage m{kExecFailed, errno};
    (void)!::write(wr.get(), &m, sizeof m);
    ::_exit(127);
  }
  wr.reset();
  int status;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  pid_t pid = -1;
  SpawnMessage m;
  for (;;) {
    ssize_t n = ::read(rd.get(), &m, sizeof m);
    if (n < 0 && errno == EINTR) continue;
    if (n != sizeof m) break;  // EOF: the grandchild exec()ed (or never existed)
    if (m.kind == kGrandchildPid) pid = m.value;
    if (m.kind == kForkFailed) return fail_errno(m.value, "fork to start wireguard-go");
    if (m.kind == kExecFailed) return fail_errno(m.value, "exec " + args[0]);
  }
  if (pid <= 0) return fail_errno(ECHILD, "start " + args[0] + ": the launcher died");
  return pid;
}

}  // namespace

Result<pid_t> wireguard_go_pid(const std::string& ifname, const std::string& socket_dir) {
  auto path = socket_path(socket_dir, ifname);
  auto fd = connect_uapi_socket(ifname, path, SteadyClock::now() + std::chrono::seconds(1));
  if (!fd) return fail(std::move(fd.error()));
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd->get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return fail(Error::last_errno("read the peer credentials of " + path));
  }
  return cred.pid;
}

Result<pid_t> ensure_wireguard_go(const WireguardGoOptions& opts) {
  if (answers(opts.ifname, opts.socket_dir, opts.timeout)) {
    return wireguard_go_pid(opts.ifname, opts.socket_dir);
  }
  auto binary = resolve_binary(opts.binary);
  if (!binary) return fail(std::move(binary.error()));
  auto pid = spawn_detached({*binary, "-f", opts.ifname});
  if (!pid)
    return fail(std::move(pid.error()).wrap("start wireguard-go for '" + opts.ifname + "'"));

  auto deadline = SteadyClock::now() + opts.timeout;
  for (;;) {
    if (!alive(*pid)) {
      return fail_errno(ECHILD, "wireguard-go for '" + opts.ifname + "' (pid " +
                                    std::to_string(*pid) + ") exited during startup: run `" +
                                    *binary + " -f " + opts.ifname +
                                    "` by hand to see why (interface name taken? no "
                                    "/dev/net/tun? not root?)");
    }
    if (answers(opts.ifname, opts.socket_dir, std::chrono::milliseconds(500))) {
      auto listener = wireguard_go_pid(opts.ifname, opts.socket_dir);
      return listener ? *listener : *pid;
    }
    if (SteadyClock::now() >= deadline) {
      ::kill(*pid, SIGTERM);
      return fail_errno(ETIMEDOUT, "wireguard-go for '" + opts.ifname + "' (pid " +
                                       std::to_string(*pid) + ") did not answer on " +
                                       socket_path(opts.socket_dir, opts.ifname) + " within " +
                                       std::to_string(opts.timeout.count()) + " ms; stopped it");
    }
    sleep_ms(10);
  }
}

Status stop_wireguard_go(const std::string& ifname, const std::string& socket_dir,
                         std::chrono::milliseconds timeout) {
  auto path = socket_path(socket_dir, ifname);
  auto pid = wireguard_go_pid(ifname, socket_dir);
  if (!pid) {
    int err = pid.error().errno_value();
    if (err == ENOENT) return {};
    if (err == ECONNREFUSED) {
      // A wireguard-go killed with SIGKILL leaves its socket behind; nobody listens on it.
      ::unlink(path.c_str());
      return {};
    }
    return fail(std::move(pid.error()).wrap("stop wireguard-go for '" + ifname + "'"));
  }
  if (::kill(*pid, SIGTERM) != 0) {
    return fail(Error::last_errno("stop wireguard-go for '" + ifname + "': pid " +
                                  std::to_string(*pid) +
                                  " that created the socket is gone (a daemonized wireguard-go?); "
                                  "delete the interface to stop it"));
  }
  auto deadline = SteadyClock::now() + timeout;
  while (alive(*pid) && SteadyClock::now() < deadline) sleep_ms(10);
  if (alive(*pid)) {
    ::kill(*pid, SIGKILL);
    while (alive(*pid) && SteadyClock::now() < deadline + std::chrono::seconds(1)) sleep_ms(10);
    ::unlink(path.c_str());
    if (alive(*pid)) {
      return fail_errno(ETIMEDOUT, "stop wireguard-go for '" + ifname + "': pid " +
                                       std::to_string(*pid) + " survived SIGKILL");
    }
  }
  return {};
}

}  // namespace portcullis::wg
