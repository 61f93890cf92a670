#pragma once
// The nftables layer of the packet filter: table `inet portcullis` (see ruleset.h for its text,
// hooks and priorities), programmed through libnftnl + libmnl, one atomic batch per change.

#include <memory>
#include <string>
#include <vector>

#include "dataplane/base/result.h"
#include "dataplane/filter/packet_filter.h"
#include "dataplane/nftables/conntrack_flows.h"
#include "dataplane/nftables/nft_socket.h"

namespace portcullis::nftables {

// What differs between the intended filter and the kernel's table.
struct NftDrift {
  bool table_missing = false;
  // Chains, rules and sets that are missing, extra or different, one line each, e.g.
  // "chain 'filter-input' rule 2: have '...', want '...'". Any of these needs a cold build.
  std::vector<std::string> structure;
  // Set elements to add or remove (agents, agent-ports); repaired with a delta.
  filter::FilterDelta elements;

  bool empty() const { return !table_missing && structure.empty() && elements.empty(); }
  std::string to_string() const;
};

class NftablesFilter final : public filter::PacketFilter {
 public:
  // Opens the netlink sockets in the calling thread's network namespace; every later call acts
  // there, whichever namespace the caller is in then.
  static Result<std::unique_ptr<NftablesFilter>> open();

  // Replaces table inet portcullis in one batch (see build_cold_batch). Flows that the old table
  // allowed and the new one does not are cut.
  Status build(const filter::FilterSettings& settings,
               const filter::FilterContents& contents) override;
  Result<filter::FilterContents> read() override;
  // One batch of element changes; then the conntrack entries of removed entries are deleted.
  Status apply(const filter::FilterDelta& delta) override;

  // Deletes table inet portcullis; succeeds when it is already gone.
  Status remove();

  // Compares the kernel's table with what build(settings, contents) makes.
  Result<NftDrift> check(const filter::FilterSettings& settings,
                         const filter::FilterContents& contents);
  // Makes the kernel hold that again: a cold build when the table, a chain, rule or set drifted,
  // else a delta of the drifted elements only.
  Status repair(const filter::FilterSettings& settings, const filter::FilterContents& contents);

 private:
  NftablesFilter(NftSocket nft, ConntrackFlows conntrack)
      : nft_(std::move(nft)), conntrack_(std::move(conntrack)) {}

  Result<filter::FilterContents> read_once();
  Status check_structure(const filter::FilterSettings& settings, NftDrift& drift);
  Status cut_flows(const filter::FilterDelta& delta);

  NftSocket nft_;
  ConntrackFlows conntrack_;
};

}  // namespace portcullis::nftables
