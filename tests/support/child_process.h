#pragma once
// A program run as a child in a network namespace, its stdout and stderr appended to a log file
// and stdin from /dev/null: portcullisd and portcullis-agent in the end-to-end tests and benches.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "dataplane/base/result.h"

namespace portcullis::testing {

struct ChildSpec {
  std::string binary;
  std::vector<std::string> args;  // after argv[0]
  std::vector<std::string> env;   // the whole environment, "NAME=value"
  std::string netns_path;         // empty: the caller's namespace
  std::string log_path;
  std::string cwd = {};  // empty: the caller's
};

// Forks and execs. The child exits 126 if it cannot enter the namespace, change directory or
// redirect, 127 if the exec fails.
Result<pid_t> spawn_child(const ChildSpec& spec);

// SIGTERM, SIGKILL once `grace` has gone by, and reaped: its exit code, 128 + the signal that
// ended it, or -1 if pid is no child of ours.
int stop_child(pid_t pid, std::chrono::milliseconds grace);

}  // namespace portcullis::testing
