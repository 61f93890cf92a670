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

std::vector<LayerSummary> PacketFilterExplainer::summarize() {
  std::vector<LayerSummary> out;
  exclusive_([&] {
    for (auto& f : filters_) {
      LayerSummary s;
      s.name = f.name;
      auto contents = f.filter.read();
      if (contents) {
        s.installed = true;
        s.agents = contents->agents.size();
        s.allowed = contents->allowed.size();
      } else {
        s.error = read_failure(f.name, contents.error());
      }
      out.push_back(std::move(s));
    }
  });
  return out;
}

std::vector<LayerLookup> PacketFilterExplainer::lookup(const filter::AllowEntry& flow) {
  std::vector<LayerLookup> out;
  exclusive_([&] {
    for (auto& f : filters_) {
      LayerLookup l;
      l.name = f.name;
      auto contents = f.filter.read();
      if (contents) {
        // Both lists are sorted and unique (packet_filter.h).
        l.allowed = std::binary_search(contents->allowed.begin(), contents->allowed.end(), flow);
        l.agent_known = std::binary_search(contents->agents.begin(), contents->agents.end(),
                                           filter::AgentEntry{flow.agent, {}});
      } else {
        l.error = read_failure(f.name, contents.error());
      }
      out.push_back(std::move(l));
    }
  });
  return out;
}

std::vector<LayerDevice> PacketFilterExplainer::device_entries(const IpAddress& agent) {
  std::vector<LayerDevice> out;
  exclusive_([&] {
    for (auto& f : filters_) {
      LayerDevice d;
      d.name = f.name;
      auto contents = f.filter.read();
      if (contents) {
        d.agent_known = std::binary_search(contents->agents.begin(), contents->agents.end(),
                                           filter::AgentEntry{agent, {}});
        for (const auto& e : contents->allowed) {
          if (e.agent == agent) d.allowed.push_back(e);
        }
      } else {
        d.error = read_failure(f.name, contents.error());
      }
      out.push_back(std::move(d));
    }
  });
  return out;
}

}  // namespace portcullis::operator_api
