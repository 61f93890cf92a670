#include "dataplane/filter/packet_filter.h"

#include <algorithm>
#include <iterator>

namespace portcullis::filter {

const char* protocol_name(Protocol p) { return p == Protocol::kTcp ? "tcp" : "udp"; }

namespace {

// Elements of `a` not in `b`; both sorted and unique.
template <class T>
std::vector<T> sorted_minus(const std::vector<T>& a, const std::vector<T>& b) {
  std::vector<T> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

template <class T>
std::vector<T> sorted_unique(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

// Identity is the address / triple; a differing comment alone is not a change (re-adding the
// element would cut its live flows).
FilterDelta diff_contents(const FilterContents& want_in, const FilterContents& have_in) {
  auto want_agents = sorted_unique(want_in.agents);
  auto have_agents = sorted_unique(have_in.agents);
  auto want_allowed = sorted_unique(want_in.allowed);
  auto have_allowed = sorted_unique(have_in.allowed);

  FilterDelta d;
  d.add_agents = sorted_minus(want_agents, have_agents);
  d.remove_agents = sorted_minus(have_agents, want_agents);
  d.add_allowed = sorted_minus(want_allowed, have_allowed);
  d.remove_allowed = sorted_minus(have_allowed, want_allowed);
  return d;
}

}  // namespace portcullis::filter
