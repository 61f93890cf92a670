#pragma once
// Choosing the backend for an existing WireGuard interface, as wireguard-tools' ipc.c does: an
// interface with a UAPI socket is userspace (wireguard-go); otherwise it is the kernel's.

#include <memory>
#include <string>
#include <string_view>

#include "dataplane/base/result.h"
#include "dataplane/wireguard/device.h"

namespace portcullis::wg {

enum class Backend { kAuto, kKernel, kUserspace };

inline constexpr const char* kDefaultUapiSocketDir = "/var/run/wireguard";

// "auto", "kernel", "userspace".
Result<Backend> parse_backend(std::string_view text);
const char* backend_name(Backend b);

struct OpenOptions {
  Backend backend = Backend::kAuto;
  std::string uapi_socket_dir = kDefaultUapiSocketDir;
};

// The backend `auto` resolves to for this interface: userspace if <socket_dir>/<ifname>.sock
// exists, else kernel.
Backend resolve_backend(const std::string& ifname, const OpenOptions& options);

Result<std::unique_ptr<WireguardDevice>> open_device(const std::string& ifname,
                                                     const OpenOptions& options = {});

}  // namespace portcullis::wg
