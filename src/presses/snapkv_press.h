#pragma once
// SnapKV's scoring, shared by snapkv, pyramidkv and tova (docs/kvpress-semantics.md 3.4,
// 3.6, 3.9).
#include <cstdint>

#include "presses/press.h"
#include "presses/press_util.h"

namespace kvp {

// Bounds on the parameters that scale SnapKV's work: the window's queries are scored against
// every key (window * T), and pooling sums min(kernel, T) scores per row.
constexpr int64_t kMaxSnapKvWindow = 1 << 20;
constexpr int64_t kMaxSnapKvKernel = 4095;

// The window SnapKV uses on a layer of n_rows cached rows: window_size when
// n_rows > window_size (kvpress). kvpress.cpp extension: kvpress asserts when the context is
// not longer than the window; we use max(1, min(window_size, n_kept / 2)) instead, with
// n_kept the press's kept count for n_rows, so short contexts (a chat prompt of a few dozen
// tokens) still compress and keep their most recent tokens. Also capped at n_queries.
int64_t snapkv_window(int64_t n_rows, int64_t n_queries, int64_t window_size, int64_t n_kept);

// Attention probabilities of the view's last `window` queries (post-RoPE, view.queries) over
// each kv head's rows, causal inside the window, softmax over all visible rows in f32,
// summed over the window's queries and the G query heads of each kv head: [H, n_rows] F32
// on the view's backend (Backend::attention_column_sums).
Tensor window_attention_sums(LayerView& view, int64_t window);

// SnapKV scores with the given window: mean attention of the window's queries, average-pooled
// (kernel_size, zero padding counted), averaged over the G query heads; the window's own rows
// get the global maximum + 1.
Scores snapkv_scores(LayerView& view, int64_t window, int64_t kernel_size);

}  // namespace kvp
