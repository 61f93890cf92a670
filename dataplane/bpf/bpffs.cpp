#include "dataplane/bpf/bpffs.h"

#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>

#include <filesystem>

namespace portcullis::bpf {

Result<bool> is_bpffs(const std::string& path) {
  struct statfs st;
  if (::statfs(path.c_str(), &st) != 0) {
    return fail(Error::last_errno("statfs '" + path + "'"));
  }
  return static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC;
}

Result<bool> ensure_bpffs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return fail(Error(ec, "create BPF filesystem directory '" + path + "'"));
  auto is = is_bpffs(path);
  if (!is) return fail(std::move(is.error()));
  if (*is) return false;
  if (::mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0) {
    return fail(Error::last_errno("mount the BPF filesystem on '" + path +
                                  "' (needs CAP_SYS_ADMIN; or mount it: mount -t bpf bpf " + path +
                                  ")"));
  }
  return true;
}

}  // namespace portcullis::bpf
