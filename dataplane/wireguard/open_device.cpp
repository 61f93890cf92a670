#include "dataplane/wireguard/open_device.h"

#include <sys/stat.h>

#include "dataplane/wireguard/kernel_device.h"
#include "dataplane/wireguard/uapi_device.h"

namespace portcullis::wg {

Result<Backend> parse_backend(std::string_view text) {
  if (text == "auto") return Backend::kAuto;
  if (text == "kernel") return Backend::kKernel;
  if (text == "userspace") return Backend::kUserspace;
  return fail_invalid("unknown WireGuard backend '" + std::string(text) +
                      "': use auto, kernel or userspace");
}

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::kAuto:
      return "auto";
    case Backend::kKernel:
      return "kernel";
    case Backend::kUserspace:
      return "userspace";
  }
  return "?";
}

Backend resolve_backend(const std::string& ifname, const OpenOptions& options) {
  if (options.backend != Backend::kAuto) return options.backend;
  struct stat st;
  std::string sock = options.uapi_socket_dir + "/" + ifname + ".sock";
  if (::stat(sock.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return Backend::kUserspace;
  return Backend::kKernel;
}

Result<std::unique_ptr<WireguardDevice>> open_device(const std::string& ifname,
                                                     const OpenOptions& options) {
  if (resolve_backend(ifname, options) == Backend::kUserspace) {
    auto d = UapiWireguardDevice::open(ifname, options.uapi_socket_dir);
    if (!d) return fail(std::move(d.error()));
    return std::unique_ptr<WireguardDevice>(std::move(*d));
  }
  auto d = KernelWireguardDevice::open(ifname);
  if (!d) return fail(std::move(d.error()));
  return std::unique_ptr<WireguardDevice>(std::move(*d));
}

}  // namespace portcullis::wg
