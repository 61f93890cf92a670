#pragma once
// One nfnetlink transaction as bytes: NFNL_MSG_BATCH_BEGIN, the commands, NFNL_MSG_BATCH_END.
// The kernel applies all commands or none. Every command asks for an ack (NLM_F_ACK), and the
// batch remembers what each command (and each set element inside it) was, so an error reply
// (sequence number + extended-ack attribute offset) can be named precisely.
//
// Pure: building a batch touches no socket, so unit tests parse the bytes back.

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace portcullis::nftables {

class NftBatch {
 public:
  // The largest command we build. Set-element lists are split below this: netlink attribute
  // lengths are 16 bits, so one element list cannot exceed 64 KiB.
  static constexpr std::size_t kMaxMessageBytes = 64 * 1024;

  // Sequence numbers run from first_seq (the batch begin) upwards.
  explicit NftBatch(std::uint32_t first_seq);

  // Appends one command of type NFT_MSG_* for `family` with NLM_F_ACK | extra_flags.
  // `fill` writes the payload (nftnl_*_nlmsg_build_payload) into the message; it must stay
  // below kMaxMessageBytes. `what` names the command for error messages.
  void add(std::uint16_t nft_msg_type, std::uint16_t family, std::uint16_t extra_flags,
           std::string what, const std::function<void(nlmsghdr*)>& fill);

  // Names the parts of the last command by byte offset (from its nlmsghdr): each element nest of
  // a set-element list, so an extended ack pointing into it names the element.
  void name_parts(std::vector<std::pair<std::uint32_t, std::string>> parts);

  // Closes the batch (appends BATCH_END). No add() after this.
  void finish();

  const std::vector<std::uint8_t>& bytes() const { return buf_; }
  std::size_t command_count() const { return commands_.size(); }
  std::uint32_t first_seq() const { return first_seq_; }

  // "add 120 elements to set 'agent-ports'"; with an extended-ack offset, the element inside.
  // Empty when seq is not one of our commands.
  std::string describe(std::uint32_t seq, std::uint32_t offset = 0) const;

  // The commands' headers in order (for tests and the ack reader).
  std::vector<const nlmsghdr*> commands() const;

 private:
  struct Command {
    std::uint32_t seq;
    std::size_t offset;  // in buf_
    std::string what;
    std::vector<std::pair<std::uint32_t, std::string>> parts;
  };

  std::uint8_t* reserve(std::size_t bytes);

  std::uint32_t first_seq_;
  std::uint32_t next_seq_;
  std::vector<std::uint8_t> buf_;
  std::vector<Command> commands_;
  bool finished_ = false;
};

}  // namespace portcullis::nftables
