#pragma once
// The nftables layer of the packet filter: table `inet portcullis` (see ruleset.h for its text,
// hooks and priorities), programmed through libnftnl + libmnl, one atomic batch per change.

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
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

  // Waits for the conntrack cutter (see apply) and stops it.
  ~NftablesFilter() override;
  NftablesFilter(const NftablesFilter&) = delete;
  NftablesFilter& operator=(const NftablesFilter&) = delete;

  // Replaces table inet portcullis in one batch (see build_cold_batch). Flows that the old table
  // allowed and the new one does not are cut before it returns (as settle() does).
  Status build(const filter::FilterSettings& settings,
               const filter::FilterContents& contents) override;
  Result<filter::FilterContents> read() override;
  // One batch of element changes. The ruleset stops the flows of removed entries at commit
  // (established traffic must still match agent-ports); their conntrack entries are deleted
  // afterwards by a worker thread, off this call's latency (a conntrack dump walks the whole
  // global conntrack hash: 10-40 ms). Failures of that deletion are reported by settle().
  Status apply(const filter::FilterDelta& delta) override;
  // Waits until the conntrack entries of every removal so far are deleted; returns the first
  // deletion failure since the last settle() (or build()), then forgets it.
  Status settle();

  // Deletes table inet portcullis; succeeds when it is already gone.
  Status remove();

  // Compares the kernel's table with what build(settings, contents) makes.
  Result<NftDrift> check(const filter::FilterSettings& settings,
                         const filter::FilterContents& contents);
  // Makes the kernel hold that again: a cold build when the table, a chain, rule or set drifted,
  // else a delta of the drifted elements only.
  Status repair(const filter::FilterSettings& settings, const filter::FilterContents& contents);

 private:
  // Conntrack entries to delete after a change: entries removed and not added back.
  struct Cut {
    std::vector<filter::AllowEntry> allowed;
    std::vector<filter::AgentEntry> agents;
  };

  NftablesFilter(NftSocket nft, ConntrackFlows conntrack);

  Result<filter::FilterContents> read_once();
  Status check_structure(const filter::FilterSettings& settings, NftDrift& drift);
  // Queues the cut of `delta`'s removals for the cutter thread; entries it adds back are taken
  // out of the queued cuts (a cut already running may still hit their newest flows).
  void queue_cut(const filter::FilterDelta& delta);
  void run_cutter();

  NftSocket nft_;
  ConntrackFlows conntrack_;  // used by cutter_ only
  std::mutex mutex_;
  std::condition_variable wake_;  // cutter_: work or stop; settle(): queue drained
  // Removals not yet cut, merged into one dump. Guarded by mutex_, like the three below.
  Cut pending_;
  bool cutting_ = false;
  bool stopping_ = false;
  std::optional<Error> cut_error_;
  std::thread cutter_;  // last: started once everything above exists
};

}  // namespace portcullis::nftables
