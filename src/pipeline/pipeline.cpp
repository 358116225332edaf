#include "pipeline/pipeline.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "core/error.h"
#include "io/gguf.h"

namespace kvp {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int32_t argmax(const Tensor& logits, int64_t row = 0) {
  const int64_t n = logits.cols();
  const float* p = logits.ptr<float>() + row * n;
  return static_cast<int32_t>(std::max_element(p, p + n) - p);
}

}  // namespace

LoadedModel load(const std::string& path, Backend& backend, bool use_chat_template) {
  namespace fs = std::filesystem;
  LoadedModel m;
  m.path = path;
  m.model = load_model(path, backend);
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const std::string tok = (fs::path(path) / "tokenizer.json").string();
    check(fs::exists(tok, ec), "model directory " + path + " has no tokenizer.json");
    m.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_hf_json(tok));
  } else {
    m.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_gguf(GgufFile::open(path)));
  }
  check(m.tokenizer->vocab_size() <= m.model->config().vocab_size,
        "tokenizer has more tokens (" + std::to_string(m.tokenizer->vocab_size()) +
            ") than the model's vocabulary (" + std::to_string(m.model->config().vocab_size) + ")");
  m.chat = use_chat_template ? ChatTemplate::detect(m.tokenizer->chat_template()) : ChatTemplate::none();
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
  PromptParts parts;
  if (chat.format() == ChatFormat::NONE) {
    // As kvpress: without a template, BOS (when the model has one it adds) starts the context
    // and a newline separates the question from the answer.
    parts.context = context;
    parts.question_suffix = "\n";
    return parts;
  }
  // Render the conversation with a marker after the context, then cut at the marker: the
  // text before is the context prefix, the text after is what follows every question.
  const std::string marker = "\n\x01kvpress-split\x01";
  const std::string rendered = chat.render({{"user", context + marker}}, true);
  const size_t at = rendered.rfind(marker);
  check(at != std::string::npos, "chat template dropped the context");
  parts.context = rendered.substr(0, at);
  parts.question_suffix = rendered.substr(at + marker.size());
  (void)tokenizer;
  return parts;
}

std::vector<int32_t> greedy_answer(Model& model, KVCache& cache, const std::vector<int32_t>& question_ids,
                                   int64_t first_position, int max_new_tokens,
                                   const std::function<bool(int32_t)>& is_stop, double* prefill_seconds) {
  return greedy_answers_batched(model, {&cache}, question_ids, {first_position}, max_new_tokens,
                                is_stop, prefill_seconds)[0];
}

std::vector<std::vector<int32_t>> greedy_answers_batched(
    Model& model, const std::vector<KVCache*>& caches, const std::vector<int32_t>& question_ids,
    const std::vector<int64_t>& first_positions, int max_new_tokens,
    const std::function<bool(int32_t)>& is_stop, double* prefill_seconds) {
  check(first_positions.size() == caches.size(), "greedy_answers_batched: one first position per cache");
  std::vector<AnswerRequest> requests;
  for (size_t i = 0; i < caches.size(); ++i)
    requests.push_back({caches[i], &question_ids, first_positions[i], max_new_tokens});
  return greedy_answers_batched(model, requests, is_stop, prefill_seconds);
}

std::vector<std::vector<int32_t>> greedy_answers_batched(Model& model,
                                                         const std::vector<AnswerRequest>& requests,
                                                         const std::function<bool(int32_t)>& is_stop,
                                                         double* prefill_seconds) {
  const size_t n_requests = requests.size();
  std::vector<std::vector<int32_t>> answers(n_requests);
  if (prefill_seconds) *prefill_seconds = 0;
  std::vector<std::vector<int32_t>> positions(n_requests);
  std::vector<ForwardGroup> groups;
  std::vector<size_t> active, still;  // requests still answering, in group order
  for (size_t i = 0; i < n_requests; ++i) {
    const AnswerRequest& r = requests[i];
    check(r.cache && r.question_ids, "greedy_answers_batched: a request without cache or question");
    if (r.max_new_tokens <= 0) continue;
    const int64_t n = static_cast<int64_t>(r.question_ids->size());
    check(n > 0, "empty question");
    positions[i].resize(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t)
      positions[i][static_cast<size_t>(t)] = static_cast<int32_t>(r.first_position + t);
    groups.push_back({r.question_ids->data(), positions[i].data(), n, r.cache});
    active.push_back(i);
  }
  if (active.empty()) return answers;
  const auto t0 = std::chrono::steady_clock::now();
  const Tensor* logits = &model.forward_batch(groups);
  if (prefill_seconds) *prefill_seconds = seconds_since(t0);
  std::vector<int32_t> next(n_requests), pos(n_requests);
  for (size_t g = 0; g < active.size(); ++g) {
    const size_t i = active[g];
    next[i] = argmax(*logits, static_cast<int64_t>(g));
    pos[i] = static_cast<int32_t>(requests[i].first_position +
                                  static_cast<int64_t>(requests[i].question_ids->size()));
  }
  still.reserve(active.size());
  // The first token is always taken; a later stop token ends the answer (kept, not fed back).
  for (int step = 0; !active.empty(); ++step) {
    still.clear();
    groups.clear();
    for (size_t i : active) {
      answers[i].push_back(next[i]);
      if ((step > 0 && is_stop(next[i])) || step + 1 == requests[i].max_new_tokens) continue;
      still.push_back(i);
      groups.push_back({&next[i], &pos[i], 1, requests[i].cache});
    }
    std::swap(active, still);
    if (active.empty()) break;
    logits = &model.forward_batch(groups);
    for (size_t g = 0; g < active.size(); ++g) {
      next[active[g]] = argmax(*logits, static_cast<int64_t>(g));
      ++pos[active[g]];
    }
  }
  return answers;
}

PipelineResult Pipeline::run(const std::string& context, const std::vector<std::string>& questions,
                             const PipelineOptions& options, Press* press) {
  Model& model = *m_.model;
  const Tokenizer& tok = *m_.tokenizer;
  const ModelConfig& cfg = model.config();
  check(!context.empty(), "the context is empty");
  check(!questions.empty(), "no question given");
  check(options.max_new_tokens >= 0, "max_new_tokens must be >= 0");

  const PromptParts parts = split_prompt(m_.chat, tok, context);
  std::vector<int32_t> context_ids = tok.encode(parts.context, true, m_.chat.format() == ChatFormat::NONE);
  if (options.max_context_length > 0 && static_cast<int64_t>(context_ids.size()) > options.max_context_length) {
    context_ids.resize(static_cast<size_t>(options.max_context_length));
  }
  std::vector<std::vector<int32_t>> question_ids;
  int64_t longest_question = 0;
  for (const auto& q : questions) {
    question_ids.push_back(tok.encode(q + parts.question_suffix + options.answer_prefix, true, false));
    longest_question = std::max<int64_t>(longest_question, static_cast<int64_t>(question_ids.back().size()));
  }
  const int64_t T = static_cast<int64_t>(context_ids.size());
  check(T > 0, "the context is empty after tokenisation");
  const int64_t needed = T + longest_question + options.max_new_tokens;
  check(needed <= cfg.max_positions,
        "context (" + std::to_string(T) + " tokens) + question (" + std::to_string(longest_question) +
            ") + max_new_tokens (" + std::to_string(options.max_new_tokens) +
            ") exceeds the model's maximum of " + std::to_string(cfg.max_positions) + " positions");

  PipelineResult result;
  result.context_tokens = T;
  const int64_t reserve = longest_question + options.max_new_tokens;
  KVCache cache = model.make_cache(T + reserve);
  result.kv_bytes_before = cache.bytes_for_rows(T + reserve);

  std::vector<int32_t> positions(static_cast<size_t>(std::max(T, longest_question)));
  for (int64_t i = 0; i < T; ++i) positions[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<PressHook> hook;
  if (press) hook = std::make_unique<PressHook>(*press, reserve);
  model.forward(context_ids.data(), positions.data(), T, cache, hook.get());
  result.context_prefill_s = seconds_since(t0);
  result.compress_s = hook ? hook->seconds() : 0;
  result.kv_bytes_after = cache.allocated_bytes();
  result.head_lens = cache.lengths();
  int64_t kept = 0;
  for (const auto& layer : result.head_lens) {
    for (int64_t len : layer) kept += len;
  }
  const int64_t rows = T * cfg.n_layers * cfg.n_kv_heads;
  result.achieved_ratio = 1.0 - static_cast<double>(kept) / static_cast<double>(rows);
  result.reserve_bytes = static_cast<size_t>(reserve * cfg.n_layers * cfg.n_kv_heads) * 2 *
                         static_cast<size_t>(cfg.head_dim) * sizeof(float);
  const auto context_lengths = cache.lengths();
  // kvpress continues positions from the original context length, except after key
  // re-rotation, where kept keys sit at 0..n_kept-1 (layer 0's length).
  const int64_t first_position = press && press->rerotates_keys() ? context_lengths[0][0] : T;

  for (size_t qi = 0; qi < questions.size(); ++qi) {
    Answer answer;
    answer.question = questions[qi];
    const auto& qids = question_ids[qi];
    t0 = std::chrono::steady_clock::now();
    answer.tokens = greedy_answer(model, cache, qids, first_position, options.max_new_tokens,
                                  [&](int32_t id) { return tok.is_end_of_generation(id); }, &answer.prefill_s);
    answer.decode_s = seconds_since(t0) - answer.prefill_s;
    answer.text = tok.decode(answer.tokens);
    result.answers.push_back(std::move(answer));
    cache.truncate(context_lengths);
  }
  return result;
}

}  // namespace kvp
