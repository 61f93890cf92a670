#pragma once
// When the reconciler runs a pass (after kube-proxy's sync runner):
// - wake() asks for a pass; wakes that arrive before the next pass may start merge into one;
// - two passes start at least min_interval apart;
// - without wakes, a full resync (the drift check) runs resync_interval after the last pass;
// - after a failed pass the next one (a retry, or a wake) waits backoff: backoff_initial,
//   doubling per consecutive failure up to backoff_max.
// A plain state machine over an injected time: the thread and the tests drive the same code.

#include <chrono>
#include <cstdint>

namespace portcullis::reconciler {

struct ScheduleOptions {
  std::chrono::milliseconds min_interval{200};
  std::chrono::milliseconds resync_interval{5000};
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30000};
};

class PassScheduler {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  explicit PassScheduler(ScheduleOptions options) : options_(options) {}

  void wake() { pending_ = true; }
  // A wake asked for the next pass (as opposed to the resync timer or a retry).
  bool woken() const { return pending_; }
  // The earliest time the next pass may run (a wake or retry) or must run (a resync). Before the
  // first pass: now (TimePoint::min()).
  TimePoint next_pass() const;
  bool due(TimePoint now) const { return now >= next_pass(); }

  // Wakes from now on ask for another pass: this one may have read the store before them.
  void pass_started(TimePoint now);
  void pass_finished(TimePoint now, bool ok);

  int consecutive_failures() const { return failures_; }
  std::chrono::milliseconds backoff() const;  // 0 when the last pass succeeded

 private:
  ScheduleOptions options_;
  bool ran_ = false;
  bool pending_ = false;
  int failures_ = 0;
  TimePoint last_start_{};
  TimePoint last_end_{};
};

}  // namespace portcullis::reconciler
