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

// How long a waiting thread spins with pause before it starts yielding its core (which is
// free on an idle core and hands the core over on a busy one).
constexpr int64_t kRelaxNs = 3 * 1000;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
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

ThreadPool::ThreadPool(int n_threads)
    : n_threads_(std::max(1, n_threads)), spin_ns_(spin_ns_from_env()) {
  workers_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
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

void ThreadPool::run_chunks(uint32_t generation) {
  const uint64_t tag = static_cast<uint64_t>(generation) << 32;
  uint64_t cur = next_.load(std::memory_order_acquire);
  for (;;) {
    if ((cur & ~uint64_t{0xFFFFFFFF}) != tag) return;  // another job now
    const int64_t c = static_cast<int64_t>(cur & 0xFFFFFFFF);
    // Once this count is the next job's, next_ is already closed (see parallel_for), so the
    // CAS below fails: acquire pairs with the caller's release store of the count.
    if (c >= job_chunks_.load(std::memory_order_acquire)) return;
    if (!next_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel,
                                     std::memory_order_acquire))
      continue;
    // Range c of this generation is ours: the job stays alive until we report it done.
    const int64_t n = job_n_, chunks = job_chunks_.load(std::memory_order_relaxed);
    const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    try {
      (*job_)(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
    done_.fetch_add(1, std::memory_order_acq_rel);
    cur = next_.load(std::memory_order_acquire);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (n_threads_ == 1 || n == 1 || t_in_job) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  const uint32_t g = generation_.load(std::memory_order_relaxed) + 1;
  job_ = &fn;
  job_n_ = n;
  // A few ranges per thread: balance when a thread is late or descheduled, few calls of fn.
  job_chunks_.store(std::min<int64_t>(n, 4 * static_cast<int64_t>(n_threads_)),
                    std::memory_order_release);
  error_ = nullptr;
  done_.store(0, std::memory_order_relaxed);
  next_.store(static_cast<uint64_t>(g) << 32, std::memory_order_release);  // opens the job
  generation_.store(g, std::memory_order_seq_cst);                         // wakes spinners
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(mutex_); }
    start_cv_.notify_all();
  }
  t_in_job = true;
  run_chunks(g);
  t_in_job = false;
  // Wait for ranges that workers claimed and are still running.
  const int64_t chunks = job_chunks_.load(std::memory_order_relaxed);
  if (done_.load(std::memory_order_acquire) != chunks) {
    const int64_t relax_until = now_ns() + kRelaxNs;
    for (int i = 0; done_.load(std::memory_order_acquire) != chunks; ++i) {
      if ((i & 15) != 15 || now_ns() < relax_until) {
        KVP_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
    }
  }
  // Close this generation's counter before the next job's fields are written: a late worker
  // holding an old (generation, index) then fails its CAS instead of claiming a range with
  // the next job's count.
  next_.store((static_cast<uint64_t>(g) << 32) | 0xFFFFFFFFu, std::memory_order_relaxed);
  job_ = nullptr;
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void ThreadPool::worker_loop() {
  uint32_t seen =
      0;  // the generation at construction: a job published before this thread ran is not missed
  t_in_job = true;  // nested parallel_for calls from a job run inline
  for (;;) {
    uint32_t g = generation_.load(std::memory_order_acquire);
    if (g == seen && spin_ns_ > 0) {
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
    run_chunks(g);
  }
}

}  // namespace kvp
