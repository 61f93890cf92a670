#include "agent/privileges.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>

#include "dataplane/base/unique_fd.h"

namespace portcullis::agent {
namespace {

constexpr std::uint64_t kNetAdmin = std::uint64_t{1} << CAP_NET_ADMIN;

int last_cap() {
  int last = CAP_LAST_CAP;
  std::ifstream("/proc/sys/kernel/cap_last_cap") >> last;
  return last;
}

// capget/capset with the 64-bit (two-word) layout of _LINUX_CAPABILITY_VERSION_3.
Status get_caps(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  if (::syscall(SYS_capget, &header, data) != 0) return fail(Error::last_errno("capget"));
  return {};
}

std::uint64_t join(std::uint32_t lo, std::uint32_t hi) {
  return std::uint64_t{lo} | std::uint64_t{hi} << 32;
}

// `dir` itself, then each regular file directly in it that is not in `keep`, to uid/gid. The
// directory is reached with O_PATH first: root without CAP_DAC_OVERRIDE cannot read a 0700
// directory of another user, but may chown it (CAP_CHOWN) and then read it as its owner.
Status chown_dir(const std::string& dir, uid_t uid, gid_t gid,
                 const std::vector<std::string>& keep) {
  UniqueFd path(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!path) return fail(Error::last_errno("open state directory '" + dir + "'"));
  const std::string owner = std::to_string(uid) + ":" + std::to_string(gid);
  if (::fchownat(path.get(), "", uid, gid, AT_EMPTY_PATH) != 0) {
    return fail(Error::last_errno("chown " + owner + " state directory '" + dir + "'"));
  }
  int fd = ::openat(path.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(Error::last_errno("read state directory '" + dir + "'"));
  std::unique_ptr<DIR, int (*)(DIR*)> d(::fdopendir(fd), ::closedir);
  if (!d) {
    UniqueFd owned(fd);
    return fail(Error::last_errno("read state directory '" + dir + "'"));
  }
  while (dirent* e = ::readdir(d.get())) {
    const std::string name = e->d_name;
    if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d.get()), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      return fail(Error::last_errno("stat '" + dir + "/" + name + "'"));
    }
    if (!S_ISREG(st.st_mode) || (st.st_uid == uid && st.st_gid == gid)) continue;
    if (::fchownat(::dirfd(d.get()), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 &&
        errno != ENOENT) {
      return fail(Error::last_errno("chown " + owner + " '" + dir + "/" + name + "'"));
    }
  }
  return {};
}

}  // namespace

Result<CapabilitySets> read_capabilities() {
  __user_cap_data_struct data[2] = {};
  if (auto s = get_caps(data); !s) return fail(std::move(s.error()));
  CapabilitySets out;
  out.effective = join(data[0].effective, data[1].effective);
  out.permitted = join(data[0].permitted, data[1].permitted);
  out.inheritable = join(data[0].inheritable, data[1].inheritable);
  for (int cap = 0; cap <= last_cap(); ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) out.bounding |= std::uint64_t{1} << cap;
  }
  return out;
}

std::string capability_text(std::uint64_t set) {
  char text[20];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(set));
  return text;
}

Status keep_only_net_admin() {
  __user_cap_data_struct data[2] = {};
  if (auto s = get_caps(data); !s) return s;
  const std::uint64_t others = join(data[0].permitted, data[1].permitted) & ~kNetAdmin;
  // The bounding set first: dropping from it needs CAP_SETPCAP, which the capset below removes.
  for (int cap = 0; cap <= last_cap(); ++cap) {
    if (cap == CAP_NET_ADMIN || ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      // Without CAP_SETPCAP and holding nothing but CAP_NET_ADMIN (an unprivileged user, or
      // ambient CAP_NET_ADMIN): no_new_privs below already keeps an exec from gaining more.
      if (errno == EPERM && others == 0) break;
      return fail(Error::last_errno("drop capability " + std::to_string(cap) +
                                    " from the bounding set (needs CAP_SETPCAP): start the agent "
                                    "as root or with CapabilityBoundingSet=CAP_NET_ADMIN"));
    }
  }
  // CAP_NET_ADMIN is bit 12, in the first word.
  const std::uint32_t keep = data[0].permitted & static_cast<std::uint32_t>(kNetAdmin);
  data[0].permitted = data[0].effective = keep;
  data[0].inheritable &= keep;
  data[1].permitted = data[1].effective = data[1].inheritable = 0;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  if (::syscall(SYS_capset, &header, data) != 0) {
    return fail(Error::last_errno("capset: keep CAP_NET_ADMIN only"));
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return fail(Error::last_errno("prctl(PR_SET_NO_NEW_PRIVS)"));
  }
  return {};
}

Result<UserAccount> find_user(const std::string& name, bool* fell_back) {
  *fell_back = false;
  for (const std::string& candidate : {name, std::string("nobody")}) {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(16384);
    const int err = ::getpwnam_r(candidate.c_str(), &pw, buf.data(), buf.size(), &found);
    if (err != 0 && err != ENOENT && err != ESRCH) {
      return fail_errno(err, "look up user '" + candidate + "'");
    }
    if (found == nullptr) {
      *fell_back = true;
      continue;
    }
    if (pw.pw_uid == 0) {
      return fail_invalid("user '" + candidate +
                          "' is root: give the agent an unprivileged user (the default "
                          "portcullis-agent, created by portcullis-agent.sysusers)");
    }
    return UserAccount{candidate, pw.pw_uid, pw.pw_gid};
  }
  return fail_errno(ENOENT, "neither user '" + name +
                                "' nor 'nobody' exists: create it (systemd-sysusers "
                                "portcullis-agent.conf) or set `user`");
}

Status drop_to_user(const UserAccount& account) {
  if (account.uid == 0) return fail_invalid("refusing to keep uid 0 in the agent's worker");
  const bool was_root = ::geteuid() == 0;
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    return fail(Error::last_errno("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"));
  }
  // The bounding set while CAP_SETPCAP is still held: the uid change below clears it.
  for (int cap = 0; cap <= last_cap(); ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      // Not root and without CAP_SETPCAP: nothing in the bounding set can come back, because
      // no_new_privs below keeps an exec from gaining anything.
      if (errno == EPERM && !was_root) break;
      return fail(Error::last_errno("drop capability " + std::to_string(cap) +
                                    " from the bounding set (needs CAP_SETPCAP: keep it in the "
                                    "unit's CapabilityBoundingSet)"));
    }
  }
  // glibc applies setgroups/setresgid/setresuid to every thread of the process.
  if (was_root || ::getuid() != account.uid || ::getgid() != account.gid) {
    if (::setgroups(0, nullptr) != 0) return fail(Error::last_errno("setgroups(0)"));
    if (::setresgid(account.gid, account.gid, account.gid) != 0) {
      return fail(Error::last_errno("setresgid " + std::to_string(account.gid)));
    }
    if (::setresuid(account.uid, account.uid, account.uid) != 0) {
      return fail(Error::last_errno("setresuid " + std::to_string(account.uid)));
    }
  }
  // Leaving uid 0 cleared permitted and effective already; inheritable (and a start as another
  // user) is cleared here.
  __user_cap_data_struct data[2] = {};
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  if (::syscall(SYS_capset, &header, data) != 0) {
    return fail(Error::last_errno("capset: drop every capability"));
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return fail(Error::last_errno("prctl(PR_SET_NO_NEW_PRIVS)"));
  }
  // Check rather than trust: no way back to root, nothing held.
  uid_t r = 0, e = 0, s = 0;
  if (::getresuid(&r, &e, &s) != 0 || r != account.uid || e != account.uid || s != account.uid ||
      ::setuid(0) == 0) {
    return fail_errno(EPERM, "uid " + std::to_string(account.uid) + " not held after the drop");
  }
  auto caps = read_capabilities();
  if (!caps) return fail(std::move(caps.error()));
  if (caps->effective != 0 || caps->permitted != 0 || caps->inheritable != 0 ||
      (was_root && caps->bounding != 0)) {
    return fail_errno(EPERM, "capabilities left after the drop: CapEff " +
                                 capability_text(caps->effective) + " CapBnd " +
                                 capability_text(caps->bounding));
  }
  return {};
}

Status give_state_dir(const std::string& dir, uid_t uid, gid_t gid,
                      const std::vector<std::string>& keep) {
  return chown_dir(dir, uid, gid, keep);
}

Status take_state_dir(const std::string& dir) {
  auto r = chown_dir(dir, 0, 0, {});
  if (!r && r.error().errno_value() == ENOENT) return {};
  return r;
}

}  // namespace portcullis::agent
