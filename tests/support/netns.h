#pragma once
// Support for tests that need real network namespaces (label `netns`, run as root).
//
//   run("ip -br link")                  a shell command: exit status and stdout (stderr passes
//                                       through to the test log)
//   TestNetns gw("gw");                 `ip netns add pcl-gw-<pid>`; the destructor kills every
//                                       process left in it (`ip netns pids`) and deletes it
//   gw.run("ip addr")                   the same command run inside it (`ip netns exec`)
//   NetnsGuard in(gw);                  setns() this thread into it until the guard goes away
//   add_veth(gw, "veth0", agent, "veth0") a veth pair between two namespaces, both ends up
//
// Names carry the test's PID, so parallel runs never collide; `pcl_netns_cleanup` (run by ctest
// as a fixture before and after the netns tests) deletes namespaces left by a PID that is gone.

#include <sys/types.h>

#include <string>
#include <string_view>

namespace portcullis::testing {

struct RunResult {
  int status = -1;  // exit status; 128+N if killed by signal N; -1 if it could not start
  std::string out;  // stdout
  bool ok() const { return status == 0; }
};

// Runs `command` with /bin/sh -c.
RunResult run(const std::string& command);

class TestNetns {
 public:
  // Creates pcl-<role>-<pid>. Check ok(): a test without root cannot create namespaces.
  explicit TestNetns(std::string_view role);
  ~TestNetns();
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  bool ok() const { return created_; }
  const std::string& name() const { return name_; }
  // /run/netns/<name>
  std::string path() const { return "/run/netns/" + name_; }

  // `ip netns exec <name> sh -c <command>`.
  RunResult run(const std::string& command) const;

  // Kills every process in the namespace (SIGKILL) and waits for them to go.
  void kill_all() const;

 private:
  std::string name_;
  bool created_ = false;
};

// Moves the calling thread into a namespace; restores the previous one when destroyed.
// Everything the thread creates meanwhile (sockets, forked children) lives in that namespace.
class NetnsGuard {
 public:
  explicit NetnsGuard(const TestNetns& ns) : NetnsGuard(ns.path()) {}
  explicit NetnsGuard(const std::string& netns_path);
  ~NetnsGuard();
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;
  bool ok() const { return ok_; }

 private:
  int saved_fd_ = -1;
  bool ok_ = false;
};

// Creates a veth pair, `a_if` in `a` and `b_if` in `b`, and sets both ends up.
bool add_veth(const TestNetns& a, const std::string& a_if, const TestNetns& b,
              const std::string& b_if);

// Deletes pcl-<role>-<pid> namespaces (killing their processes) whose <pid> is no longer
// running, and pcl*.sock sockets in socket_dir that nobody listens on. Returns how many it removed.
int remove_stale_netns(const std::string& socket_dir = "/var/run/wireguard");

}  // namespace portcullis::testing
