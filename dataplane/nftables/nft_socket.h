#pragma once
// A NETLINK_NETFILTER socket for nf_tables: sends a batch in one sendmsg and reads every ack,
// and runs dumps. It acts in the network namespace it was opened in.

#include <linux/netlink.h>

#include <cstdint>
#include <functional>

#include "dataplane/base/result.h"
#include "dataplane/nftables/nft_batch.h"
#include "dataplane/nftables/nft_handles.h"

namespace portcullis::nftables {

class NftSocket {
 public:
  // Opens the socket in the calling thread's network namespace, with extended acks and capped
  // acks (an error reply carries the failing command's header, not the whole command).
  static Result<NftSocket> open();

  // A fresh sequence number base with room for `count` messages.
  std::uint32_t reserve_seq(std::uint32_t count);

  // Sends the finished batch and reads one ack per command. The kernel processes a batch inside
  // sendmsg, so every reply is queued when it returns. On error: the first failing command's
  // errno, named by the batch (set element included, from the extended ack offset), and the
  // kernel's extended-ack message when it gave one. Nothing of the batch was applied then.
  Status send(const NftBatch& batch);

  // Sends a dump request (`build` fills the header for `nft_msg_type` with NLM_F_DUMP) and calls
  // `on_message` for every reply. EINTR when the ruleset changed during the dump (retry).
  Status dump(std::uint16_t nft_msg_type, const std::function<void(nlmsghdr*)>& build,
              const std::function<Status(const nlmsghdr*)>& on_message, const std::string& what);

 private:
  explicit NftSocket(MnlSocketPtr nl) : nl_(std::move(nl)) {}

  Status ensure_buffers(std::size_t send_bytes, std::size_t reply_bytes);

  MnlSocketPtr nl_;
  std::uint32_t seq_ = 0;
  std::size_t sndbuf_ = 0;
  std::size_t rcvbuf_ = 0;
};

}  // namespace portcullis::nftables
