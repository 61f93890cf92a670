#include "controlplane/reconciler/pass_scheduler.h"

#include <algorithm>

namespace portcullis::reconciler {

std::chrono::milliseconds PassScheduler::backoff() const {
  if (failures_ == 0) return std::chrono::milliseconds(0);
  auto b = options_.backoff_initial;
  for (int i = 1; i < failures_ && b < options_.backoff_max; ++i) b *= 2;
  return std::min(b, options_.backoff_max);
}

PassScheduler::TimePoint PassScheduler::next_pass() const {
  if (!ran_) return TimePoint::min();
  TimePoint earliest = last_start_ + options_.min_interval;
  if (failures_ > 0) return std::max(earliest, last_end_ + backoff());  // retry
  if (pending_) return earliest;
  return std::max(earliest, last_end_ + options_.resync_interval);
}

void PassScheduler::pass_started(TimePoint now) {
  ran_ = true;
  pending_ = false;
  last_start_ = now;
}

void PassScheduler::pass_finished(TimePoint now, bool ok) {
  last_end_ = now;
  failures_ = ok ? 0 : std::min(failures_ + 1, 64);
}

}  // namespace portcullis::reconciler
