#pragma once
// A real portcullisd for end-to-end tests and benchmarks: started as a child process inside a
// network namespace (setns in the child, like `nsenter --net=`; `ip netns exec` would remount
// /sys and hide /sys/fs/bpf pins between restarts), stopped with SIGTERM or killed with SIGKILL.
//
//   PortcullisdProcess d({.binary = PORTCULLISD_BINARY, .netns_path = gw.path(),
//                         .state_dir = dir, .env = {{"PORTCULLIS_WIREGUARD_INTERFACE", "pcld1"}}});
//   std::string err = d.start();          // waits for "portcullisd ready" in its log
//   d.log_field("portcullisd ready", "tls_pin");
//   d.stop();                             // SIGTERM: tunnels and filters stay in the kernel
//
// Its stderr goes to <state_dir>/../portcullisd.log (appended across restarts); the log_* calls
// read the lines of the current run only. The admin socket is <state_dir>/../admin.sock unless
// PORTCULLIS_ADMIN_SOCKET is given.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace portcullis::testing {

struct PortcullisdOptions {
  std::string binary;      // path of portcullisd
  std::string netns_path;  // /run/netns/<name>; empty: the caller's namespace
  std::string state_dir;   // becomes PORTCULLIS_GATEWAY_STATE_DIR and the working directory
  // PORTCULLIS_* settings. The caller's own PORTCULLIS_*, NOTIFY_SOCKET and JOURNAL_STREAM are
  // not passed on.
  std::map<std::string, std::string> env;
};

class PortcullisdProcess {
 public:
  explicit PortcullisdProcess(PortcullisdOptions options);
  ~PortcullisdProcess();  // SIGKILL if still running
  PortcullisdProcess(const PortcullisdProcess&) = delete;
  PortcullisdProcess& operator=(const PortcullisdProcess&) = delete;

  // Starts it and waits until it logs "portcullisd ready". Returns "" or what went wrong (with
  // the tail of its log).
  std::string start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // SIGTERM and wait; the exit status (128+N if killed by signal N), -1 if it was not running.
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // SIGKILL and reap.
  void kill9();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // Time from fork to the "portcullisd ready" line of the last start().
  std::chrono::steady_clock::duration start_to_ready() const { return start_to_ready_; }

  const std::string& admin_socket() const { return admin_socket_; }
  const std::string& log_path() const { return log_path_; }
  // The log of the current (or last) run.
  std::string log() const;
  // The value of `key` on the last line of this run whose message is `message`, unquoted.
  std::optional<std::string> log_field(std::string_view message, std::string_view key) const;

 private:
  PortcullisdOptions options_;
  std::string admin_socket_;
  std::string log_path_;
  std::size_t log_offset_ = 0;
  pid_t pid_ = -1;
  std::chrono::steady_clock::duration start_to_ready_{};
};

// The value of key=value in one log line (quoted values unescaped).
std::optional<std::string> log_line_field(std::string_view line, std::string_view key);

// Removes the eBPF pins a test daemon left for its interface (/sys/fs/bpf/portcullis/<ifname>),
// and /sys/fs/bpf/portcullis itself once nothing else is pinned there.
void remove_bpf_pins(const std::string& ifname);

}  // namespace portcullis::testing
