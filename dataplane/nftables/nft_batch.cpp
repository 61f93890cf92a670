#include "dataplane/nftables/nft_batch.h"

#include <libnftnl/common.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <cassert>
#include <cstring>

namespace portcullis::nftables {

NftBatch::NftBatch(std::uint32_t first_seq) : first_seq_(first_seq), next_seq_(first_seq) {
  std::uint8_t* p = reserve(NLMSG_HDRLEN + 64);
  nlmsghdr* nlh = nftnl_batch_begin(reinterpret_cast<char*>(p), next_seq_++);
  buf_.resize(buf_.size() - (NLMSG_HDRLEN + 64) + NLMSG_ALIGN(nlh->nlmsg_len));
}

std::uint8_t* NftBatch::reserve(std::size_t bytes) {
  const std::size_t at = buf_.size();
  buf_.resize(at + bytes, 0);
  return buf_.data() + at;
}

void NftBatch::add(std::uint16_t nft_msg_type, std::uint16_t family, std::uint16_t extra_flags,
                   std::string what, const std::function<void(nlmsghdr*)>& fill) {
  assert(!finished_);
  const std::size_t at = buf_.size();
  std::uint8_t* p = reserve(kMaxMessageBytes);
  const std::uint32_t seq = next_seq_++;
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(reinterpret_cast<char*>(p), nft_msg_type, family,
                                        NLM_F_ACK | extra_flags, seq);
  fill(nlh);
  assert(nlh->nlmsg_len <= kMaxMessageBytes);
  buf_.resize(at + NLMSG_ALIGN(nlh->nlmsg_len));
  commands_.push_back(Command{seq, at, std::move(what), {}});
}

void NftBatch::name_parts(std::vector<std::pair<std::uint32_t, std::string>> parts) {
  assert(!commands_.empty());
  commands_.back().parts = std::move(parts);
}

void NftBatch::finish() {
  assert(!finished_);
  std::uint8_t* p = reserve(NLMSG_HDRLEN + 64);
  nlmsghdr* nlh = nftnl_batch_end(reinterpret_cast<char*>(p), next_seq_++);
  buf_.resize(buf_.size() - (NLMSG_HDRLEN + 64) + NLMSG_ALIGN(nlh->nlmsg_len));
  finished_ = true;
}

std::string NftBatch::describe(std::uint32_t seq, std::uint32_t offset) const {
  auto it = std::find_if(commands_.begin(), commands_.end(),
                         [seq](const Command& c) { return c.seq == seq; });
  if (it == commands_.end()) return {};
  std::string out = it->what;
  if (offset == 0) return out;
  // The part that starts last at or before the offset holds the failing attribute.
  const std::pair<std::uint32_t, std::string>* hit = nullptr;
  for (const auto& part : it->parts) {
    if (part.first <= offset) hit = &part;
  }
  if (hit != nullptr) out += ": " + hit->second;
  return out;
}

std::vector<const nlmsghdr*> NftBatch::commands() const {
  std::vector<const nlmsghdr*> out;
  out.reserve(commands_.size());
  for (const auto& c : commands_) {
    out.push_back(reinterpret_cast<const nlmsghdr*>(buf_.data() + c.offset));
  }
  return out;
}

}  // namespace portcullis::nftables
