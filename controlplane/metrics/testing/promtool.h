#pragma once
// For tests: runs `promtool check metrics` (Debian package prometheus) on an exposition.

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <string>

namespace portcullis::metrics::testing {

struct PromtoolResult {
  bool ok = false;
  std::string output;  // what promtool printed (parse errors and lint problems)
};

// Nothing when promtool is not installed.
inline std::optional<PromtoolResult> promtool_check(const std::string& exposition) {
  if (access("/usr/bin/promtool", X_OK) != 0) return std::nullopt;
  char path[] = "/tmp/pcl-metrics-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return PromtoolResult{false, "mkstemp failed"};
  bool written =
      write(fd, exposition.data(), exposition.size()) == static_cast<ssize_t>(exposition.size());
  close(fd);
  PromtoolResult r;
  if (written) {
    std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
    if (FILE* p = popen(cmd.c_str(), "r")) {
      char buf[512];
      while (fgets(buf, sizeof buf, p)) r.output += buf;
      int status = pclose(p);
      r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
  }
  unlink(path);
  return r;
}

}  // namespace portcullis::metrics::testing
