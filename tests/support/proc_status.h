#pragma once
// The fields of /proc/<pid>/status, for tests that check what a process runs as:
//   proc_status(pid)["Uid"]     "65534\t65534\t65534\t65534"
//   proc_status(pid)["CapEff"]  "0000000000001000"
// Empty when the process is gone.

#include <sys/types.h>

#include <fstream>
#include <map>
#include <string>

namespace portcullis::testing {

inline std::map<std::string, std::string> proc_status(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::map<std::string, std::string> out;
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    out[line.substr(0, colon)] = value;
  }
  return out;
}

}  // namespace portcullis::testing
