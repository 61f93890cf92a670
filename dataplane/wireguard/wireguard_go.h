#pragma once
// Starting and stopping wireguard-go, the userspace WireGuard for one interface.
//
// ensure_wireguard_go() leaves a running wireguard-go alone (its socket answers get=1) and starts
// one otherwise, in the caller's network namespace (the thread's, so a setns() before the call
// puts the TUN device and its UDP socket in that namespace).
//
// How it is started, and why: `wireguard-go -f <ifname>` (foreground) in a double fork with
// setsid() and stdin/stdout/stderr on /dev/null. The process is then a child of init in a session
// of its own: it survives our daemon's exit or restart, and a Ctrl-C or SIGTERM sent to our process
// group does not reach it, so a daemon restart never drops tunnels. (wireguard-go's own
// daemonizing keeps our session and process group, and its socket's SO_PEERCRED names the
// launcher that already exited, so we could not tell its pid.) With -f, the process that listens
// on the socket is wireguard-go itself, so SO_PEERCRED on a connection gives its pid.
// Under systemd the unit must not kill the whole cgroup on restart (KillMode=process, or run
// wireguard-go in a unit of its own) for tunnels to survive it.
//
// Stopping: SIGTERM to the pid from SO_PEERCRED. wireguard-go then closes its TUN (the link
// disappears) and removes its socket. Deleting the TUN link (`ip link del`) has the same effect:
// wireguard-go sees its TUN go away and exits; both were checked with wireguard-go 0.0.20220316.

#include <sys/types.h>

#include <chrono>
#include <string>

#include "dataplane/base/result.h"

namespace portcullis::wg {

struct WireguardGoOptions {
  std::string ifname;
  std::string binary = "wireguard-go";  // a path, or a name looked up in PATH
  std::string socket_dir = "/var/run/wireguard";
  std::chrono::milliseconds timeout{5000};  // until the new socket answers get=1
};

// Returns the pid of the wireguard-go serving opts.ifname (already running or just started).
Result<pid_t> ensure_wireguard_go(const WireguardGoOptions& opts);

// The pid of the process listening on the interface's UAPI socket, if one answers.
Result<pid_t> wireguard_go_pid(const std::string& ifname,
                               const std::string& socket_dir = "/var/run/wireguard");

// Stops the wireguard-go serving ifname and waits (up to timeout) for it to exit; then SIGKILL.
// Succeeds if none is running.
Status stop_wireguard_go(const std::string& ifname,
                         const std::string& socket_dir = "/var/run/wireguard",
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

}  // namespace portcullis::wg
