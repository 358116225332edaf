#pragma once
// Scores and the plans made from them, in the backend's memory. A press computes its scores
// with backend ops (norms, reductions, attention sums, top-k) so that no K, V or query row
// reaches the host; what comes back is the plan: the kept rows' indices, which the cache's
// host bookkeeping (lengths, positions) needs anyway.
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "cache/kv_cache.h"

namespace kvp {

// Per (batch 0) kv head, higher = keep: values [n_heads, n_rows] F32 on a backend.
struct Scores {
  int n_heads = 0;
  int64_t n_rows = 0;
  Tensor values;

  Backend& backend() const;
  // Row h, [1, n_rows]: a view of values.
  Tensor head(int h) const;
};

// Zeroed scores [n_heads, n_rows] on `backend`.
Scores alloc_scores(Backend& backend, int n_heads, int64_t n_rows);
// Scores [n_heads, n_rows] that all equal `value`.
Scores full_scores(Backend& backend, int n_heads, int64_t n_rows, float value);
// A copy in the same backend (for plans that edit the scores they were given).
Scores copy_scores(const Scores& s);
// Scores made on the host from values that are not cache rows (positions, a seed): uploaded.
Scores upload_scores(Backend& backend, int n_heads, int64_t n_rows,
                     const std::vector<float>& values);
// Host copies of small results (and of scores, for tests).
std::vector<float> download_f32(const Tensor& t);
std::vector<int32_t> download_i32(const Tensor& t);
// A tensor of `backend` holding host values (small per-layer inputs such as a divisor per row).
Tensor upload_f32(Backend& backend, const std::vector<float>& values);

// The k best rows of each head (Backend::top_k), descending, read back as a plan. This index
// list is the one per-layer result a scorer press reads back.
KeepPlan top_k_plan(const Tensor& scores, int64_t k);
// The same for one row of scores ([1, n]): its k best indices.
std::vector<int32_t> top_k_row(const Tensor& row, int64_t k);

}  // namespace kvp
