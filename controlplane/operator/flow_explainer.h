#pragma once
// What the operator API may know about the packet filter layers as the kernel holds them, for
// GET /api/ruleset and GET /api/explain. The operator layer never calls netlink: the daemon
// injects a FlowExplainer; PacketFilterExplainer reads the filters the reconciler drives
// (NftablesFilter, BpfFilter) through their PacketFilter::read(), serialised with the
// reconciler's passes by `exclusive` (Reconciler::inspect), since they share netlink sockets
// and map handles with it.

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/filter/packet_filter.h"

namespace portcullis::operator_api {

struct LayerSummary {
  std::string name;  // "nftables", "ebpf"
  bool installed = false;
  std::size_t agents = 0;   // agent addresses held
  std::size_t allowed = 0;  // (address, protocol, port) entries held
  std::string error;        // empty, or a short reason the layer could not be read
};

struct LayerLookup {
  std::string name;
  std::optional<bool> agent_known;  // the agent address is in the layer; empty: unreadable
  std::optional<bool> allowed;      // the triple is in the layer; empty: unreadable
  std::string error;
};

// One device's entries in one layer (GET /api/ruleset?device=<id>).
struct LayerDevice {
  std::string name;
  std::optional<bool> agent_known;          // its address is in the layer; empty: unreadable
  std::vector<filter::AllowEntry> allowed;  // the layer's entries for its address, sorted
  std::string error;
};

class FlowExplainer {
 public:
  virtual ~FlowExplainer() = default;
  virtual std::vector<LayerSummary> summarize() = 0;
  virtual std::vector<LayerLookup> lookup(const filter::AllowEntry& flow) = 0;
  virtual std::vector<LayerDevice> device_entries(const IpAddress& agent) = 0;
};

class PacketFilterExplainer final : public FlowExplainer {
 public:
  struct NamedFilter {
    std::string name;
    filter::PacketFilter& filter;
  };
  // `exclusive(fn)` runs fn while no reconcile pass runs.
  using Exclusive = std::function<void(const std::function<void()>&)>;

  PacketFilterExplainer(std::vector<NamedFilter> filters, Exclusive exclusive);

  std::vector<LayerSummary> summarize() override;
  std::vector<LayerLookup> lookup(const filter::AllowEntry& flow) override;
  std::vector<LayerDevice> device_entries(const IpAddress& agent) override;

 private:
  // fn(layer name, what it holds or null, the short reason it could not be read) for each
  // layer, while no reconcile pass runs.
  void each_layer(
      const std::function<void(const std::string& name, const filter::FilterContents* contents,
                               std::string error)>& fn);

  std::vector<NamedFilter> filters_;
  Exclusive exclusive_;
};

}  // namespace portcullis::operator_api
