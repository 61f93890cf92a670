#pragma once
// The kernel WireGuard generic netlink protocol as pure functions over bytes: building
// WG_CMD_SET_DEVICE messages from a DeviceDelta and parsing WG_CMD_GET_DEVICE dumps into a
// DeviceState. No sockets here (kernel_device.cpp sends and receives), so every byte is testable.
//
// Message layout (include/uapi/linux/wireguard.h), after nlmsghdr and genlmsghdr:
//   WGDEVICE_A_IFNAME, WGDEVICE_A_PRIVATE_KEY, WGDEVICE_A_LISTEN_PORT, WGDEVICE_A_FWMARK,
//   WGDEVICE_A_PEERS { 0 { WGPEER_A_PUBLIC_KEY, WGPEER_A_FLAGS, WGPEER_A_PRESHARED_KEY,
//                          WGPEER_A_ENDPOINT, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
//                          WGPEER_A_ALLOWEDIPS { 0 { FAMILY, IPADDR, CIDR_MASK } ... } } ... }

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/base/result.h"
#include "dataplane/wireguard/device.h"

namespace portcullis::wg::genl {

// The largest message we build: libmnl's MNL_SOCKET_BUFFER_SIZE, min(page size, 8 KiB), the
// limit wireguard-tools uses for WG_CMD_SET_DEVICE.
std::size_t default_message_limit();

// One WG_CMD_SET_DEVICE message (nlmsghdr included, sequence number 0: the sender sets it) and
// the delta peers it carries, as indexes into DeviceDelta::peers: [first_peer, end_peer).
// Holds key material, so its bytes are wiped when it is destroyed.
struct SetDeviceMessage {
  std::vector<std::uint8_t> bytes;
  std::size_t first_peer = 0;
  std::size_t end_peer = 0;
  // The first peer's allowed IPs started in an earlier message (this one carries the rest).
  bool first_peer_continued = false;
  // The last peer's allowed IPs continue in the next message.
  bool last_peer_continues = false;

  SetDeviceMessage() = default;
  SetDeviceMessage(SetDeviceMessage&&) = default;
  SetDeviceMessage& operator=(SetDeviceMessage&&) = default;
  ~SetDeviceMessage();
};

// The WG_CMD_SET_DEVICE messages for a delta, each at most `limit` bytes, in the order they must
// be sent. An empty delta gives no message. Device-wide fields go in the first message only.
// WGDEVICE_F_REPLACE_PEERS is never sent. Fails (EINVAL, naming the peer) on an allowed IP or
// endpoint without an address family, and (EMSGSIZE) when `limit` cannot hold even one peer.
Result<std::vector<SetDeviceMessage>> build_set_device(std::string_view ifname,
                                                       std::uint16_t family_id,
                                                       const DeviceDelta& delta,
                                                       std::size_t limit = default_message_limit());

// A WG_CMD_GET_DEVICE dump request for one device (NLM_F_REQUEST | NLM_F_DUMP, sequence 0).
std::vector<std::uint8_t> build_get_device_request(std::string_view ifname,
                                                   std::uint16_t family_id);

// A CTRL_CMD_GETFAMILY request for a generic netlink family name (NLM_F_REQUEST | NLM_F_ACK).
std::vector<std::uint8_t> build_get_family_request(std::string_view family_name);

// The family id from one CTRL_CMD_NEWFAMILY reply message.
Result<std::uint16_t> parse_family_reply(std::span<const std::uint8_t> message);

// An NLMSG_ERROR message: error 0 is an ACK. `message` is the extended ACK text
// (NLMSGERR_ATTR_MSG) when the kernel sent one.
struct NetlinkAck {
  int error = 0;  // a negative errno, as the kernel sends it
  std::string message;
};
Result<NetlinkAck> parse_ack(std::span<const std::uint8_t> message);

// Parses the reply messages of one WG_CMD_GET_DEVICE dump, concatenated in the order received
// (NLMSG_NOOP is skipped; a trailing NLMSG_DONE is allowed). The kernel may split a peer whose
// allowed IPs do not fit across consecutive messages, repeating its public key; such parts are
// merged. Any malformed, truncated or unexpected input is an error (EPROTO; EINTR for a dump the
// kernel marked NLM_F_DUMP_INTR; the kernel's errno for NLMSG_ERROR), never a crash.
Result<DeviceState> parse_get_device_dump(std::span<const std::uint8_t> stream,
                                          std::uint16_t family_id);

}  // namespace portcullis::wg::genl
