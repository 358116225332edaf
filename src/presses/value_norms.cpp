#include "presses/value_norms.h"

#include <algorithm>
#include <cmath>

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
  const int64_t G = Hq / H, n = cache.length(view.layer, 0);
  for (int h = 1; h < H; ++h)
    check(cache.length(view.layer, h) == n, "value norms need one length for every kv head");
  const Tensor wo = dequantized(be, view.weights->wo);  // [hidden, Hq * D]
  check(wo.rows() == hidden && wo.cols() == Hq * D,
        "value norms: unexpected o_proj shape " + wo.shape_string());
  Scores s{H, n, std::vector<float>(static_cast<size_t>(H * n), 0.f)};
  if (n == 0) return s;
  Tensor slice = Tensor::empty(DType::F32, {hidden, D});
  Tensor out = Tensor::empty(DType::F32, {n, hidden});
  Tensor values;  // kv head h's rows, read once for its G query heads
  for (int64_t q = 0; q < Hq; ++q) {
    const int h = static_cast<int>(q / G);
    if (q % G == 0) values = cache.rows_f32(view.layer, h, KVCache::Part::V, 0, n);
    for (int64_t o = 0; o < hidden; ++o)
      std::copy(wo.ptr<float>() + o * Hq * D + q * D, wo.ptr<float>() + o * Hq * D + (q + 1) * D,
                slice.ptr<float>() + o * D);
    be.matmul(values, slice, out);
    for (int64_t j = 0; j < n; ++j) {
      float l1 = 0;
      for (int64_t o = 0; o < hidden; ++o) l1 += std::fabs(out.ptr<float>()[j * hidden + o]);
      s.at(h, j) += l1;
    }
  }
  for (float& x : s.values) x /= static_cast<float>(G);
  return s;
}

}  // namespace kvp
