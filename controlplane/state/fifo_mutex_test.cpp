#include "controlplane/state/fifo_mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace portcullis::state {
namespace {

using namespace std::chrono_literals;

TEST(FifoMutex, WaitersGetTheLockInTheOrderTheyAskedForIt) {
  FifoMutex mu;
  std::atomic<int> waiting{0};
  std::vector<int> order;
  std::vector<std::thread> threads;
  mu.lock();
  for (int i = 0; i < 6; ++i) {
    // One at a time, so the queue order is known: thread i asks after thread i-1 waits.
    threads.emplace_back([&, i] {
      ++waiting;
      std::lock_guard lock(mu);
      order.push_back(i);
    });
    while (waiting.load() != i + 1) std::this_thread::yield();
    std::this_thread::sleep_for(5ms);  // it is asleep in lock()
  }
  // The releasing thread asks again at once: it queues behind the six.
  mu.unlock();
  {
    std::lock_guard lock(mu);
    order.push_back(99);
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 99}));
}

TEST(FifoMutex, TheOwnerMayLockAgainAndOthersWaitUntilTheLastUnlock) {
  FifoMutex mu;
  mu.lock();
  mu.lock();
  EXPECT_TRUE(mu.try_lock());
  std::atomic<bool> got{false};
  std::thread other([&] {
    std::lock_guard lock(mu);
    got = true;
  });
  mu.unlock();
  mu.unlock();
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(got.load()) << "still held once";
  mu.unlock();
  other.join();
  EXPECT_TRUE(got.load());
  EXPECT_TRUE(mu.try_lock());
  mu.unlock();
}

}  // namespace
}  // namespace portcullis::state
