// A fixed team of threads that runs one task on every member and waits for all of them:
// the fork-join a forward pass needs dozens of times per token (every matrix product, every
// attention block). Starting threads per product would cost more than the product itself on
// small models, and a general pool's queue is more than this needs.
#pragma once

#include <algorithm>  // std::max, std::min
#include <atomic>     // std::atomic
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <memory>     // std::addressof
#include <mutex>      // std::mutex, std::lock_guard
#include <thread>     // std::thread, std::this_thread::yield
#include <type_traits>  // std::remove_reference_t
#include <vector>     // std::vector

namespace cospec::examples::llama {

/// `size()` threads, the caller of `run` being member 0. Members wait for work by spinning
/// for a while, then blocking on the generation counter (C++20 atomic wait), so back-to-back
/// products hand over in microseconds and an idle team costs no CPU once the spin is over.
/// Concurrent callers of `run` are served one after the other (a mutex); a task must not call
/// `run` on its own team.
class thread_team {
 public:
  /// A team of `members` threads (at least 1; 0 means std::thread::hardware_concurrency()).
  explicit thread_team(std::size_t members = 0) {
    if (members == 0) members = std::max<std::size_t>(1, std::thread::hardware_concurrency());
    workers_.reserve(members - 1);
    try {
      for (std::size_t index = 1; index < members; ++index) workers_.emplace_back([this, index] { work(index); });
    } catch (...) {
      stop();  // the threads already started must be joined before they are destroyed
      throw;
    }
  }

  thread_team(const thread_team&) = delete;
  thread_team& operator=(const thread_team&) = delete;

  ~thread_team() { stop(); }

  [[nodiscard]] std::size_t size() const noexcept { return workers_.size() + 1; }

  /// Calls task(member, size()) once for every member in [0, size()) and returns when all
  /// calls have returned. The task must not throw: an escaping exception terminates (a
  /// member that vanished mid-product would leave the others waiting forever).
  template <class Task>
  void run(Task&& task) {
    const std::lock_guard<std::mutex> one_caller(run_mutex_);
    if (workers_.empty()) {
      invoke<Task>(std::addressof(task), 0, 1);
      return;
    }
    task_ = std::addressof(task);
    call_ = &invoke<Task>;
    pending_.store(workers_.size(), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    invoke<Task>(std::addressof(task), 0, size());
    wait_until_done();
  }

 private:
  using call_type = void (*)(void*, std::size_t, std::size_t) noexcept;

  template <class Task>
  static void invoke(void* task, std::size_t member, std::size_t members) noexcept {
    (*static_cast<std::remove_reference_t<Task>*>(task))(member, members);
  }

  // A member checks this many times before blocking: the first half is a busy loop of a few
  // microseconds, the second half yields the core between checks (well under a millisecond
  // on an idle machine). That covers the gap between two products of one pass and most of the
  // gap between two passes; an idle team then blocks and costs nothing.
  static constexpr int spin_rounds = 4000;

  void stop() noexcept {
    stopping_.store(true, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  void work(std::size_t index) {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t now = generation_.load(std::memory_order_acquire);
      for (int round = 0; now == seen && round < spin_rounds; ++round) {
        if (round > spin_rounds / 2) std::this_thread::yield();
        now = generation_.load(std::memory_order_acquire);
      }
      while (now == seen) {
        generation_.wait(seen, std::memory_order_acquire);
        now = generation_.load(std::memory_order_acquire);
      }
      seen = now;
      if (stopping_.load(std::memory_order_relaxed)) return;
      call_(task_, index, size());
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }

  void wait_until_done() noexcept {
    std::size_t left = pending_.load(std::memory_order_acquire);
    for (int round = 0; left != 0 && round < spin_rounds; ++round) left = pending_.load(std::memory_order_acquire);
    while (left != 0) {
      pending_.wait(left, std::memory_order_acquire);
      left = pending_.load(std::memory_order_acquire);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::size_t> pending_{0};
  std::atomic<bool> stopping_{false};
  void* task_ = nullptr;
  call_type call_ = nullptr;
};

/// The half-open range [begin, end) of `count` items that member `member` of `members` takes:
/// contiguous chunks, multiples of `granule` except the last.
struct work_range {
  std::size_t begin = 0;
  std::size_t end = 0;
};
inline work_range split_work(std::size_t count, std::size_t member, std::size_t members, std::size_t granule = 1) {
  const std::size_t granules = (count + granule - 1) / granule;
  const std::size_t first = granules * member / members;
  const std::size_t last = granules * (member + 1) / members;
  return {std::min(count, first * granule), std::min(count, last * granule)};
}

}  // namespace cospec::examples::llama
