#pragma once
// How portcullis-agent gives up root: two processes from one start (issue 8).
//
// Healing needs root's powers for the agent's whole life: a deleted interface means a new
// wireguard-go, whose TUNSETIFF creates a device (CAP_NET_ADMIN); its address, MTU, up and the
// gateway route are rtnetlink changes (CAP_NET_ADMIN); the peer is written over
// /var/run/wireguard/<if>.sock, which wireguard-go creates under umask 077 (srwx------ root), so
// reaching it takes uid 0 or CAP_DAC_OVERRIDE. So main() splits once, as root, after loading the
// configuration and the keys (see main.cpp for the order):
//
//   worker (the original pid: systemd's MainPID)     tunnel keeper (its child)
//   drop_to_user(): no groups, the configured        uid 0, keep_only_net_admin(): CAP_NET_ADMIN
//   user's uid/gid (never 0), every capability set   in effective/permitted/bounding, no_new_privs
//   empty, no_new_privs                              holds the WireGuard private key, rtnetlink
//   HTTPS, JSON, tokens, the health endpoint:        and the TunnelController, nothing else:
//   everything Agent does, through TunnelClient  ──  TunnelKeeper answers apply / remove /
//   socketpair(AF_UNIX, SOCK_SEQPACKET)              observe (tunnel_keeper.h)
//
// The keeper exits when the worker goes (EOF on the socket, PR_SET_PDEATHSIG), leaving the
// interface and wireguard-go up; the worker exits non-zero when the keeper goes, and systemd
// starts both again. Neither process ever gains anything back: no_new_privs on both, and a
// wireguard-go started by the keeper (an exec by root) gets CAP_NET_ADMIN and no more.
//
// The state directory belongs to the worker while it runs (it rewrites enrollment.sealed):
// give_state_dir() hands it and its files over, except the two key files, which the worker never
// reads (it holds the identity key in memory, and the WireGuard key not at all). At the next
// start, root without CAP_DAC_OVERRIDE takes it back first (take_state_dir()).

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/base/result.h"

namespace portcullis::agent {

// Capability bit masks of this process as /proc/self/status shows them (CapEff, CapPrm, CapBnd).
struct CapabilitySets {
  std::uint64_t effective = 0;
  std::uint64_t permitted = 0;
  std::uint64_t inheritable = 0;
  std::uint64_t bounding = 0;
};
Result<CapabilitySets> read_capabilities();
// "0000000000001000", as /proc/<pid>/status prints a set.
std::string capability_text(std::uint64_t set);

// The tunnel keeper's drop: CAP_NET_ADMIN in the bounding set, permitted, effective (and
// inheritable if it was there), nothing else; no_new_privs. Errors: EPERM when the bounding set
// still holds another capability and CAP_SETPCAP is gone (the caller should say so and stop
// rather than run with more). Idempotent.
Status keep_only_net_admin();

struct UserAccount {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};
// The account the worker runs as: `name`, or "nobody" when `name` does not exist (*fell_back
// set). ENOENT when neither exists; EINVAL when it is root (uid 0).
Result<UserAccount> find_user(const std::string& name, bool* fell_back);

// The worker's drop, for good: supplementary groups none, real/effective/saved gid and uid
// `account`'s, the bounding, ambient, inheritable, permitted and effective sets empty,
// no_new_privs. Run it before any thread exists (capability sets and no_new_privs are per
// thread). Started as another user than root, the uid stays and the capabilities still go.
Status drop_to_user(const UserAccount& account);

// Gives `dir` and the regular files directly in it to uid/gid (modes stay), except the files
// named in `keep` (they stay root's). Symbolic links are never followed.
Status give_state_dir(const std::string& dir, uid_t uid, gid_t gid,
                      const std::vector<std::string>& keep);
// Gives `dir` and its files back to root (needs only CAP_CHOWN). Success when `dir` is missing.
Status take_state_dir(const std::string& dir);

}  // namespace portcullis::agent
