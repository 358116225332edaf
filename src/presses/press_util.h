#pragma once
// Helpers shared by presses that recompute queries or read weights, and by wrapper presses
// that build an inner press.
#include <memory>
#include <string>
#include <vector>

#include "presses/registry.h"

namespace kvp {

// Pre-RoPE queries of hidden-state rows [begin, end) of the view: q_proj(h) (+ bias on
// Qwen2, q_norm on Qwen3), as kvpress's get_prerope_query_states. [end - begin, Hq, d] F32.
Tensor prerope_queries(const LayerView& view, int64_t begin, int64_t end);
// The same rows, read-only: a view of the forward pass's kept queries when it kept them
// (no copy), else computed as above.
Tensor prerope_query_rows(const LayerView& view, int64_t begin, int64_t end);

// A weight matrix [rows, cols] of any DType as F32, dequantised through the backend.
Tensor dequantized(Backend& backend, const Tensor& weight);

// The press as a ScorerPress (one score per row and head), or an Error naming the wrapper.
std::unique_ptr<ScorerPress> as_scorer_press(std::unique_ptr<Press> press,
                                             const std::string& wrapper);
// Builds the inner press of a wrapper: it must exist, score rows (ScorerPress) and keep one
// length per layer (not head-wise); otherwise throws Error naming the wrapper.
std::unique_ptr<ScorerPress> make_inner_scorer(const std::string& wrapper, const std::string& inner,
                                               double ratio, PressArgs& args);

// The kv heads' common row count of a layer; throws Error when heads differ (head-wise).
int64_t uniform_length(const LayerView& view, const std::string& press);

}  // namespace kvp
