#pragma once
// An in-memory packet filter: the settings and the two sets (agents, allowed flows).
// - read() and apply() before any build() are ENOENT (the filter is not installed);
// - build() replaces everything atomically; apply() is atomic: removals, then additions, and on
//   any error nothing changes;
// - strict (the default): adding a present entry is EEXIST and removing a missing one ENOENT, as
//   nftables answers a create-exclusive add and a delete; a delta computed from read() never
//   does either. Not strict: both are ignored.

#include <cstdint>
#include <optional>
#include <string>

#include "dataplane/filter/packet_filter.h"
#include "dataplane/testing/scheduled_failures.h"

namespace portcullis::testing {

class FakePacketFilter final : public filter::PacketFilter {
 public:
  Status build(const filter::FilterSettings& settings,
               const filter::FilterContents& contents) override;
  Result<filter::FilterContents> read() override;
  Status apply(const filter::FilterDelta& delta) override;

  void set_strict(bool strict) { strict_ = strict; }
  void fail_build(int nth, Error error) { build_failures_.fail_call(nth, std::move(error)); }
  void fail_read(int nth, Error error) { read_failures_.fail_call(nth, std::move(error)); }
  void fail_apply(int nth, Error error) { apply_failures_.fail_call(nth, std::move(error)); }

  std::uint64_t build_calls() const { return build_failures_.calls(); }
  std::uint64_t read_calls() const { return read_failures_.calls(); }
  std::uint64_t apply_calls() const { return apply_failures_.calls(); }

  bool installed() const { return settings_.has_value(); }
  const std::optional<filter::FilterSettings>& settings() const { return settings_; }
  const filter::FilterContents& contents() const { return contents_; }

  // Stable text, entries sorted:
  //   filter tunnel=portcullis0 gateway=10.255.0.1 pool=10.255.0.0/16 operators=192.0.2.0/24
  //   agent 10.255.0.7 device=7f3c
  //   allow 10.255.0.7 tcp 22 device=7f3c
  // or "filter (not installed)".
  std::string to_text() const;

 private:
  bool strict_ = true;
  std::optional<filter::FilterSettings> settings_;
  filter::FilterContents contents_;
  ScheduledFailures build_failures_;
  ScheduledFailures read_failures_;
  ScheduledFailures apply_failures_;
};

}  // namespace portcullis::testing
