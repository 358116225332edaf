#pragma once
// One prefill of a context serves a whole grid of (press, ratio) cells. Presses act after a
// layer's attention and never change the hidden states that flow on to later layers, so a
// single forward pass yields, layer by layer, exactly the rows every press would have seen
// in its own run: the grid hook copies each just-written layer into every cell's own cache
// and runs that cell's press there (a composed press sees its own compacted cache). The full
// cache stays uncompressed and answers for the baseline. A press that changes the forward
// pass itself (Press::needs_own_prefill) gets its own prefill instead.
#include <cstdint>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"

namespace kvp {

struct GridQuestion {
  std::string question;
  std::string answer_prefix;
  int max_new_tokens = 64;
};

struct GridCellAnswers {
  std::vector<std::string> answers;  // one per question
  double compress_s = 0;
  int64_t kept_rows = 0;  // context rows kept over all layers and kv heads
  bool own_prefill = false;
};

struct GridContextResult {
  std::vector<GridCellAnswers> cells;  // in the order of the cells given (nullptr: baseline)
  int64_t context_tokens = 0;
  double prefill_s = 0;  // the shared forward, including every cell's compression
  double answer_s = 0;   // question prefills and decoding, all cells batched together
};

// Prefills `context` once and answers every question for every cell; cells[i] == nullptr
// is the uncompressed baseline. Throws Error when context + question + answer do not fit
// the model's positions.
GridContextResult run_grid_context(LoadedModel& loaded, const std::string& context,
                                   const std::vector<GridQuestion>& questions,
                                   const std::vector<Press*>& cells);

// Tokens the pipeline feeds for this context (the chat template's prefix included).
int64_t context_token_count(const LoadedModel& loaded, const std::string& context);

}  // namespace kvp
