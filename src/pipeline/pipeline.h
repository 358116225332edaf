#pragma once
// Context + questions -> answers, as kvpress's pipeline does it: the chat template is
// applied and split so the context is a prefix; the context is prefilled once (with a press
// hook, when given); each question (+ answer prefix) is prefilled on the shared cache,
// answered greedily, and the cache is truncated back before the next question. New tokens
// take positions that continue from the original context length.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/model.h"
#include "pipeline/sampler.h"
#include "presses/press.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace kvp {

class Backend;

// A loaded model with its tokenizer and chat template.
struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  ChatTemplate chat;
  std::string path;
};
// GGUF file or Hugging Face directory (with tokenizer.json).
LoadedModel load(const std::string& path, Backend& backend, bool use_chat_template = true);

struct PipelineOptions {
  int max_new_tokens = 64;
  SamplingParams sampling;  // greedy by default (temperature 0)
  std::string answer_prefix;
  int64_t max_context_length = 0;  // 0: no truncation (beyond the model's own limit)
};

struct Answer {
  std::string question;
  std::string text;
  std::vector<int32_t> tokens;
  double prefill_s = 0;  // question prefill
  double decode_s = 0;
};

struct PipelineResult {
  std::vector<Answer> answers;
  int64_t context_tokens = 0;
  double context_prefill_s = 0;
  double compress_s = 0;
  // The context's K and V rows before and after compression, kept apart from the reserve for
  // the question and answer, which would hide the ratio on a short context.
  size_t context_bytes_before = 0;
  size_t context_bytes_after = 0;
  size_t reserve_bytes = 0;    // free rows for the longest question and the answer
  size_t allocated_bytes = 0;  // what the cache holds after compression: all of the above
  double achieved_ratio = 0;   // 1 - kept context rows / context rows, over all layers and heads
  std::vector<std::vector<int64_t>> head_lens;  // kept rows per layer and kv head
  int64_t decode_tokens() const;
  double decode_s() const;
};

// Splits a templated conversation into the context prefix and the question suffix
// (what follows the user's content, e.g. "<|im_end|>\n<|im_start|>assistant\n").
struct PromptParts {
  std::string context;          // template prefix + context text
  std::string question_suffix;  // appended to every question
};
PromptParts split_prompt(const ChatTemplate& chat, const Tokenizer& tokenizer,
                         const std::string& context);
// The same cut for a whole conversation (the server's): everything up to the end of the last
// message, which must be the user's, is the context; the template's text after it (the
// assistant header) is the suffix. split_prompt(c) is split_conversation({{"user", c}}).
PromptParts split_conversation(const ChatTemplate& chat, std::vector<ChatMessage> messages);

// One question of a prompt: the question, the answer prefix that follows it and the most
// tokens its answer may take.
struct PromptQuestion {
  std::string question;
  std::string answer_prefix;
  int max_new_tokens = 64;
};

// A context and its questions as token ids, built one way for Pipeline::run and the eval
// grid (build_prompt): the context prefix of split_prompt (BOS as the template wants), each
// question as question + question_suffix + answer_prefix, and the rows the cache keeps free
// after the context.
struct Prompt {
  std::vector<int32_t> context_ids;
  std::vector<std::vector<int32_t>> question_ids;  // one per question, in order
  // Free rows per kv head after the (compressed) context: the largest question + answer limit.
  int64_t reserve = 0;

  int64_t context_tokens() const { return static_cast<int64_t>(context_ids.size()); }
  // The context's positions: 0, 1, ..., T - 1.
  std::vector<int32_t> context_positions() const;
  // question_position() for this prompt's context.
  int64_t first_position(const Press* press, const KVCache& cache) const;
};

// Tokenises `context` and `questions` as above; max_context_length > 0 cuts the context's
// ids to that many. Throws Error for an empty context or question list, a negative answer
// limit, or a context + question + answer that does not fit the model's positions.
Prompt build_prompt(const LoadedModel& loaded, const std::string& context,
                    const std::vector<PromptQuestion>& questions, int64_t max_context_length = 0);

// Tokens the context prefix takes (the chat template's included), as build_prompt counts them.
int64_t context_token_count(const LoadedModel& loaded, const std::string& context);
// The ids of a context prefix (split_prompt's or split_conversation's): BOS as the template
// wants, special tokens parsed.
std::vector<int32_t> encode_context(const LoadedModel& loaded, const PromptParts& parts);

// Prefills `ids` at positions 0, 1, ... into `cache`, compressed by `press` (nullptr: none)
// with `reserve` free rows left after each segment, as the pipeline reads its context.
// Returns where a question's positions start (question_position); compress_seconds gets the
// press's time.
int64_t prefill_context(Model& model, const std::vector<int32_t>& ids, KVCache& cache, Press* press,
                        int64_t reserve, double* compress_seconds = nullptr);
// The first position of a question on `cache` once `press` (nullptr: none) has compressed a
// context of `context_tokens`: kvpress continues from the original context length, except
// after key re-rotation, where the kept keys sit at 0..n_kept-1 (layer 0's length).
int64_t question_position(const Press* press, const KVCache& cache, int64_t context_tokens);

// Greedy answer to one question on a prefilled (possibly compressed) cache, as kvpress
// decodes: question ids prefilled at positions first_position.., then up to max_new_tokens
// argmax tokens; the first is always taken, a later stop token ends the answer (it is kept
// in the ids, never fed back). The cache is left holding the question and answer rows.
std::vector<int32_t> greedy_answer(Model& model, KVCache& cache,
                                   const std::vector<int32_t>& question_ids, int64_t first_position,
                                   int max_new_tokens, const std::function<bool(int32_t)>& is_stop,
                                   double* prefill_seconds = nullptr);

// One cache's question for greedy_answers_batched.
struct AnswerRequest {
  KVCache* cache = nullptr;
  const std::vector<int32_t>* question_ids = nullptr;
  int64_t first_position = 0;
  int max_new_tokens = 0;
  SamplingParams sampling;  // each request draws from its own seeded generator
};

// greedy_answer for several caches at once, each with its own question (the eval grid's
// cells, of one context or several; with one cache it is greedy_answer): the questions are
// prefilled on their caches in one batched forward, then each step decodes one token for
// every cache still answering, again in one forward. Each cache gets the answer
// greedy_answer would give it alone, up to summation order (a step of 4 or more rows uses
// the blocked matmul, not the one-row kernel: ~1e-6 relative).
std::vector<std::vector<int32_t>> greedy_answers_batched(
    Model& model, const std::vector<AnswerRequest>& requests,
    const std::function<bool(int32_t)>& is_stop, double* prefill_seconds = nullptr);
// The engine of greedy_answers_batched, for requests that come and go (the eval grid keeps
// its batch full by adding the cells of a new context as others finish): each step() is one
// batched forward over every active request, the question rows of a request added since
// the last step or one decoded token for the others. A request's tokens do not depend on
// what else is in the batch (up to summation order, as above).
class DecodeBatcher {
 public:
  DecodeBatcher(Model& model, std::function<bool(int32_t)> is_stop);
  // Queues a request (its cache and question must outlive it) and returns its ticket: 0, 1,
  // ... in the order of the calls. A request with max_new_tokens <= 0 finishes at the next
  // step without a forward and without tokens.
  size_t add(const AnswerRequest& request);
  bool busy() const { return !active_.empty() || !finished_.empty(); }

  struct Planned {
    size_t ticket;
    int64_t rows;  // rows the next step feeds for this request
  };
  std::vector<Planned> planned() const;

  struct Finished {
    size_t ticket;
    std::vector<int32_t> tokens;
  };
  // One forward over the active requests; returns the requests that finished.
  std::vector<Finished> step();
  // The token every request took in the last step (finished ones included), for callers
  // that stream or check stop strings as tokens come.
  struct Emitted {
    size_t ticket;
    int32_t token;
  };
  const std::vector<Emitted>& emitted() const { return emitted_; }
  // Drops an active request (a stop string matched, its client left): it takes no further
  // step and is not reported as finished. False when the ticket is not active.
  bool cancel(size_t ticket);

 private:
  struct Sequence {
    AnswerRequest request;
    size_t ticket = 0;
    std::vector<int32_t> question_positions;
    std::vector<int32_t> tokens;
    int32_t next = 0;      // the last token taken, fed by the next step
    int32_t position = 0;  // its position
    bool prefilled = false;
    std::optional<Sampler> sampler;  // null: greedy
  };
  // The next token of every active sequence: one device-side argmax when all decode
  // greedily, else the logits on the host, greedy or sampled per sequence.
  std::vector<int32_t> next_tokens();
  Model& model_;
  std::function<bool(int32_t)> is_stop_;
  std::vector<Sequence> active_;
  std::vector<Finished> finished_;
  std::vector<Emitted> emitted_;
  std::vector<ForwardGroup> groups_;
  std::vector<float> logits_;
  size_t next_ticket_ = 0;
};

// The same question on every cache; first_positions[i] is cache i's.
std::vector<std::vector<int32_t>> greedy_answers_batched(
    Model& model, const std::vector<KVCache*>& caches, const std::vector<int32_t>& question_ids,
    const std::vector<int64_t>& first_positions, int max_new_tokens,
    const std::function<bool(int32_t)>& is_stop, double* prefill_seconds = nullptr);

class Pipeline {
 public:
  explicit Pipeline(LoadedModel& loaded) : m_(loaded) {}
  // press: applied during the context prefill only (nullptr: no compression).
  PipelineResult run(const std::string& context, const std::vector<std::string>& questions,
                     const PipelineOptions& options, Press* press = nullptr);

 private:
  LoadedModel& m_;
};

}  // namespace kvp
