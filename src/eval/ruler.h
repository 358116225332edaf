#pragma once
// A RULER-style synthetic long-context benchmark (Hsieh et al., 2024), written from the
// task descriptions: needle-in-a-haystack retrieval in several flavours, variable tracking,
// common and frequent words extraction. Rows are deterministic in the seed and filled to a
// chosen context length, measured with the model's own tokenizer.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/dataset.h"

namespace kvp {

struct RulerOptions {
  int64_t context_length = 1024;  // tokens of the context text (the chat template not included)
  int samples = 4;                // rows per task
  uint64_t seed = 42;
  std::vector<std::string> tasks;  // empty: every task
  std::string haystack;            // prose for the text haystack; empty: the built-in one
};

// Task names in their canonical order.
const std::vector<std::string>& ruler_tasks();
// Throws Error for a name that is not a task, suggesting the closest one.
void check_ruler_task(const std::string& name);
// The built-in prose haystack (src/eval/default_haystack.txt, embedded at build time).
const std::string& default_haystack();

// Counts the tokens of a piece of text (the model's tokenizer in real runs).
using TokenCounter = std::function<int64_t(const std::string&)>;

// Rows for every requested task, `samples` each, task by task. Throws Error when the context
// length is too small to hold a task's needles and question.
std::vector<EvalRow> generate_ruler(const RulerOptions& options, const TokenCounter& count_tokens);

}  // namespace kvp
