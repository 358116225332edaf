#pragma once
// Context + questions -> answers, as kvpress's pipeline does it: the chat template is
// applied and split so the context is a prefix; the context is prefilled once (with a press
// hook, when given); each question (+ answer prefix) is prefilled on the shared cache,
// answered greedily, and the cache is truncated back before the next question. New tokens
// take positions that continue from the original context length.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
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
  size_t kv_bytes_before = 0;  // allocated cache bytes after the context prefill, before any press
  size_t kv_bytes_after = 0;   // after compression
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

class Pipeline {
 public:
  explicit Pipeline(LoadedModel& loaded) : m_(loaded) {}
  // hook: applied during the context prefill only (nullptr: no compression).
  PipelineResult run(const std::string& context, const std::vector<std::string>& questions,
                     const PipelineOptions& options, LayerHook* hook = nullptr);

 private:
  LoadedModel& m_;
};

}  // namespace kvp
