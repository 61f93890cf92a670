#include "dataplane/testing/fake_packet_filter.h"

#include <algorithm>

namespace portcullis::testing {

using filter::AgentEntry;
using filter::AllowEntry;

namespace {

template <class T>
void sort_unique(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

std::string describe(const AgentEntry& e) { return "agent " + e.address.to_string(); }
std::string describe(const AllowEntry& e) {
  return std::string("allowed ") + e.agent.to_string() + " " + filter::protocol_name(e.protocol) +
         " " + std::to_string(e.port);
}

template <class T>
Status remove_entries(std::vector<T>& set, const std::vector<T>& entries, bool strict) {
  for (const auto& e : entries) {
    auto it = std::find(set.begin(), set.end(), e);
    if (it == set.end()) {
      if (strict) return fail_errno(ENOENT, "remove " + describe(e) + ": not in the filter");
      continue;
    }
    set.erase(it);
  }
  return {};
}

template <class T>
Status add_entries(std::vector<T>& set, const std::vector<T>& entries, bool strict) {
  for (const auto& e : entries) {
    if (std::find(set.begin(), set.end(), e) != set.end()) {
      if (strict) return fail_errno(EEXIST, "add " + describe(e) + ": already in the filter");
      continue;
    }
    set.push_back(e);
  }
  sort_unique(set);
  return {};
}

}  // namespace

Status FakePacketFilter::build(const filter::FilterSettings& settings,
                               const filter::FilterContents& contents) {
  if (auto e = build_failures_.next_call()) return fail(std::move(*e));
  settings_ = settings;
  contents_ = contents;
  sort_unique(contents_.agents);
  sort_unique(contents_.allowed);
  return {};
}

Result<filter::FilterContents> FakePacketFilter::read() {
  if (auto e = read_failures_.next_call()) return fail(std::move(*e));
  if (!settings_) return fail_errno(ENOENT, "read packet filter: not installed");
  return contents_;
}

Status FakePacketFilter::apply(const filter::FilterDelta& delta) {
  if (auto e = apply_failures_.next_call()) return fail(std::move(*e));
  if (!settings_) return fail_errno(ENOENT, "apply packet filter change: not installed");
  filter::FilterContents next = contents_;  // all or nothing
  Status s = remove_entries(next.allowed, delta.remove_allowed, strict_);
  if (s) s = remove_entries(next.agents, delta.remove_agents, strict_);
  if (s) s = add_entries(next.agents, delta.add_agents, strict_);
  if (s) s = add_entries(next.allowed, delta.add_allowed, strict_);
  if (!s) return fail(std::move(s.error()).wrap("apply packet filter change"));
  contents_ = std::move(next);
  return {};
}

std::string FakePacketFilter::to_text() const {
  if (!settings_) return "filter (not installed)\n";
  std::string out = "filter tunnel=" + settings_->tunnel_ifname +
                    " gateway=" + settings_->gateway_address.to_string() +
                    " pool=" + settings_->agent_pool.to_string() + " operators=";
  auto ops = settings_->operator_networks;
  std::sort(ops.begin(), ops.end());
  std::string list;
  for (const auto& o : ops) list += (list.empty() ? "" : ",") + o.to_string();
  out += (list.empty() ? "(none)" : list) + "\n";
  for (const auto& a : contents_.agents) {
    out += "agent " + a.address.to_string() + " device=" + a.device + "\n";
  }
  for (const auto& a : contents_.allowed) {
    out += std::string("allow ") + a.agent.to_string() + " " + filter::protocol_name(a.protocol) +
           " " + std::to_string(a.port) + " device=" + a.device + "\n";
  }
  return out;
}

}  // namespace portcullis::testing
