#include "presses/value_norms.h"

#include "core/error.h"
#include "presses/press_util.h"

namespace kvp {

Scores output_value_norms(LayerView& view) {
  check(view.config && view.weights && view.backend && view.cache,
        "value norms need the layer's config, weights, backend and cache");
  const ModelConfig& c = *view.config;
  Backend& be = *view.backend;
  const KVCache& cache = *view.cache;
  const int64_t Hq = c.n_heads, D = c.head_dim, hidden = c.hidden;
  const int H = cache.n_segments();
  const int64_t G = Hq / H, n = uniform_length(view, "value norms");
  const Tensor wo = dequantized(be, view.weights->wo);  // [hidden, Hq * D]
  check(wo.rows() == hidden && wo.cols() == Hq * D,
        "value norms: unexpected o_proj shape " + wo.shape_string());
  Scores s = alloc_scores(be, H, n);
  if (n == 0) return s;
  // wo as rows of head_dim: row o * Hq + q is wo[o, q * D : (q + 1) * D], so query head q's
  // slice W_o^(q) ([hidden, D]) is a copy_rows of `hidden` of them.
  const Tensor wo_rows = wo.reshaped({hidden * Hq, D});
  Tensor slice = be.alloc(DType::F32, {hidden, D});
  Tensor out = be.alloc(DType::F32, {n, hidden});
  Tensor l1 = be.alloc(DType::F32, {1, n});
  std::vector<int64_t> from(static_cast<size_t>(hidden)), to(static_cast<size_t>(hidden));
  for (int64_t o = 0; o < hidden; ++o) to[static_cast<size_t>(o)] = o;
  Tensor values;  // kv head h's rows, read once for its G query heads
  for (int64_t q = 0; q < Hq; ++q) {
    const int h = static_cast<int>(q / G);
    if (q % G == 0) values = cache.rows_f32(view.layer, h, KVCache::Part::V, 0, n);
    for (int64_t o = 0; o < hidden; ++o) from[static_cast<size_t>(o)] = o * Hq + q;
    be.copy_rows(wo_rows, from.data(), slice, to.data(), hidden);
    be.matmul(values, slice, out);
    be.row_norms(out, Norm::L1, l1);
    Tensor sum = s.head(h);
    be.add(sum, l1);
  }
  be.affine(s.values, 1.f / static_cast<float>(G), 0.f);
  return s;
}

}  // namespace kvp
