#pragma once
// What the agent keeps of root: CAP_NET_ADMIN, nothing else.
//
// The agent needs CAP_NET_ADMIN for as long as it runs, whatever the backend: healing recreates a
// deleted interface (rtnetlink, or a new wireguard-go that opens /dev/net/tun), re-adds its
// address and route, and rewrites the peer (WireGuard netlink, or the UAPI socket that wireguard-go
// creates root-owned). Dropping it after the first interface came up would make healing
// impossible, so the honest drop is everything else, once, at start:
//   - the bounding set shrinks to CAP_NET_ADMIN, so a wireguard-go started later (an exec by
//     root) gets CAP_NET_ADMIN and no more;
//   - permitted, effective and inheritable become CAP_NET_ADMIN (or nothing, if it was not held);
//   - no_new_privs: no exec can gain anything back.
// Why not drop further once the userspace interface exists (issue 8 asks for it): every healing
// step still needs root's powers. A deleted interface means a new wireguard-go, whose TUNSETIFF
// creates a device (CAP_NET_ADMIN); its address, MTU, up and the gateway route are rtnetlink
// changes (CAP_NET_ADMIN); the peer is written over /var/run/wireguard/<if>.sock, which
// wireguard-go creates under umask 077 (srwx------ root), so reaching it takes uid 0 or
// CAP_DAC_OVERRIDE. A real drop needs privilege separation: a small parent keeping CAP_NET_ADMIN
// that only applies verified documents (TunnelController), and a child with no capabilities and
// another uid doing HTTPS, JSON and the health endpoint, talking over a socketpair.
// The user id stays what it was: files the agent made (state dir, keys) stay readable to it
// without CAP_DAC_OVERRIDE. Under systemd (portcullis-agent.service) the unit has already reduced
// the bounding set; this call then finds nothing left to drop and succeeds.

#include <cstdint>

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

// See the comment at the top. Errors: EPERM when the bounding set still holds another capability
// and CAP_SETPCAP is gone (the caller should say so and stop rather than run with more).
Status keep_only_net_admin();

}  // namespace portcullis::agent
