#include "pipeline/pipeline.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "core/error.h"

namespace kvp {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

LoadedModel load(const std::string& path, Backend& backend, bool use_chat_template) {
  LoadedModel m;
  m.path = path;
  m.model = load_model(path, backend);
  m.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_model_path(path));
  check(m.tokenizer->vocab_size() <= m.model->config().vocab_size,
        "tokenizer has more tokens (" + std::to_string(m.tokenizer->vocab_size()) +
            ") than the model's vocabulary (" + std::to_string(m.model->config().vocab_size) + ")");
  m.chat =
      use_chat_template ? ChatTemplate::detect(m.tokenizer->chat_template()) : ChatTemplate::none();
  return m;
}

int64_t PipelineResult::decode_tokens() const {
  int64_t n = 0;
  for (const auto& a : answers) n += static_cast<int64_t>(a.tokens.size());
  return n;
}

double PipelineResult::decode_s() const {
  double s = 0;
  for (const auto& a : answers) s += a.decode_s;
  return s;
}

PromptParts split_prompt(const ChatTemplate& chat, const Tokenizer& tokenizer,
                         const std::string& context) {
  (void)tokenizer;
  return split_conversation(chat, {{"user", context}});
}

PromptParts split_conversation(const ChatTemplate& chat, std::vector<ChatMessage> messages) {
  check(!messages.empty() && messages.back().role == "user",
        "the conversation must end with a user message");
  PromptParts parts;
  if (chat.format() == ChatFormat::NONE) {
    // As kvpress: without a template, BOS (when the model has one it adds) starts the context
    // and a newline separates the question from the answer.
    parts.context = chat.render(messages, true);
    parts.question_suffix = "\n";
    return parts;
  }
  // Render the conversation with a marker after the last message, then cut at the marker: the
  // text before is the context prefix, the text after is what follows every question.
  const std::string marker = "\n\x01kvpress-split\x01";
  messages.back().content += marker;
  const std::string rendered = chat.render(messages, true);
  const size_t at = rendered.rfind(marker);
  check(at != std::string::npos, "chat template dropped the context");
  parts.context = rendered.substr(0, at);
  parts.question_suffix = rendered.substr(at + marker.size());
  return parts;
}

std::vector<int32_t> encode_context(const LoadedModel& m, const PromptParts& parts) {
  return m.tokenizer->encode(parts.context, true, m.chat.format() == ChatFormat::NONE);
}

int64_t prefill_context(Model& model, const std::vector<int32_t>& ids, KVCache& cache, Press* press,
                        int64_t reserve, double* compress_seconds) {
  const auto T = static_cast<int64_t>(ids.size());
  std::vector<int32_t> positions(ids.size());
  std::iota(positions.begin(), positions.end(), 0);
  std::unique_ptr<PressHook> hook;
  if (press) hook = std::make_unique<PressHook>(*press, reserve);
  if (T > 0) model.forward(ids.data(), positions.data(), T, cache, hook.get());
  if (compress_seconds) *compress_seconds = hook ? hook->seconds() : 0;
  return question_position(press, cache, T);
}

int64_t question_position(const Press* press, const KVCache& cache, int64_t context_tokens) {
  return press && press->rerotates_keys() ? cache.length(0, 0) : context_tokens;
}

std::vector<int32_t> Prompt::context_positions() const {
  std::vector<int32_t> positions(context_ids.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i);
  return positions;
}

int64_t Prompt::first_position(const Press* press, const KVCache& cache) const {
  return question_position(press, cache, context_tokens());
}

Prompt build_prompt(const LoadedModel& loaded, const std::string& context,
                    const std::vector<PromptQuestion>& questions, int64_t max_context_length) {
  check(!context.empty(), "the context is empty");
  check(!questions.empty(), "no question given");
  for (const PromptQuestion& q : questions)
    check(q.max_new_tokens >= 0, "max_new_tokens must be >= 0");

  const PromptParts parts = split_prompt(loaded.chat, *loaded.tokenizer, context);
  Prompt p;
  p.context_ids = encode_context(loaded, parts);
  if (max_context_length > 0 && p.context_tokens() > max_context_length)
    p.context_ids.resize(static_cast<size_t>(max_context_length));
  const int64_t T = p.context_tokens();
  check(T > 0, "the context is empty after tokenisation");

  const PromptQuestion* widest = nullptr;  // the question that needs the most rows
  int64_t widest_ids = 0;
  for (const PromptQuestion& q : questions) {
    p.question_ids.push_back(loaded.tokenizer->encode(
        q.question + parts.question_suffix + q.answer_prefix, true, false));
    const int64_t n = static_cast<int64_t>(p.question_ids.back().size());
    if (!widest || n + q.max_new_tokens > p.reserve) {
      widest = &q;
      widest_ids = n;
      p.reserve = n + q.max_new_tokens;
    }
  }
  const int64_t max_positions = loaded.model->config().max_positions;
  check(T + p.reserve <= max_positions,
        "context (" + std::to_string(T) + " tokens) + question (" + std::to_string(widest_ids) +
            ") + max_new_tokens (" + std::to_string(widest->max_new_tokens) +
            ") exceeds the model's maximum of " + std::to_string(max_positions) + " positions");
  return p;
}

int64_t context_token_count(const LoadedModel& loaded, const std::string& context) {
  const PromptParts parts = split_prompt(loaded.chat, *loaded.tokenizer, context);
  return static_cast<int64_t>(encode_context(loaded, parts).size());
}

std::vector<int32_t> greedy_answer(Model& model, KVCache& cache,
                                   const std::vector<int32_t>& question_ids, int64_t first_position,
                                   int max_new_tokens, const std::function<bool(int32_t)>& is_stop,
                                   double* prefill_seconds) {
  return greedy_answers_batched(model, {&cache}, question_ids, {first_position}, max_new_tokens,
                                is_stop, prefill_seconds)[0];
}

std::vector<std::vector<int32_t>> greedy_answers_batched(
    Model& model, const std::vector<KVCache*>& caches, const std::vector<int32_t>& question_ids,
    const std::vector<int64_t>& first_positions, int max_new_tokens,
    const std::function<bool(int32_t)>& is_stop, double* prefill_seconds) {
  check(first_positions.size() == caches.size(),
        "greedy_answers_batched: one first position per cache");
  std::vector<AnswerRequest> requests;
  for (size_t i = 0; i < caches.size(); ++i)
    requests.push_back({caches[i], &question_ids, first_positions[i], max_new_tokens, {}});
  return greedy_answers_batched(model, requests, is_stop, prefill_seconds);
}

std::vector<std::vector<int32_t>> greedy_answers_batched(
    Model& model, const std::vector<AnswerRequest>& requests,
    const std::function<bool(int32_t)>& is_stop, double* prefill_seconds) {
  std::vector<std::vector<int32_t>> answers(requests.size());
  DecodeBatcher batcher(model, is_stop);
  for (const AnswerRequest& r : requests) batcher.add(r);
  for (bool first = true; batcher.busy(); first = false) {
    const auto t0 = std::chrono::steady_clock::now();
    for (DecodeBatcher::Finished& f : batcher.step()) answers[f.ticket] = std::move(f.tokens);
    // Every question is prefilled by the first step, which decodes nothing yet.
    if (first && prefill_seconds) *prefill_seconds = seconds_since(t0);
  }
  return answers;
}

DecodeBatcher::DecodeBatcher(Model& model, std::function<bool(int32_t)> is_stop)
    : model_(model), is_stop_(std::move(is_stop)) {}

size_t DecodeBatcher::add(const AnswerRequest& request) {
  check(request.cache && request.question_ids,
        "greedy_answers_batched: a request without cache or question");
  const size_t ticket = next_ticket_++;
  if (request.max_new_tokens <= 0) {  // nothing to decode: the question is not even prefilled
    finished_.push_back({ticket, {}});
    return ticket;
  }
  const int64_t n = static_cast<int64_t>(request.question_ids->size());
  check(n > 0, "empty question");
  Sequence s;
  s.request = request;
  s.ticket = ticket;
  if (!request.sampling.greedy()) s.sampler.emplace(request.sampling);
  s.question_positions.resize(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t)
    s.question_positions[static_cast<size_t>(t)] = static_cast<int32_t>(request.first_position + t);
  active_.push_back(std::move(s));
  return ticket;
}

std::vector<DecodeBatcher::Planned> DecodeBatcher::planned() const {
  std::vector<Planned> rows;
  for (const Sequence& s : active_) {
    rows.push_back({s.ticket, s.prefilled ? 1 : static_cast<int64_t>(s.question_positions.size())});
  }
  return rows;
}

std::vector<DecodeBatcher::Finished> DecodeBatcher::step() {
  std::vector<Finished> done;
  std::swap(done, finished_);
  emitted_.clear();
  if (active_.empty()) return done;
  groups_.clear();
  for (Sequence& s : active_) {
    if (s.prefilled) {
      groups_.push_back({&s.next, &s.position, 1, s.request.cache});
    } else {
      groups_.push_back({s.request.question_ids->data(), s.question_positions.data(),
                         static_cast<int64_t>(s.question_positions.size()), s.request.cache});
    }
  }
  const std::vector<int32_t> next = next_tokens();
  size_t kept = 0;
  for (size_t g = 0; g < active_.size(); ++g) {
    Sequence& s = active_[g];
    if (s.prefilled) {
      ++s.position;
    } else {
      s.prefilled = true;
      s.position = static_cast<int32_t>(s.request.first_position +
                                        static_cast<int64_t>(s.question_positions.size()));
    }
    s.next = next[g];
    s.tokens.push_back(s.next);
    emitted_.push_back({s.ticket, s.next});
    // The first token is always taken; a later stop token ends the answer (kept, not fed back).
    const size_t n = s.tokens.size();
    if ((n > 1 && is_stop_(s.next)) || n == static_cast<size_t>(s.request.max_new_tokens)) {
      done.push_back({s.ticket, std::move(s.tokens)});
    } else {
      if (kept != g) active_[kept] = std::move(s);
      ++kept;
    }
  }
  active_.resize(kept);
  return done;
}

bool DecodeBatcher::cancel(size_t ticket) {
  const auto it = std::find_if(active_.begin(), active_.end(),
                               [&](const Sequence& s) { return s.ticket == ticket; });
  if (it == active_.end()) return false;
  active_.erase(it);
  return true;
}

std::vector<int32_t> DecodeBatcher::next_tokens() {
  const bool sampling = std::any_of(active_.begin(), active_.end(),
                                    [](const Sequence& s) { return s.sampler.has_value(); });
  if (!sampling) return model_.forward_batch_greedy(groups_);
  const Tensor& logits = model_.forward_batch(groups_);  // [groups, vocab]
  logits_.resize(static_cast<size_t>(logits.numel()));
  logits.backend()->download(logits, 0, logits_.data(), logits.nbytes());
  const size_t vocab = static_cast<size_t>(logits.cols());
  std::vector<int32_t> next(active_.size());
  for (size_t g = 0; g < active_.size(); ++g) {
    const std::span<const float> row(logits_.data() + g * vocab, vocab);
    next[g] = active_[g].sampler ? active_[g].sampler->next(row) : argmax_token(row);
  }
  return next;
}

PipelineResult Pipeline::run(const std::string& context, const std::vector<std::string>& questions,
                             const PipelineOptions& options, Press* press) {
  Model& model = *m_.model;
  const Tokenizer& tok = *m_.tokenizer;
  const ModelConfig& cfg = model.config();
  std::vector<PromptQuestion> asked;
  for (const auto& q : questions)
    asked.push_back({q, options.answer_prefix, options.max_new_tokens});
  const Prompt prompt = build_prompt(m_, context, asked, options.max_context_length);
  const int64_t T = prompt.context_tokens();
  const int64_t reserve = prompt.reserve;

  PipelineResult result;
  result.context_tokens = T;
  KVCache cache = model.make_cache(T + reserve);
  result.context_bytes_before = cache.bytes_for_rows(T);

  auto t0 = std::chrono::steady_clock::now();
  const int64_t first_position =
      prefill_context(model, prompt.context_ids, cache, press, reserve, &result.compress_s);
  result.context_prefill_s = seconds_since(t0);
  result.allocated_bytes = cache.allocated_bytes();
  result.context_bytes_after = cache.used_bytes();
  result.head_lens = cache.lengths();
  int64_t kept = 0;
  for (const auto& layer : result.head_lens) {
    for (int64_t len : layer) kept += len;
  }
  const int64_t rows = T * cfg.n_layers * cfg.n_kv_heads;
  result.achieved_ratio = 1.0 - static_cast<double>(kept) / static_cast<double>(rows);
  result.reserve_bytes = cache.bytes_for_rows(reserve);
  const auto context_lengths = cache.lengths();

  for (size_t qi = 0; qi < questions.size(); ++qi) {
    Answer answer;
    answer.question = questions[qi];
    const auto& qids = prompt.question_ids[qi];
    t0 = std::chrono::steady_clock::now();
    // Question i draws from seed + i: each answer reproducible on its own.
    AnswerRequest request{&cache, &qids, first_position, options.max_new_tokens, options.sampling};
    request.sampling.seed += qi;
    answer.tokens = greedy_answers_batched(
        model, {request}, [&](int32_t id) { return tok.is_end_of_generation(id); },
        &answer.prefill_s)[0];
    answer.decode_s = seconds_since(t0) - answer.prefill_s;
    answer.text = tok.decode(answer.tokens);
    result.answers.push_back(std::move(answer));
    cache.truncate(context_lengths);
  }
  return result;
}

}  // namespace kvp
