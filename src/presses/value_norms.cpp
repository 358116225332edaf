#include "presses/value_norms.h"

#include <cmath>
#include <vector>

#include "backend/cpu/reference.h"
#include "core/error.h"

namespace kvp {

Scores output_value_norms(LayerView& view) {
  check(view.config && view.weights && view.backend && view.cache,
        "value norms need the layer's config, weights, backend and cache");
  const ModelConfig& cfg = *view.config;
  const KvSegments kv = view.cache->view(view.layer);
  const int H = kv.n_segments, d = kv.head_dim, G = cfg.group_size();
  const int64_t T = kv.len[0];
  for (int h = 1; h < H; ++h)
    check(kv.len[h] == T, "value norms need one length for every kv head");
  const Tensor& wo = view.weights->wo;  // [hidden, n_heads * d]
  const int64_t hidden = wo.dim(0), in = wo.cols();
  check(wo.ndim() == 2 && in == static_cast<int64_t>(cfg.n_heads) * d && G * H == cfg.n_heads,
        "value norms: o_proj has an unexpected shape " + wo.shape_string());

  // o_proj in f32, then one [hidden, d] slice per query head.
  std::vector<float> w(static_cast<size_t>(hidden * in));
  for (int64_t o = 0; o < hidden; ++o)
    ref::dequantize_row(wo.dtype(), wo.row_ptr(o), w.data() + o * in, in);

  Scores s{H, T, std::vector<float>(static_cast<size_t>(H * T), 0.f)};
  if (T == 0) return s;
  Tensor slice = Tensor::empty(DType::F32, {hidden, d});
  Tensor y = Tensor::empty(DType::F32, {T, hidden});
  for (int h = 0; h < H; ++h) {
    const Tensor v = Tensor::view(DType::F32, {T, d}, const_cast<float*>(kv.v + kv.offset[h] * d));
    for (int g = 0; g < G; ++g) {
      const int q = h * G + g;
      float* sl = slice.ptr<float>();
      for (int64_t o = 0; o < hidden; ++o)
        for (int i = 0; i < d; ++i) sl[o * d + i] = w[static_cast<size_t>(o * in + q * d + i)];
      view.backend->matmul(v, slice, y);
      const float* yp = y.ptr<float>();
      for (int64_t j = 0; j < T; ++j) {
        float l1 = 0;
        for (int64_t o = 0; o < hidden; ++o) l1 += std::fabs(yp[j * hidden + o]);
        s.at(h, j) += l1;
      }
    }
    for (int64_t j = 0; j < T; ++j) s.at(h, j) /= static_cast<float>(G);
  }
  return s;
}

}  // namespace kvp
