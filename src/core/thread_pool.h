#pragma once
// A fixed pool of worker threads for data-parallel loops. The calling thread takes part,
// so a pool of n threads starts n - 1 workers. Work is split into contiguous ranges.
//
// Low latency: decode calls parallel_for a few hundred times per token, so between jobs the
// workers spin on an atomic generation counter for a short while (about 100 us, or
// KVP_SPIN_US) before sleeping on a condition variable; a job then starts in well under a
// microsecond. Ranges are claimed from a shared counter tagged with the job's generation,
// so the caller never waits for a worker that has not started (one descheduled on a busy
// machine): the caller claims the remaining ranges itself and returns once every claimed
// range is done. An exception thrown by fn is rethrown to the caller (the first one; the
// other ranges still run). A parallel_for called from inside a job runs inline on that
// thread; calls from several threads at once are serialised.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvp {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Calls fn(begin, end) on disjoint ranges covering [0, n); returns when all are done.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop();
  void run_chunks(uint32_t generation);

  int n_threads_;
  int64_t spin_ns_;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time

  // The current job; written by the caller before it publishes the generation, read only
  // by a thread holding a claimed range of that generation.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  std::atomic<int64_t> job_chunks_{0};  // also read (relaxed) by late workers before they claim
  std::exception_ptr error_;
  std::mutex error_mutex_;

  // (generation << 32) | next range index: a range is claimed by a CAS that keeps the
  // generation, so a late worker can never claim a range of a later job.
  alignas(64) std::atomic<uint64_t> next_{0};
  alignas(64) std::atomic<int64_t> done_{0};  // ranges finished in the current job
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable start_cv_;
};

}  // namespace kvp
