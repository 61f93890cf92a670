#pragma once
// In-memory links with the kernel behaviour that tests/netns checks on the real one:
// - ensure() refuses another kind (EEXIST) and unknown kinds (EOPNOTSUPP), as NetlinkLinks does,
//   and plans with the same pure plan_link_changes();
// - an address with a prefix shorter than the host width gets a kernel prefix route (proto 2)
//   while the link is up; bringing a link down drops its IPv4 routes;
// - an IPv4 route needs its link up (ENETDOWN); a destination already routed in the main table
//   (via any link) is EEXIST.
// Each step that NetlinkLinks sends as one request counts as one changing request here, and can
// be made to fail.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dataplane/link/links.h"
#include "dataplane/testing/scheduled_failures.h"

namespace portcullis::testing {

class FakeLinks final : public link::Links {
 public:
  FakeLinks();

  Result<link::LinkState> read(const std::string& ifname) override;
  Result<link::LinkChanges> ensure(const link::LinkSpec& spec) override;
  Status remove(const std::string& ifname) override;

  // The link kinds this fake kernel has; "wireguard" and "dummy" at first.
  void set_kinds(std::set<std::string> kinds) { kinds_ = std::move(kinds); }
  // A link made by someone else (`ip link add`); its ifindex is assigned if 0.
  void add_link(link::LinkState state);
  // Direct access for drift (nullptr if absent); counts no request.
  link::LinkState* find(const std::string& ifname);

  // The nth changing request from now fails with `error` (the steps before it stay done).
  void fail_request(int nth, Error error) { request_failures_.fail_call(nth, std::move(error)); }
  // The nth read from now fails; ensure() starts with a read, so it counts there too.
  void fail_read(int nth, Error error) { read_failures_.fail_call(nth, std::move(error)); }
  std::uint64_t changing_requests() const { return request_failures_.calls(); }

  // Stable text, links by name:
  //   link pcl0 kind wireguard mtu 1420 up
  //     address 10.255.0.1/16
  //     route 10.255.0.0/16 proto 2
  std::string to_text() const;

 private:
  Status request(const std::string& context);
  Status step(link::LinkState& l, const link::LinkSpec& spec, const link::LinkChanges& plan);
  void refresh_kernel_routes(link::LinkState& l);
  bool routed_elsewhere(const IpPrefix& dst) const;

  std::set<std::string> kinds_;
  std::map<std::string, link::LinkState> links_;
  std::uint32_t next_ifindex_ = 2;  // 1 is lo
  ScheduledFailures request_failures_;
  ScheduledFailures read_failures_;
};

}  // namespace portcullis::testing
