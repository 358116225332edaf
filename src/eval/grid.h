#pragma once
// One prefill of a context serves a whole grid of (press, ratio) cells. Presses act after a
// layer's attention and never change the hidden states that flow on to later layers, so a
// single forward pass yields, layer by layer, exactly the rows every press would have seen
// in its own run. The grid hook gives each cell its kept rows of every layer (shared scores
// where presses name them, Press::score_identity, and then rows borrowed in place from the
// full cache, KVCache::borrow_kept; see docs/architecture.md), the full cache stays
// uncompressed for the baseline, and a press that changes the forward pass itself
// (Press::needs_own_prefill) gets its own prefill. Then the cells answer in batched forwards
// shared with the other live contexts' cells (DecodeBatcher, run_grid_stream).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"

namespace kvp {

// A question of a context: its text, answer prefix and answer limit (pipeline.h).
using GridQuestion = PromptQuestion;

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
  // Question prefills and decoding: this context's share of the batched steps it was in (in
  // proportion to the rows it fed).
  double answer_s = 0;
};

struct GridContext {
  std::string context;
  std::vector<GridQuestion> questions;
  std::vector<Press*> cells;  // nullptr: the uncompressed baseline
  std::string label;          // when set, prefixes this context's errors ("line 3: ...")
};

// Prefills `context` once and answers every question for every cell; cells[i] == nullptr
// is the uncompressed baseline. Throws Error when context + question + answer do not fit
// the model's positions.
GridContextResult run_grid_context(LoadedModel& loaded, const std::string& context,
                                   const std::vector<GridQuestion>& questions,
                                   const std::vector<Press*>& cells);

// run_grid_context for several contexts, with continuous batching: at most `live_contexts`
// contexts are answering at a time; each is prefilled on its own when a place is free, then
// its cells' questions join the batched forwards (DecodeBatcher) in which the cells of the
// other live contexts decode. A decode step of 8 contexts x 25 cells is one 200-row matmul
// instead of eight 25-row ones, and the step stays that full while a few cells of one
// context still decode a long answer. on_done(index, result) is called as each context
// finishes (not necessarily in order). Memory: `live_contexts` full caches and their cells'
// answer rows. Errors of a context are prefixed with its label.
void run_grid_stream(LoadedModel& loaded, const std::vector<GridContext>& contexts,
                     size_t live_contexts,
                     const std::function<void(size_t, GridContextResult&&)>& on_done);

// All the contexts live at once; results in the order given.
std::vector<GridContextResult> run_grid_contexts(LoadedModel& loaded,
                                                 const std::vector<GridContext>& contexts);

}  // namespace kvp
