#pragma once
// The userspace WireGuard backend: a WireguardDevice that speaks the cross-platform UAPI
// (uapi_protocol.h) to wireguard-go on <socket_dir>/<ifname>.sock.
//
// Each read() and each transaction of apply() opens a fresh connection, as wg(8) does, and is
// bounded by a deadline: a hung wireguard-go makes the call fail with ETIMEDOUT, never hang.
// A large delta is sent as several set=1 transactions (format_set); on failure the error names
// the first peer not applied and the applied range, as device.h describes. wireguard-go applies a
// transaction line by line, so the failing transaction itself may have applied some of its peers
// before the bad line; the error says so.

#include <chrono>
#include <memory>
#include <string>

#include "dataplane/base/result.h"
#include "dataplane/base/unique_fd.h"
#include "dataplane/wireguard/device.h"
#include "dataplane/wireguard/uapi_protocol.h"

namespace portcullis::wg {

struct UapiOptions {
  std::chrono::milliseconds timeout{5000};  // per connection: connect, send, read the reply
  std::size_t max_transaction_bytes = uapi::kDefaultMaxTransactionBytes;
  std::size_t max_reply_bytes = uapi::kDefaultMaxReplyBytes;
};

class UapiWireguardDevice final : public WireguardDevice {
 public:
  // Fails if the socket does not exist or does not answer get=1 (wireguard-go not running).
  static Result<std::unique_ptr<UapiWireguardDevice>> open(
      std::string ifname, std::string socket_dir = "/var/run/wireguard", UapiOptions options = {});

  const std::string& ifname() const override { return ifname_; }
  const std::string& socket_path() const { return socket_path_; }

  Result<DeviceState> read() override;
  Status apply(const DeviceDelta& delta) override;

 private:
  UapiWireguardDevice(std::string ifname, std::string socket_path, UapiOptions options)
      : ifname_(std::move(ifname)), socket_path_(std::move(socket_path)), options_(options) {}

  // Connects, sends `request`, reads until a complete reply (or EOF / deadline).
  Result<std::string> exchange(std::string_view request, std::string_view what);

  std::string ifname_;
  std::string socket_path_;
  UapiOptions options_;
};

// Connects to a UAPI socket with a deadline. Shared with wireguard_go.cpp.
Result<UniqueFd> connect_uapi_socket(const std::string& ifname, const std::string& socket_path,
                                     std::chrono::steady_clock::time_point deadline);

}  // namespace portcullis::wg
