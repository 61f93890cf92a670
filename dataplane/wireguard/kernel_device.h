#pragma once
// The kernel WireGuard backend: the `wireguard` generic netlink family through libmnl.
// Messages are built and parsed by genl_messages.h; this class owns the socket, numbers the
// requests, and reads every reply (dump parts until NLMSG_DONE, one ACK per SET_DEVICE message).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/base/result.h"
#include "dataplane/wireguard/device.h"
#include "dataplane/wireguard/genl_messages.h"

struct mnl_socket;
struct nlmsghdr;

namespace portcullis::wg {

struct MnlSocketCloser {
  void operator()(mnl_socket* s) const;
};
using MnlSocket = std::unique_ptr<mnl_socket, MnlSocketCloser>;

class KernelWireguardDevice final : public WireguardDevice {
 public:
  // Resolves the `wireguard` family (ENOENT: the kernel has no WireGuard module) and checks that
  // the interface exists (ENODEV). Needs CAP_NET_ADMIN to apply, and to read private keys.
  static Result<std::unique_ptr<KernelWireguardDevice>> open(std::string ifname);

  const std::string& ifname() const override { return ifname_; }
  Result<DeviceState> read() override;
  Status apply(const DeviceDelta& delta) override;

  // Sends the SET_DEVICE messages that genl::build_set_device made for `delta`, one
  // at a time, each ACKed before the next. apply() is build_set_device + this; it is public so a
  // test can send a crafted sequence through the same path. On failure the error says which
  // peers were applied; the kernel does not roll back, so peers of the failed message before the
  // one it refused may be applied too (a read() shows the truth).
  Status send_set_device(const DeviceDelta& delta, std::vector<genl::SetDeviceMessage>& messages);

  std::uint16_t family_id() const { return family_id_; }

 private:
  KernelWireguardDevice(std::string ifname, MnlSocket socket, std::uint32_t port_id);

  // Sends one request and hands each reply data message to on_data until the reply ends: the ACK
  // (or error) for a plain request, NLMSG_DONE for a dump. *interrupted is set when a dump part
  // carries NLM_F_DUMP_INTR (the dump is still read to its end).
  template <class OnData>
  Status transact(std::vector<std::uint8_t>& request, OnData&& on_data, bool* interrupted);

  std::string ifname_;
  MnlSocket socket_;
  std::uint32_t port_id_ = 0;
  std::uint32_t seq_ = 0;
  std::uint16_t family_id_ = 0;
  std::vector<std::uint8_t> rx_;  // receive buffer; wiped after each use (it holds keys)
};

}  // namespace portcullis::wg
