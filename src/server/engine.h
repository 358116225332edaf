#pragma once
// The server's engine: one thread owns the model and runs every forward. HTTP threads turn
// requests into jobs (tokenised, press built, context looked up: all checked before the job
// queues), submit them to a bounded queue and wait on them. The engine thread admits jobs
// up to the batch size, prefills each (with its press) on its own cache or on rows borrowed
// from a stored context, and then decodes all live jobs together, one DecodeBatcher step at
// a time (continuous batching: a job joins or leaves between steps).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/pipeline.h"
#include "presses/press.h"
#include "server/api.h"
#include "server/context_store.h"

namespace kvp::server {

struct EngineOptions {
  int max_batch = 16;     // jobs decoding together
  size_t max_queue = 64;  // jobs waiting to start; more get 503
  size_t context_budget_bytes = size_t{2} << 30;
  double timeout_s = 600;  // from submission to the last token
  BudgetRounding rounding = BudgetRounding::Nearest;
};

// What a press did to a request's (or a stored context's) prompt.
struct CompressionReport {
  std::string press;  // "" : none
  double ratio = 0;
  double achieved_ratio = 0;
  int64_t context_tokens = 0;
  size_t bytes_before = 0, bytes_after = 0;
  std::string context_id;  // the stored context answered from, if any
  json to_json() const;
};

class Engine;

// One request's work and what it has produced so far. The HTTP thread reads it through
// wait(); the engine thread writes it.
class Job {
 public:
  enum class Kind { Generate, CreateContext };
  struct State {
    bool started = false;  // prefilled: the answer is coming (streaming may begin)
    bool done = false;
    std::string text;  // text safe to show so far (the whole answer once done)
    std::string finish_reason;
    std::optional<ApiError> error;
    int64_t prompt_tokens = 0, completion_tokens = 0;
    CompressionReport compression;
    std::shared_ptr<StoredContext> created;  // CreateContext's result
  };
  // Blocks until the state differs from (started, text_size, done) or `wait` passes.
  State wait(bool started, size_t text_size, bool done, std::chrono::milliseconds wait) const;
  State wait_done() const;
  // wait_done() for at most `wait`: the state as it is then.
  State wait_done(std::chrono::milliseconds wait) const;
  // Stops the job at the next step (a client that left); it finishes with "cancelled".
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  friend class Engine;
  Kind kind_ = Kind::Generate;
  // Input, fixed before submission.
  std::vector<int32_t> context_ids_;  // prefilled with the press (may be empty)
  std::vector<int32_t> question_ids_;
  std::shared_ptr<StoredContext> stored_;
  std::string question_suffix_;  // CreateContext: kept with the context
  std::unique_ptr<Press> press_;
  int max_tokens_ = 0;
  SamplingParams sampling_;
  std::vector<std::string> stop_;
  std::chrono::steady_clock::time_point deadline_;
  // Engine-side progress.
  std::unique_ptr<KVCache> cache_;
  std::vector<int32_t> tokens_;
  size_t ticket_ = 0;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  State state_;
  void update(const std::function<void(State&)>& change);
};

class Engine {
 public:
  Engine(LoadedModel& loaded, EngineOptions options);
  ~Engine();  // stops the thread; jobs still queued finish with 503

  // Request -> job, checked: the press built, the context found, the prompt tokenised and
  // fitted to the model. Throws ApiError (400, 404) on anything wrong. Thread-safe.
  std::shared_ptr<Job> prepare(const GenerationRequest& request);
  std::shared_ptr<Job> prepare(const ContextRequest& request);
  // Queues a prepared job; throws ApiError 503 when the queue is full or the engine drains.
  void submit(const std::shared_ptr<Job>& job);
  // Refuses new jobs, lets the queued and running ones finish, then stops the thread.
  void drain();

  ContextStore& contexts() { return store_; }
  const LoadedModel& model() const { return loaded_; }
  const EngineOptions& options() const { return options_; }

  struct Counters {
    uint64_t jobs_done = 0, jobs_failed = 0, jobs_cancelled = 0, rejected_busy = 0;
    uint64_t prompt_tokens = 0, completion_tokens = 0, steps = 0;
    size_t queued = 0, running = 0;
  };
  Counters counters() const;

 private:
  void run();
  // Starts queued jobs while the batch has room; false when there was nothing to start.
  void admit();
  void start(const std::shared_ptr<Job>& job);
  void create_context(Job& job);
  // Prefills the job's context into `cache` with the job's press (reserve: free rows left
  // after each segment); what the press did. first_position: where a question's positions
  // start.
  CompressionReport prefill(Job& job, KVCache& cache, int64_t reserve, int64_t* first_position);
  std::chrono::steady_clock::time_point deadline() const;
  void step();
  void on_token(Job& job);
  void finish(const std::shared_ptr<Job>& job, const std::string& reason);
  void fail(Job& job, const ApiError& error);
  // Jobs cancelled or past their deadline leave the batch.
  void sweep();
  int64_t prompt_limit() const;

  LoadedModel& loaded_;
  EngineOptions options_;
  ContextStore store_;
  DecodeBatcher batcher_;
  std::map<size_t, std::shared_ptr<Job>> running_;  // by batcher ticket

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool draining_ = false, stopping_ = false;
  Counters counters_;
  std::thread thread_;
};

}  // namespace kvp::server
