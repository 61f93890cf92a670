#pragma once
// A private bpffs for one test, so the host's /sys/fs/bpf is never touched (needs root):
//
//   PrivateBpffs bpffs;                       mkdtemp /tmp/pcl-bpffs-XXXXXX; mount -t bpf bpf there
//   ASSERT_TRUE(bpffs.ok()) << bpffs.error();
//   options.pin_root = bpffs.path() + "/portcullis";
//
// The destructor unmounts it (MNT_DETACH: every pin the test left goes with it, even after a
// failure) and removes the directory.

#include <string>

namespace portcullis::testing {

class PrivateBpffs {
 public:
  PrivateBpffs();
  ~PrivateBpffs();
  PrivateBpffs(const PrivateBpffs&) = delete;
  PrivateBpffs& operator=(const PrivateBpffs&) = delete;

  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }  // what failed, when !ok()
  const std::string& path() const { return path_; }    // the mount point

 private:
  std::string path_;
  std::string error_;
  bool mounted_ = false;
};

}  // namespace portcullis::testing
