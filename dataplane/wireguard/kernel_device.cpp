#include "dataplane/wireguard/kernel_device.h"

#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/wireguard.h>
#include <net/if.h>
#include <sodium/utils.h>

#include <cstring>
#include <optional>
#include <span>

namespace portcullis::wg {

namespace {

// Large enough for any dump part: the kernel sizes dump messages to the reader's buffer, at most
// 32 KiB (netlink_dump, max_recvmsg_len); a larger message would fail with ENOSPC (MSG_TRUNC).
constexpr std::size_t kReceiveBufferSize = 64 * 1024;
// A dump restarts when the kernel marks it NLM_F_DUMP_INTR (the device changed under it).
constexpr int kDumpAttempts = 8;

std::span<const std::uint8_t> message_bytes(const nlmsghdr* nlh) {
  return {reinterpret_cast<const std::uint8_t*>(nlh), nlh->nlmsg_len};
}

// What a person can do about a kernel refusal that names the device.
std::string hint(int err, const std::string& ifname) {
  switch (err) {
    case ENODEV:
      return " (interface '" + ifname + "' does not exist)";
    case EOPNOTSUPP:
      return " (is '" + ifname + "' a WireGuard interface?)";
    case EPERM:
      return " (needs CAP_NET_ADMIN)";
    default:
      return "";
  }
}

class Wipe {
 public:
  explicit Wipe(std::vector<std::uint8_t>& v) : v_(v) {}
  ~Wipe() { sodium_memzero(v_.data(), v_.size()); }
  Wipe(const Wipe&) = delete;
  Wipe& operator=(const Wipe&) = delete;

 private:
  std::vector<std::uint8_t>& v_;
};

}  // namespace

void MnlSocketCloser::operator()(mnl_socket* s) const {
  if (s) mnl_socket_close(s);
}

KernelWireguardDevice::KernelWireguardDevice(std::string ifname, MnlSocket socket,
                                             std::uint32_t port_id)
    : ifname_(std::move(ifname)),
      socket_(std::move(socket)),
      port_id_(port_id),
      rx_(kReceiveBufferSize) {}

Result<std::unique_ptr<KernelWireguardDevice>> KernelWireguardDevice::open(std::string ifname) {
  const std::string what = "open WireGuard device '" + ifname + "'";
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) {
    return fail_invalid(what + ": an interface name has 1-" + std::to_string(IFNAMSIZ - 1) +
                        " characters");
  }
  MnlSocket sock(mnl_socket_open2(NETLINK_GENERIC, SOCK_CLOEXEC));
  if (!sock) return fail(Error::last_errno(what + ": open a generic netlink socket"));
  if (mnl_socket_bind(sock.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
    return fail(Error::last_errno(what + ": bind the generic netlink socket"));
  }
  // ACKs without the request echoed back, and the kernel's error text when it has one. Both are
  // optional: an older kernel refuses them and still works.
  int one = 1;
  mnl_socket_setsockopt(sock.get(), NETLINK_CAP_ACK, &one, sizeof one);
  mnl_socket_setsockopt(sock.get(), NETLINK_EXT_ACK, &one, sizeof one);
  const std::uint32_t port_id = mnl_socket_get_portid(sock.get());
  std::unique_ptr<KernelWireguardDevice> dev(
      new KernelWireguardDevice(ifname, std::move(sock), port_id));

  auto request = genl::build_get_family_request(WG_GENL_NAME);
  std::optional<std::uint16_t> family;
  bool interrupted = false;
  auto st = dev->transact(
      request,
      [&](const nlmsghdr* nlh) -> Status {
        auto id = genl::parse_family_reply(message_bytes(nlh));
        if (!id) return fail(std::move(id.error()));
        family = *id;
        return {};
      },
      &interrupted);
  if (!st) {
    if (st.error().errno_value() == ENOENT) {
      return fail_errno(ENOENT, what +
                                    ": the kernel has no WireGuard module (no generic netlink "
                                    "family 'wireguard'); load it with modprobe wireguard, or use "
                                    "the userspace backend (wireguard-go)");
    }
    return fail(std::move(st.error()).wrap(what + ": resolve generic netlink family 'wireguard'"));
  }
  if (!family) return fail(Error::protocol(what + ": no reply for family 'wireguard'"));
  dev->family_id_ = *family;

  if (if_nametoindex(dev->ifname_.c_str()) == 0) {
    int err = errno;
    return fail_errno(err, what +
                               ": no such network interface; create it first (a link of type "
                               "wireguard)");
  }
  return dev;
}

template <class OnData>
Status KernelWireguardDevice::transact(std::vector<std::uint8_t>& request, OnData&& on_data,
                                       bool* interrupted) {
  auto* req = reinterpret_cast<nlmsghdr*>(request.data());
  // Sequence numbers start at 1: libmnl and the kernel treat 0 as "not tracked".
  const std::uint32_t seq = ++seq_ == 0 ? ++seq_ : seq_;
  req->nlmsg_seq = seq;
  req->nlmsg_pid = 0;
  const bool dump = (req->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
  ssize_t sent;
  do {
    sent = mnl_socket_sendto(socket_.get(), request.data(), request.size());
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return fail(Error::last_errno("send netlink request"));

  Wipe wipe(rx_);
  // A failure in on_data is kept while the rest of the reply is read, so that no stale dump
  // stays in progress on the socket (the next dump request would get EBUSY).
  std::optional<Error> data_error;
  auto finish = [&]() -> Status {
    if (data_error) return fail(std::move(*data_error));
    return {};
  };
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(socket_.get(), rx_.data(), rx_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::last_errno("receive netlink reply"));
    }
    int rest = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx_.data()); rest > 0;
         nlh = mnl_nlmsg_next(nlh, &rest)) {
      if (!mnl_nlmsg_ok(nlh, rest)) return fail(Error::protocol("truncated netlink reply"));
      // Replies to an earlier request that was abandoned midway carry its sequence number.
      if (nlh->nlmsg_seq != seq) continue;
      if (nlh->nlmsg_pid != 0 && nlh->nlmsg_pid != port_id_) {
        return fail(Error::protocol("netlink reply for port id " + std::to_string(nlh->nlmsg_pid) +
                                    ", ours is " + std::to_string(port_id_)));
      }
      if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) *interrupted = true;
      switch (nlh->nlmsg_type) {
        case NLMSG_NOOP:
          break;
        case NLMSG_ERROR: {
          auto ack = genl::parse_ack(message_bytes(nlh));
          if (!ack) return fail(std::move(ack.error()));
          if (ack->error == 0) return finish();
          return fail_errno(-ack->error, ack->message.empty() ? "" : "kernel: " + ack->message);
        }
        case NLMSG_DONE: {
          if (!dump) return fail(Error::protocol("NLMSG_DONE for a request that is no dump"));
          // An error inside a dump comes as a negative int after NLMSG_DONE.
          if (nlh->nlmsg_len >= NLMSG_HDRLEN + sizeof(int)) {
            int err;
            std::memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof err);
            if (err < 0) return fail_errno(-err, "");
          }
          return finish();
        }
        default:
          if (!data_error) {
            if (auto ok = on_data(nlh); !ok) data_error = std::move(ok.error());
          }
          break;
      }
    }
  }
}

Result<DeviceState> KernelWireguardDevice::read() {
  const std::string what = "read WireGuard device '" + ifname_ + "'";
  std::vector<std::uint8_t> stream;
  Wipe wipe(stream);
  for (int attempt = 0; attempt < kDumpAttempts; ++attempt) {
    sodium_memzero(stream.data(), stream.size());
    stream.clear();
    auto request = genl::build_get_device_request(ifname_, family_id_);
    bool interrupted = false;
    auto st = transact(
        request,
        [&](const nlmsghdr* nlh) -> Status {
          auto bytes = message_bytes(nlh);
          stream.insert(stream.end(), bytes.begin(), bytes.end());
          stream.resize(NLMSG_ALIGN(stream.size()));
          return {};
        },
        &interrupted);
    if (!st) {
      if (st.error().errno_value() == EINTR) continue;
      // A dump fails with EOPNOTSUPP only in its interface lookup.
      std::string h = st.error().errno_value() == EOPNOTSUPP
                          ? " ('" + ifname_ + "' is not a WireGuard interface)"
                          : hint(st.error().errno_value(), ifname_);
      return fail(std::move(st.error()).wrap(what + h));
    }
    if (interrupted) continue;
    auto state = genl::parse_get_device_dump(stream, family_id_);
    if (!state) return fail(std::move(state.error()).wrap(what));
    return state;
  }
  return fail_errno(EINTR, what + ": the device changed during each of " +
                               std::to_string(kDumpAttempts) + " dumps; try again");
}

Status KernelWireguardDevice::apply(const DeviceDelta& delta) {
  if (delta.empty()) return {};
  auto messages = genl::build_set_device(ifname_, family_id_, delta);
  if (!messages) return fail(std::move(messages.error()).wrap("device '" + ifname_ + "'"));
  return send_set_device(delta, *messages);
}

Status KernelWireguardDevice::send_set_device(const DeviceDelta& delta,
                                              std::vector<genl::SetDeviceMessage>& messages) {
  const std::size_t total = delta.peers.size();
  for (auto& m : messages) {
    bool interrupted = false;
    auto st = transact(
        m.bytes,
        [](const nlmsghdr*) -> Status {
          return fail(Error::protocol("unexpected data in the reply to WG_CMD_SET_DEVICE"));
        },
        &interrupted);
    if (st) continue;

    // "device 'pcl0': applied peers 1-4096 of 10000, not applied 4097-10000 starting at peer
    // 'aBcDeFgH…'". Peers of earlier messages are applied; the kernel has no rollback, so of the
    // failed message the peers before the one it refused may be applied too.
    const int err = st.error().errno_value();
    std::string context = "device '" + ifname_ + "': ";
    if (total == 0 || m.first_peer >= total) {
      context += "set device fields";
    } else {
      const std::size_t applied = m.first_peer;
      context += applied == 0 ? "applied no peers of " + std::to_string(total)
                              : "applied peers 1-" + std::to_string(applied) + " of " +
                                    std::to_string(total);
      context += ", not applied " + std::to_string(applied + 1) + "-" + std::to_string(total) +
                 " starting at peer '" + delta.peers[applied].public_key.short_name() + "…'";
      if (m.first_peer_continued) context += " (its first allowed IPs were applied)";
    }
    // EOPNOTSUPP names the interface as not WireGuard only when no earlier message went through
    // (a refused peer flag gives it too).
    if (err != EOPNOTSUPP || &m == &messages.front()) context += hint(err, ifname_);
    if (!st.error().context().empty()) context += " (" + st.error().context() + ")";
    return fail(Error(st.error().code(), context));
  }
  return {};
}

}  // namespace portcullis::wg
