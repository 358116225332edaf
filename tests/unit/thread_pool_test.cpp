// ThreadPool: coverage, exceptions, nesting, concurrent callers, sleeping workers, latency.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>
#include <vector>

namespace kvp {
namespace {

void expect_covers(ThreadPool& pool, int64_t n) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  pool.parallel_for(n, [&](int64_t b, int64_t e) {
    ASSERT_LE(0, b);
    ASSERT_LT(b, e);
    ASSERT_LE(e, n);
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

TEST(ThreadPoolFast, CoversEveryIndexOnceManyTimes) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int rep = 0; rep < 200; ++rep)
      for (int64_t n : {1, 2, 3, 7, 8, 9, 100, 4097}) expect_covers(pool, n);
  }
}

// Back-to-back jobs of alternating sizes: a late worker must never claim a range of the
// next job with the previous job's bookkeeping (this once double-ran a range and hung).
TEST(ThreadPoolFast, AlternatingJobSizes) {
  for (int threads : {2, 3, 5}) {
    ThreadPool pool(threads);
    for (int rep = 0; rep < 3000; ++rep) expect_covers(pool, 2 + rep % 3);
  }
}

TEST(ThreadPoolFast, ZeroAndNegativeAreNoOps) {
  ThreadPool pool(2);
  int calls = 0;
  pool.parallel_for(0, [&](int64_t, int64_t) { ++calls; });
  pool.parallel_for(-3, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

TEST(ThreadPoolFast, UsesMoreThanOneThread) {
  ThreadPool pool(2);
  std::atomic<int> on_other{0};
  const auto caller = std::this_thread::get_id();
  for (int rep = 0; rep < 100 && on_other.load() == 0; ++rep) {
    pool.parallel_for(64, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() != caller) on_other++;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    });
  }
  EXPECT_GT(on_other.load(), 0);
}

TEST(ThreadPoolFast, RethrowsAndStaysUsable) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100,
                                 [&](int64_t b, int64_t) {
                                   if (b == 0) throw std::runtime_error("boom");
                                 }),
               std::runtime_error);
  expect_covers(pool, 1000);
}

TEST(ThreadPoolFast, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  pool.parallel_for(8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
  });
  EXPECT_EQ(total.load(), 80);
}

TEST(ThreadPoolFast, ConcurrentCallersAreSerialised) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  auto work = [&] {
    for (int rep = 0; rep < 300; ++rep)
      pool.parallel_for(50, [&](int64_t b, int64_t e) { total += e - b; });
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 300 * 50);
}

TEST(ThreadPoolFast, WakesSleepingWorkers) {
  setenv("KVP_SPIN_US", "0", 1);  // workers go to sleep at once
  ThreadPool pool(3);
  unsetenv("KVP_SPIN_US");
  for (int rep = 0; rep < 50; ++rep) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    expect_covers(pool, 99);
  }
}

TEST(ThreadPoolFast, DestroysIdlePools) {
  for (int rep = 0; rep < 20; ++rep) {
    ThreadPool pool(4);
    if (rep % 2) expect_covers(pool, 10);
  }
}

// Not a benchmark, a sanity bound: an empty parallel_for must be cheap (spinning workers).
// Prints the median; fails only when it is absurd (> 200 us), as on an overloaded machine.
TEST(ThreadPoolFast, LowLatency) {
  ThreadPool pool(2);
  std::vector<double> us;
  std::atomic<int64_t> sink{0};
  for (int rep = 0; rep < 2000; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(2, [&](int64_t b, int64_t e) { sink += e - b; });
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  std::printf("parallel_for(2) median %.2f us, p90 %.2f us\n", us[us.size() / 2],
              us[us.size() * 9 / 10]);
  EXPECT_LT(us[us.size() / 2], 200.0);
  EXPECT_EQ(sink.load(), 4000);
}

}  // namespace
}  // namespace kvp
