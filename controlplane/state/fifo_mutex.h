#pragma once
// A mutex that hands itself to the longest waiter (first come, first served). The store's one
// SQLite connection is shared by every API worker: with std::mutex a thread that unlocks and
// locks again at once (ten store calls per agent request) overtakes threads already asleep on
// the lock, and under an ensure storm a few requests wait for hundreds of milliseconds while
// the rest are fast. Handing over costs a wake-up per contended unlock; uncontended it is one
// lock and unlock of an internal std::mutex.
//
// Recursive: the owning thread may lock it again (Store::atomically() around store calls).
// Meets the Lockable requirements (std::lock_guard, std::unique_lock).

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace portcullis::state {

class FifoMutex {
 public:
  void lock() {
    const auto self = std::this_thread::get_id();
    std::unique_lock guard(mu_);
    if (locked_ && owner_ == self) {
      ++depth_;
      return;
    }
    if (!locked_ && waiters_.empty()) {
      locked_ = true;
    } else {
      Waiter me;
      waiters_.push_back(&me);
      me.cv.wait(guard, [&] { return me.granted; });
      // Owned: unlock() handed it over without clearing locked_.
    }
    owner_ = self;
    depth_ = 1;
  }

  bool try_lock() {
    const auto self = std::this_thread::get_id();
    std::lock_guard guard(mu_);
    if (locked_ && owner_ == self) {
      ++depth_;
      return true;
    }
    if (locked_ || !waiters_.empty()) return false;
    locked_ = true;
    owner_ = self;
    depth_ = 1;
    return true;
  }

  // True if the calling thread holds it (e.g. inside Store::atomically()).
  bool held_by_this_thread() {
    std::lock_guard guard(mu_);
    return locked_ && owner_ == std::this_thread::get_id();
  }

  void unlock() {
    std::lock_guard guard(mu_);
    if (--depth_ > 0) return;
    owner_ = {};
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    Waiter* next = waiters_.front();
    waiters_.pop_front();
    next->granted = true;
    // Under mu_: the waiter cannot return (and free `next`) before this call is done.
    next->cv.notify_one();
  }

 private:
  struct Waiter {
    std::condition_variable cv;
    bool granted = false;
  };
  std::mutex mu_;
  bool locked_ = false;
  std::thread::id owner_;
  int depth_ = 0;
  std::deque<Waiter*> waiters_;
};

}  // namespace portcullis::state
