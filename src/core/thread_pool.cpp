#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVP_CPU_RELAX() _mm_pause()
#else
#define KVP_CPU_RELAX() std::this_thread::yield()
#endif

namespace kvp {

namespace {

thread_local bool t_in_job = false;

// How long a waiting thread spins with pause before it starts yielding its core.
constexpr int64_t kRelaxNs = 3 * 1000;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t spin_ns_from_env() {
  if (const char* s = std::getenv("KVP_SPIN_US")) {
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (end != s && v >= 0) return static_cast<int64_t>(v) * 1000;
  }
  return 100 * 1000;
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)), spin_ns_(spin_ns_from_env()) {
  workers_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::run_chunks() {
  const int64_t n = job_n_, chunks = job_chunks_;
  for (;;) {
    const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= chunks) return;
    const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    if (begin >= end) continue;
    try {
      (*job_)(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (n_threads_ == 1 || n == 1 || t_in_job) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  job_ = &fn;
  job_n_ = n;
  // A few chunks per thread: balance when a thread is late or descheduled, few calls of fn.
  job_chunks_ = std::min<int64_t>(n, 4 * static_cast<int64_t>(n_threads_));
  error_ = nullptr;
  next_chunk_.store(0, std::memory_order_relaxed);
  finished_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);  // publishes the job
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(mutex_); }
    start_cv_.notify_all();
  }
  t_in_job = true;
  run_chunks();
  t_in_job = false;
  // Every worker must have finished with this job before fn (on our caller's stack) goes.
  // Spin briefly (the others are normally a few ns behind), then yield: with more threads
  // than free cores a late worker needs this core to finish.
  const int workers = n_threads_ - 1;
  if (finished_.load(std::memory_order_acquire) != workers) {
    const int64_t relax_until = now_ns() + kRelaxNs;
    for (int i = 0; finished_.load(std::memory_order_acquire) != workers; ++i) {
      if ((i & 15) != 15 || now_ns() < relax_until) {
        KVP_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
    }
  }
  job_ = nullptr;
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void ThreadPool::worker_loop(int /*index*/) {
  uint64_t seen = 0;  // the generation at construction: a job published before this thread ran is not missed
  t_in_job = true;  // nested parallel_for calls from a job run inline
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    if (g == seen && spin_ns_ > 0) {
      // Spin with pause for a few us, then with yields (which cost nothing on an idle core
      // and hand it over on a busy one), until the spin time is up.
      const int64_t start = now_ns();
      for (int i = 0;; ++i) {
        KVP_CPU_RELAX();
        g = generation_.load(std::memory_order_acquire);
        if (g != seen) break;
        if ((i & 15) == 15) {
          const int64_t t = now_ns() - start;
          if (t > spin_ns_) break;
          if (t > kRelaxNs) std::this_thread::yield();
        }
      }
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      start_cv_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
      g = generation_.load(std::memory_order_acquire);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = g;
    run_chunks();
    finished_.fetch_add(1, std::memory_order_release);
  }
}

}  // namespace kvp
