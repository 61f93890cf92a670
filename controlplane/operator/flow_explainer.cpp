#include "controlplane/operator/flow_explainer.h"

#include <algorithm>

#include "dataplane/base/log.h"

namespace portcullis::operator_api {
namespace {

// A short reason for people; the full error goes to the log.
std::string read_failure(const std::string& layer, const Error& e) {
  if (e.errno_value() == ENOENT) return "not installed";
  log_warning("cannot read filter layer for the operator API",
              {{"layer", layer}, {"error", e.message()}});
  return "could not be read; see the gateway log";
}

}  // namespace

PacketFilterExplainer::PacketFilterExplainer(std::vector<NamedFilter> filters, Exclusive exclusive)
    : filters_(std::move(filters)), exclusive_(std::move(exclusive)) {
  if (!exclusive_) exclusive_ = [](const std::function<void()>& fn) { fn(); };
}

void PacketFilterExplainer::each_layer(
    const std::function<void(const std::string& name, const filter::FilterContents* contents,
                             std::string error)>& fn) {
  exclusive_([&] {
    for (auto& f : filters_) {
      auto contents = f.filter.read();
      if (contents) {
        fn(f.name, &*contents, "");
      } else {
        fn(f.name, nullptr, read_failure(f.name, contents.error()));
      }
    }
  });
}

std::vector<LayerSummary> PacketFilterExplainer::summarize() {
  std::vector<LayerSummary> out;
  each_layer([&](const std::string& name, const filter::FilterContents* held, std::string error) {
    LayerSummary s{name, held != nullptr, 0, 0, std::move(error)};
    if (held) {
      s.agents = held->agents.size();
      s.allowed = held->allowed.size();
    }
    out.push_back(std::move(s));
  });
  return out;
}

std::vector<LayerLookup> PacketFilterExplainer::lookup(const filter::AllowEntry& flow) {
  std::vector<LayerLookup> out;
  each_layer([&](const std::string& name, const filter::FilterContents* held, std::string error) {
    LayerLookup l{name, std::nullopt, std::nullopt, std::move(error)};
    if (held) {
      // Both lists are sorted and unique (packet_filter.h).
      l.allowed = std::binary_search(held->allowed.begin(), held->allowed.end(), flow);
      l.agent_known = std::binary_search(held->agents.begin(), held->agents.end(),
                                         filter::AgentEntry{flow.agent, {}});
    }
    out.push_back(std::move(l));
  });
  return out;
}

std::vector<LayerDevice> PacketFilterExplainer::device_entries(const IpAddress& agent) {
  std::vector<LayerDevice> out;
  each_layer([&](const std::string& name, const filter::FilterContents* held, std::string error) {
    LayerDevice d{name, std::nullopt, {}, std::move(error)};
    if (held) {
      d.agent_known = std::binary_search(held->agents.begin(), held->agents.end(),
                                         filter::AgentEntry{agent, {}});
      for (const auto& e : held->allowed) {
        if (e.agent == agent) d.allowed.push_back(e);
      }
    }
    out.push_back(std::move(d));
  });
  return out;
}

}  // namespace portcullis::operator_api
