#include "dataplane/nftables/nft_socket.h"

#include <libnftnl/common.h>
#include <linux/netfilter/nfnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "dataplane/nftables/ruleset.h"

namespace portcullis::nftables {

namespace {

// Room for one reply to each command: a capped error carries the command header plus the
// extended-ack message and offset.
constexpr std::size_t kReplyBytesPerCommand = 512;
constexpr std::size_t kRecvBufferBytes = 256 * 1024;

// SO_*BUFFORCE needs CAP_NET_ADMIN, which we have when we may program nf_tables at all; the
// plain option (capped by net.core.*mem_max) is the fallback.
bool set_buffer(int fd, int force_opt, int opt, std::size_t bytes) {
  const int v = static_cast<int>(std::min<std::size_t>(bytes, 1u << 30));
  if (setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof(v)) == 0) return true;
  return setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v)) == 0;
}

struct ExtAck {
  std::string msg;
  std::uint32_t offset = 0;
};

ExtAck parse_ext_ack(const nlmsghdr* nlh) {
  ExtAck ack;
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return ack;
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  std::size_t off = sizeof(nlmsgerr);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) off += err->msg.nlmsg_len - sizeof(nlmsghdr);
  for_each_attr(nlh, off, [&ack](const nlattr* attr) {
    switch (mnl_attr_get_type(attr)) {
      case NLMSGERR_ATTR_MSG:
        if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0) ack.msg = mnl_attr_get_str(attr);
        break;
      case NLMSGERR_ATTR_OFFS:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) >= 0) ack.offset = mnl_attr_get_u32(attr);
        break;
      default:
        break;
    }
  });
  return ack;
}

}  // namespace

Result<NftSocket> NftSocket::open() {
  MnlSocketPtr nl(mnl_socket_open(NETLINK_NETFILTER));
  if (!nl) return fail(Error::last_errno("open nf_tables netlink socket"));
  if (mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
    return fail(Error::last_errno("bind nf_tables netlink socket"));
  }
  int on = 1;
  // Both are best effort: without them errors lose their detail, not their errno.
  mnl_socket_setsockopt(nl.get(), NETLINK_EXT_ACK, &on, sizeof(on));
  mnl_socket_setsockopt(nl.get(), NETLINK_CAP_ACK, &on, sizeof(on));
  NftSocket s(std::move(nl));
  s.seq_ = static_cast<std::uint32_t>(std::time(nullptr));
  return s;
}

std::uint32_t NftSocket::reserve_seq(std::uint32_t count) {
  const std::uint32_t first = seq_;
  seq_ += count;
  return first;
}

Status NftSocket::ensure_buffers(std::size_t send_bytes, std::size_t reply_bytes) {
  const int fd = mnl_socket_get_fd(nl_.get());
  // netlink_sendmsg refuses a message larger than the send buffer (EMSGSIZE).
  if (send_bytes + 4096 > sndbuf_) {
    if (!set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, send_bytes + 4096)) {
      return fail(Error::last_errno("size the nf_tables send buffer to " +
                                    std::to_string(send_bytes) + " bytes"));
    }
    sndbuf_ = send_bytes + 4096;
  }
  // A reply that does not fit is lost (ENOBUFS), and with it our knowledge of the outcome.
  if (reply_bytes > rcvbuf_) {
    if (!set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, reply_bytes)) {
      return fail(Error::last_errno("size the nf_tables receive buffer"));
    }
    rcvbuf_ = reply_bytes;
  }
  return {};
}

Status NftSocket::send(const NftBatch& batch) {
  const auto& bytes = batch.bytes();
  const std::size_t commands = batch.command_count();
  if (auto ok = ensure_buffers(bytes.size(),
                               std::max(kRecvBufferBytes, commands * kReplyBytesPerCommand));
      !ok) {
    return ok;
  }
  if (mnl_socket_sendto(nl_.get(), bytes.data(), bytes.size()) < 0) {
    return fail(
        Error::last_errno("send nf_tables batch of " + std::to_string(commands) + " command(s)"));
  }

  const int fd = mnl_socket_get_fd(nl_.get());
  std::vector<std::uint8_t> buf(kRecvBufferBytes);
  std::size_t acks = 0;
  tl::unexpected<Error> first_error(Error{});
  bool failed = false;
  while (acks < commands) {
    const ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && failed) break;  // a rejected batch may not ack every command
      if (errno == EAGAIN) {
        return fail_errno(EPROTO, "nf_tables batch: " + std::to_string(acks) + " of " +
                                      std::to_string(commands) +
                                      " acks arrived; state unknown, read it back");
      }
      return fail(Error::last_errno("read nf_tables batch acks"));
    }
    auto len = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_type != NLMSG_ERROR) continue;
      ++acks;
      const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      if (err->error == 0 || failed) continue;
      const ExtAck ext = parse_ext_ack(nlh);
      std::string what = batch.describe(nlh->nlmsg_seq, ext.offset);
      if (what.empty()) what = "commit nf_tables batch";
      if (!ext.msg.empty()) what += " (kernel: " + ext.msg + ")";
      first_error = fail_errno(-err->error, "nf_tables batch rejected, nothing applied: " + what);
      failed = true;
    }
  }
  if (failed) return first_error;
  return {};
}

Status NftSocket::dump(std::uint16_t nft_msg_type, const std::function<void(nlmsghdr*)>& build,
                       const std::function<Status(const nlmsghdr*)>& on_message,
                       const std::string& what) {
  if (auto ok = ensure_buffers(0, kRecvBufferBytes); !ok) return ok;
  std::vector<std::uint8_t> buf(kRecvBufferBytes);
  const std::uint32_t seq = reserve_seq(1);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(reinterpret_cast<char*>(buf.data()), nft_msg_type, kFamily,
                                        NLM_F_DUMP, seq);
  build(nlh);
  if (mnl_socket_sendto(nl_.get(), nlh, nlh->nlmsg_len) < 0) {
    return fail(Error::last_errno(what + ": send dump request"));
  }
  const std::uint32_t portid = mnl_socket_get_portid(nl_.get());
  struct State {
    const std::function<Status(const nlmsghdr*)>* on_message;
    Status status;
    bool interrupted = false;
  } state{&on_message, {}, false};
  while (true) {
    const ssize_t n = mnl_socket_recvfrom(nl_.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::last_errno(what + ": read dump"));
    }
    const int ret = mnl_cb_run(
        buf.data(), static_cast<std::size_t>(n), seq, portid,
        [](const nlmsghdr* m, void* data) -> int {
          auto* st = static_cast<State*>(data);
          if (m->nlmsg_flags & NLM_F_DUMP_INTR) st->interrupted = true;
          if (!st->status) return MNL_CB_OK;  // drain, keep the first error
          st->status = (*st->on_message)(m);
          return MNL_CB_OK;
        },
        &state);
    if (ret < 0) return fail(Error::last_errno(what));
    if (ret == MNL_CB_STOP) break;
  }
  if (state.interrupted) return fail_errno(EINTR, what + ": ruleset changed during the dump");
  return state.status;
}

}  // namespace portcullis::nftables
