#pragma once
// The BPF filesystem our pins live on. systemd mounts it at /sys/fs/bpf; a fresh mount namespace
// (`ip netns exec` remounts /sys, containers) may not have it.

#include <string>

#include "dataplane/base/result.h"

namespace portcullis::bpf {

// True if `path` is the root of, or inside, a mounted bpf filesystem (statfs: BPF_FS_MAGIC).
Result<bool> is_bpffs(const std::string& path);

// Mounts a bpf filesystem at `path` (mode 0700) unless one is there already. Creates the
// directory if missing. Returns true if it mounted one.
Result<bool> ensure_bpffs(const std::string& path = "/sys/fs/bpf");

}  // namespace portcullis::bpf
