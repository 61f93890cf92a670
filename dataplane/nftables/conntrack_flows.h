#pragma once
// Cuts live flows that the filter no longer allows: deletes their conntrack entries, so the next
// packet of such a flow is NEW again and meets the filter (which now drops it), instead of
// passing as "established" until the flow ends on its own.
//
// Both filter layers need this after they remove entries. NftablesFilter calls it from its
// cutter thread after the batch has committed (its ruleset already stops those flows); a dump
// walks the whole global conntrack hash, 10-40 ms even for an empty namespace.

#include <cstddef>
#include <memory>
#include <vector>

#include "dataplane/base/result.h"
#include "dataplane/filter/packet_filter.h"

struct nfct_handle;

namespace portcullis::nftables {

class ConntrackFlows {
 public:
  // Opens a ctnetlink handle in the calling thread's network namespace.
  static Result<ConntrackFlows> open();

  // Deletes the IPv4 conntrack entries whose original direction goes to one of `allowed`
  // (agent address, protocol, destination port), and every entry to or from one of `agents`
  // (either direction, original or reply tuple). Returns how many entries were deleted; an entry
  // that vanished meanwhile is not an error.
  Result<std::size_t> cut(const std::vector<filter::AllowEntry>& allowed,
                          const std::vector<filter::AgentEntry>& agents);

 private:
  struct HandleClose {
    void operator()(nfct_handle* h) const;
  };
  explicit ConntrackFlows(std::unique_ptr<nfct_handle, HandleClose> h) : handle_(std::move(h)) {}

  std::unique_ptr<nfct_handle, HandleClose> handle_;
};

}  // namespace portcullis::nftables
