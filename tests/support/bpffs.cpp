#include "tests/support/bpffs.h"

#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace portcullis::testing {

PrivateBpffs::PrivateBpffs() {
  char dir[] = "/tmp/pcl-bpffs-XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    error_ = std::string("mkdtemp /tmp/pcl-bpffs-XXXXXX: ") + std::strerror(errno);
    return;
  }
  path_ = dir;
  if (::mount("bpf", dir, "bpf", 0, nullptr) != 0) {
    error_ = "mount -t bpf bpf " + path_ + ": " + std::strerror(errno);
    return;
  }
  mounted_ = true;
}

PrivateBpffs::~PrivateBpffs() {
  if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  if (!path_.empty()) ::rmdir(path_.c_str());
}

}  // namespace portcullis::testing
