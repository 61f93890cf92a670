#include "controlplane/reconciler/pass_scheduler.h"

#include <gtest/gtest.h>

namespace portcullis::reconciler {
namespace {

using std::chrono::milliseconds;

ScheduleOptions options() {
  return {.min_interval = milliseconds(200),
          .resync_interval = milliseconds(5000),
          .backoff_initial = milliseconds(500),
          .backoff_max = milliseconds(4000)};
}

const PassScheduler::TimePoint t0 = PassScheduler::TimePoint() + std::chrono::hours(1);

TEST(PassScheduler, FirstPassIsDueAtOnce) {
  PassScheduler s(options());
  EXPECT_TRUE(s.due(t0));
}

TEST(PassScheduler, WithoutWakesTheNextPassIsTheResync) {
  PassScheduler s(options());
  s.pass_started(t0);
  s.pass_finished(t0 + milliseconds(30), true);
  EXPECT_EQ(s.next_pass(), t0 + milliseconds(5030));
  EXPECT_FALSE(s.due(t0 + milliseconds(5029)));
  EXPECT_TRUE(s.due(t0 + milliseconds(5030)));
}

TEST(PassScheduler, WakesWithinMinIntervalMergeIntoOnePass) {
  PassScheduler s(options());
  s.pass_started(t0);
  s.pass_finished(t0 + milliseconds(10), true);
  s.wake();
  s.wake();
  s.wake();
  EXPECT_EQ(s.next_pass(), t0 + milliseconds(200));
  EXPECT_FALSE(s.due(t0 + milliseconds(199)));
  s.pass_started(t0 + milliseconds(200));  // one pass for three wakes
  s.pass_finished(t0 + milliseconds(210), true);
  EXPECT_EQ(s.next_pass(), t0 + milliseconds(5210));
}

TEST(PassScheduler, WakeDuringAPassAsksForAnother) {
  PassScheduler s(options());
  s.pass_started(t0);
  s.wake();  // the pass may have read the store before this change
  s.pass_finished(t0 + milliseconds(50), true);
  EXPECT_EQ(s.next_pass(), t0 + milliseconds(200));
}

TEST(PassScheduler, WakeLongAfterThePreviousPassRunsAtOnce) {
  PassScheduler s(options());
  s.pass_started(t0);
  s.pass_finished(t0 + milliseconds(10), true);
  s.wake();
  EXPECT_TRUE(s.due(t0 + milliseconds(3000)));
}

TEST(PassScheduler, FailuresBackOffExponentiallyUpToTheMaximumAndResetOnSuccess) {
  PassScheduler s(options());
  auto t = t0;
  std::vector<int> waits;
  for (int i = 0; i < 6; ++i) {
    s.pass_started(t);
    s.pass_finished(t, false);
    waits.push_back(
        static_cast<int>(std::chrono::duration_cast<milliseconds>(s.next_pass() - t).count()));
    s.wake();  // wakes do not shorten a backoff
    EXPECT_EQ(s.next_pass() - t, milliseconds(waits.back()));
    t = s.next_pass();
  }
  EXPECT_EQ(waits, (std::vector<int>{500, 1000, 2000, 4000, 4000, 4000}));
  EXPECT_EQ(s.consecutive_failures(), 6);
  s.pass_started(t);
  s.pass_finished(t, true);
  EXPECT_EQ(s.consecutive_failures(), 0);
  EXPECT_EQ(s.backoff(), milliseconds(0));
}

}  // namespace
}  // namespace portcullis::reconciler
