#include "server/engine.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "core/error.h"
#include "presses/registry.h"
#include "server/text_stream.h"

namespace kvp::server {

namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<Press> build_press(const PressSpec& spec, BudgetRounding rounding) {
  try {
    return make_press(spec.name, spec.ratio, spec.args, rounding);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "kv_press");
  }
}

// Every kept row of every segment of `cache`, in place: what a question borrows.
KeepPlan all_rows(const std::vector<int64_t>& lengths) {
  KeepPlan plan(lengths.size());
  for (size_t s = 0; s < lengths.size(); ++s) {
    plan[s].resize(static_cast<size_t>(lengths[s]));
    std::iota(plan[s].begin(), plan[s].end(), 0);
  }
  return plan;
}

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string new_context_id() {
  // 96 random bits: ids cannot be guessed from one another.
  static std::mutex mutex;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mutex);
  char buf[32];
  std::snprintf(buf, sizeof buf, "ctx-%016llx%08llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng() & 0xffffffffULL));
  return buf;
}

}  // namespace

json CompressionReport::to_json() const {
  json j = {{"press", press.empty() ? json(nullptr) : json(press)},
            {"ratio", ratio},
            {"achieved_ratio", achieved_ratio},
            {"context_tokens", context_tokens},
            {"context_kv_bytes_before", bytes_before},
            {"context_kv_bytes_after", bytes_after}};
  if (!context_id.empty()) j["context_id"] = context_id;
  return j;
}

void Job::update(const std::function<void(State&)>& change) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    change(state_);
  }
  changed_.notify_all();
}

Job::State Job::wait(bool started, size_t text_size, bool done,
                     std::chrono::milliseconds wait) const {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, wait, [&] {
    return state_.started != started || state_.text.size() != text_size || state_.done != done;
  });
  return state_;
}

Job::State Job::wait_done() const {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return state_.done; });
  return state_;
}

Job::State Job::wait_done(std::chrono::milliseconds wait) const {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, wait, [&] { return state_.done; });
  return state_;
}

Engine::Engine(LoadedModel& loaded, EngineOptions options)
    : loaded_(loaded),
      options_(options),
      store_(options.context_budget_bytes),
      batcher_(*loaded.model,
               [&loaded](int32_t id) { return loaded.tokenizer->is_end_of_generation(id); }) {
  check(options_.max_batch >= 1 && options_.max_queue >= 1, "engine: batch and queue must be >= 1");
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() {
  drain();
}

std::chrono::steady_clock::time_point Engine::deadline() const {
  return Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_s * 1e3));
}

int64_t Engine::prompt_limit() const {
  return loaded_.model->config().max_positions;
}

std::shared_ptr<Job> Engine::prepare(const GenerationRequest& r) {
  auto job = std::make_shared<Job>();
  const Tokenizer& tok = *loaded_.tokenizer;
  int64_t before_question = 0;
  if (!r.context_id.empty()) {
    auto stored = valid_context_id(r.context_id) ? store_.get(r.context_id) : nullptr;
    if (!stored)
      throw ApiError(404, "no context '" + r.context_id + "' (deleted, evicted or never made)",
                     "context_id", "context_not_found");
    const std::string text =
        r.endpoint == Endpoint::Chat ? r.messages[0].content + stored->question_suffix : r.prompt;
    job->question_ids_ = tok.encode(text, true, false);
    before_question = stored->first_position;
    job->stored_ = std::move(stored);
  } else if (r.endpoint == Endpoint::Chat) {
    // As the pipeline: the conversation up to the end of the last user message is the
    // context (pressed); the assistant header after it is the question.
    const PromptParts parts = split_conversation(loaded_.chat, r.messages);
    job->context_ids_ = encode_context(loaded_, parts);
    job->question_ids_ = tok.encode(parts.question_suffix, true, false);
  } else {
    // A raw prompt: every token but the last is the context; the last starts the answer.
    job->context_ids_ = tok.encode(r.prompt, true, true);
    if (!job->context_ids_.empty()) {
      job->question_ids_.push_back(job->context_ids_.back());
      job->context_ids_.pop_back();
    }
  }
  if (job->question_ids_.empty())
    throw ApiError(400, "the prompt is empty after tokenisation", "messages");
  if (!job->stored_) before_question = static_cast<int64_t>(job->context_ids_.size());
  const int64_t need =
      before_question + static_cast<int64_t>(job->question_ids_.size()) + r.max_tokens;
  if (need > prompt_limit())
    throw ApiError(400,
                   "the prompt (" + std::to_string(need - r.max_tokens) +
                       " tokens) + max_tokens (" + std::to_string(r.max_tokens) +
                       ") exceeds the model's " + std::to_string(prompt_limit()) + " positions",
                   "max_tokens", "context_length_exceeded");
  if (r.press) job->press_ = build_press(*r.press, options_.rounding);
  job->max_tokens_ = r.max_tokens;
  job->sampling_ = r.sampling;
  job->stop_ = r.stop;
  job->deadline_ = deadline();
  return job;
}

std::shared_ptr<Job> Engine::prepare(const ContextRequest& r) {
  auto job = std::make_shared<Job>();
  job->kind_ = Job::Kind::CreateContext;
  const PromptParts parts = r.messages.empty()
                                ? split_prompt(loaded_.chat, *loaded_.tokenizer, r.text)
                                : split_conversation(loaded_.chat, r.messages);
  job->context_ids_ = encode_context(loaded_, parts);
  job->question_suffix_ = parts.question_suffix;
  const int64_t T = static_cast<int64_t>(job->context_ids_.size());
  if (T == 0) throw ApiError(400, "the context is empty after tokenisation", "text");
  if (T + 1 > prompt_limit())
    throw ApiError(400,
                   "the context (" + std::to_string(T) +
                       " tokens) leaves no room for a question in the model's " +
                       std::to_string(prompt_limit()) + " positions",
                   "text", "context_length_exceeded");
  if (r.press) job->press_ = build_press(*r.press, options_.rounding);
  job->deadline_ = deadline();
  return job;
}

void Engine::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_) throw ApiError(503, "the server is shutting down", "", "shutting_down");
    if (queue_.size() >= options_.max_queue) {
      ++counters_.rejected_busy;
      throw ApiError(503,
                     "the server is busy: " + std::to_string(queue_.size()) +
                         " requests are waiting; retry later",
                     "", "queue_full");
    }
    queue_.push_back(job);
    counters_.queued = queue_.size();
  }
  wake_.notify_one();
}

void Engine::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  draining_ = true;
  idle_.wait(lock, [&] { return queue_.empty() && counters_.running == 0; });
  stopping_ = true;
  lock.unlock();
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Engine::Counters Engine::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counters_;
}

void Engine::run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      counters_.running = running_.size();
      if (queue_.empty() && running_.empty()) idle_.notify_all();
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !running_.empty(); });
      if (stopping_ && queue_.empty() && running_.empty()) return;
    }
    admit();
    step();
    sweep();
  }
}

void Engine::admit() {
  while (static_cast<int>(running_.size()) < options_.max_batch) {
    std::shared_ptr<Job> job;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
      counters_.queued = queue_.size();
      counters_.running = running_.size() + 1;  // drain() must not see this job as gone
    }
    if (job->cancelled()) {
      finish(job, "cancelled");
      continue;
    }
    if (Clock::now() > job->deadline_) {
      fail(*job, ApiError(503, "the request timed out waiting in the queue", "", "timeout"));
      continue;
    }
    try {
      start(job);
    } catch (const ApiError& e) {
      fail(*job, e);
    } catch (const std::exception& e) {  // a press that cannot run on this prompt, say
      fail(*job, ApiError(400, e.what()));
    }
  }
}

void Engine::start(const std::shared_ptr<Job>& job_ptr) {
  Job& job = *job_ptr;
  if (job.kind_ == Job::Kind::CreateContext) return create_context(job);
  Model& model = *loaded_.model;
  const int64_t reserve = static_cast<int64_t>(job.question_ids_.size()) + job.max_tokens_;
  CompressionReport report;
  int64_t first_position = 0;
  int64_t prompt_tokens = static_cast<int64_t>(job.question_ids_.size());
  if (job.stored_) {
    const StoredContext& ctx = *job.stored_;
    job.cache_ = std::make_unique<KVCache>(model.make_cache(reserve));
    const auto lengths = ctx.cache->lengths();
    for (int layer = 0; layer < ctx.cache->n_layers(); ++layer)
      job.cache_->borrow_kept(layer, *ctx.cache, all_rows(lengths[static_cast<size_t>(layer)]),
                              reserve);
    first_position = ctx.first_position;
    prompt_tokens += ctx.tokens;
    report = {ctx.press, ctx.ratio, ctx.achieved_ratio, ctx.tokens, ctx.bytes_uncompressed,
              ctx.bytes, ctx.id};
  } else {
    const int64_t T = static_cast<int64_t>(job.context_ids_.size());
    job.cache_ = std::make_unique<KVCache>(model.make_cache(T + reserve));
    report = prefill(job, *job.cache_, reserve, &first_position);
    prompt_tokens += T;
  }
  job.ticket_ = batcher_.add(
      {job.cache_.get(), &job.question_ids_, first_position, job.max_tokens_, job.sampling_});
  running_[job.ticket_] = job_ptr;
  job.update([&](Job::State& s) {
    s.started = true;
    s.prompt_tokens = prompt_tokens;
    s.compression = report;
  });
}

CompressionReport Engine::prefill(Job& job, KVCache& cache, int64_t reserve,
                                  int64_t* first_position) {
  CompressionReport report;
  report.context_tokens = static_cast<int64_t>(job.context_ids_.size());
  report.bytes_before = cache.bytes_for_rows(report.context_tokens);
  *first_position =
      prefill_context(*loaded_.model, job.context_ids_, cache, job.press_.get(), reserve);
  report.bytes_after = cache.used_bytes();
  if (job.press_) {
    report.press = job.press_->name();
    report.ratio = job.press_->compression_ratio();
    report.achieved_ratio = 1.0 - static_cast<double>(report.bytes_after) /
                                      static_cast<double>(std::max<size_t>(report.bytes_before, 1));
  }
  return report;
}

void Engine::create_context(Job& job) {
  Model& model = *loaded_.model;
  const int64_t T = static_cast<int64_t>(job.context_ids_.size());
  auto ctx = std::make_shared<StoredContext>();
  ctx->id = new_context_id();
  ctx->cache = std::make_unique<KVCache>(model.make_cache(T));
  ctx->tokens = T;
  const CompressionReport report = prefill(job, *ctx->cache, 0, &ctx->first_position);
  ctx->question_suffix = job.question_suffix_;
  ctx->bytes_uncompressed = report.bytes_before;
  ctx->bytes = ctx->cache->allocated_bytes();  // no reserve: the kept rows exactly
  ctx->press = report.press;
  ctx->ratio = report.ratio;
  ctx->achieved_ratio = report.achieved_ratio;
  ctx->created = unix_seconds();
  store_.put(ctx);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++counters_.jobs_done;
    counters_.prompt_tokens += static_cast<uint64_t>(T);
  }
  job.update([&](Job::State& s) {
    s.started = s.done = true;
    s.prompt_tokens = T;
    s.created = ctx;
  });
}

void Engine::step() {
  if (!batcher_.busy()) return;
  std::vector<DecodeBatcher::Finished> finished;
  try {
    finished = batcher_.step();
  } catch (const std::exception& e) {
    // A forward that fails leaves no consistent batch: every running job fails.
    for (auto& [ticket, job] : running_) {
      batcher_.cancel(ticket);
      fail(*job, ApiError(500, e.what()));
    }
    running_.clear();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++counters_.steps;
  }
  for (const auto& e : batcher_.emitted()) {
    const auto it = running_.find(e.ticket);
    if (it == running_.end()) continue;
    it->second->tokens_.push_back(e.token);
    on_token(*it->second);
  }
  for (const auto& f : finished) {
    const auto it = running_.find(f.ticket);
    if (it == running_.end()) continue;  // already ended by a stop string
    const auto job = it->second;
    running_.erase(it);
    const bool by_token =
        job->tokens_.size() > 1 && loaded_.tokenizer->is_end_of_generation(job->tokens_.back());
    finish(job, by_token ? "stop" : "length");
  }
}

void Engine::on_token(Job& job) {
  const std::string text = loaded_.tokenizer->decode(job.tokens_);
  if (first_stop(text, job.stop_) != std::string::npos) {
    batcher_.cancel(job.ticket_);
    const auto it = running_.find(job.ticket_);
    const auto keep = it->second;
    running_.erase(it);
    finish(keep, "stop");
    return;
  }
  const size_t safe = safe_prefix(text, job.stop_);
  job.update([&](Job::State& s) {
    if (safe > s.text.size() && text.compare(0, s.text.size(), s.text) == 0)
      s.text = text.substr(0, safe);
  });
}

void Engine::finish(const std::shared_ptr<Job>& job, const std::string& reason) {
  std::string text = loaded_.tokenizer->decode(job->tokens_);
  const size_t stop = first_stop(text, job->stop_);
  if (stop != std::string::npos) text.resize(stop);
  const auto completion = static_cast<int64_t>(job->tokens_.size());
  job->cache_.reset();  // the rows go now, not when the client has read the answer
  job->stored_.reset();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (reason == "cancelled") {
      ++counters_.jobs_cancelled;
    } else {
      ++counters_.jobs_done;
      counters_.prompt_tokens += static_cast<uint64_t>(job->state_.prompt_tokens);
      counters_.completion_tokens += static_cast<uint64_t>(completion);
    }
  }
  job->update([&](Job::State& s) {
    s.started = s.done = true;
    s.text = std::move(text);
    s.finish_reason = reason;
    s.completion_tokens = completion;
  });
}

void Engine::fail(Job& job, const ApiError& error) {
  job.cache_.reset();
  job.stored_.reset();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++counters_.jobs_failed;
  }
  job.update([&](Job::State& s) {
    s.done = true;
    s.error = error;
  });
}

void Engine::sweep() {
  const auto now = Clock::now();
  for (auto it = running_.begin(); it != running_.end();) {
    const auto job = it->second;
    const bool cancelled = job->cancelled();
    if (!cancelled && now <= job->deadline_) {
      ++it;
      continue;
    }
    batcher_.cancel(job->ticket_);
    it = running_.erase(it);
    // A deadline ends an answer as max_tokens does.
    finish(job, cancelled ? "cancelled" : "length");
  }
}

}  // namespace kvp::server
