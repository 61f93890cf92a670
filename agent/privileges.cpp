#include "agent/privileges.h"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>

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

}  // namespace portcullis::agent
