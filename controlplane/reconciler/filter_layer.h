#pragma once
// A packet filter layer as the reconciler drives it: a name (the metric and audit label) and a
// PacketFilter, plus how to compare it with what it should hold.

#include <functional>
#include <string>

#include "dataplane/base/result.h"
#include "dataplane/filter/packet_filter.h"

namespace portcullis::nftables {
class NftablesFilter;
}
namespace portcullis::bpf {
class BpfFilter;
}

namespace portcullis::reconciler {

// What a layer holds compared with (settings, contents).
struct LayerCheck {
  bool rebuild = false;  // not installed, or its structure differs: only a cold build repairs it
  std::string why;       // for a rebuild: "not installed", "chain 'filter-input' missing", ...
  filter::FilterDelta elements;  // otherwise: the entries to add and remove
};

using LayerCheckFn =
    std::function<Result<LayerCheck>(const filter::FilterSettings&, const filter::FilterContents&)>;

struct FilterLayer {
  std::string name;  // "nftables", "ebpf"
  filter::PacketFilter& filter;
  // Unset: read() and diff_contents(); a read error with ENOENT means not installed.
  LayerCheckFn check = {};
};

// The default check on any PacketFilter.
Result<LayerCheck> check_contents(filter::PacketFilter& filter, const filter::FilterContents& want);

// nftables, checked with NftablesFilter::check() so that a flushed chain, a changed rule or a
// deleted table is seen too (read() alone sees only set elements).
FilterLayer nftables_layer(nftables::NftablesFilter& nft);

// eBPF, checked with BpfFilter::check(): it adopts what a previous process left (no changing
// call when that is current) and sees outdated or detached programs and changed sources too.
FilterLayer ebpf_layer(bpf::BpfFilter& ebpf);

}  // namespace portcullis::reconciler
