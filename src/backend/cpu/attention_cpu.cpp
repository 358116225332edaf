// Causal attention over the segmented cache, flash style: each (query, head) pair streams its
// segment's rows in blocks with an online softmax, so memory stays O(head_dim) per pair.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/simd.h"
#include "core/error.h"

namespace kvp::cpu {

void attention(ThreadPool& pool, const Tensor& q, const KvSegments& kv, float scale, Tensor& out) {
  check(q.dtype() == DType::F32 && out.dtype() == DType::F32, "attention: q and out must be F32");
  check(q.ndim() == 3, "attention: q must be [T, Hq, D], got " + q.shape_string());
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2);
  check(D == kv.head_dim, "attention: q head_dim " + std::to_string(D) + " differs from the cache's " +
                              std::to_string(kv.head_dim));
  check(kv.n_segments > 0 && Hq % kv.n_segments == 0, "attention: query heads not a multiple of kv heads");
  check(out.numel() == q.numel(), "attention: out must have q's shape");
  const int64_t group = Hq / kv.n_segments;
  for (int s = 0; s < kv.n_segments; ++s)
    check(kv.len[s] >= T, "attention: segment " + std::to_string(s) + " holds " + std::to_string(kv.len[s]) +
                              " rows, fewer than the " + std::to_string(T) + " new ones");
  const float* qp = q.ptr<float>();
  float* op = out.ptr<float>();
  constexpr int64_t kBlock = 64;
  pool.parallel_for(T * Hq, [&](int64_t b, int64_t e) {
    std::vector<float> acc(static_cast<size_t>(D)), sc(kBlock);
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = item / Hq, h = item % Hq, g = h / group;
      const int64_t n = kv.len[g] - T + t + 1;
      const float* qv = qp + (t * Hq + h) * D;
      const float* K = kv.k + kv.offset[g] * D;
      const float* V = kv.v + kv.offset[g] * D;
      float mx = -INFINITY, sum = 0.f;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
        const int64_t j1 = std::min(n, j0 + kBlock);
        float bmx = -INFINITY;
        for (int64_t j = j0; j < j1; ++j) {
          sc[static_cast<size_t>(j - j0)] = dot_f32(qv, K + j * D, D) * scale;
          bmx = std::max(bmx, sc[static_cast<size_t>(j - j0)]);
        }
        if (bmx > mx) {
          const float r = std::exp(mx - bmx);
          sum *= r;
          for (auto& a : acc) a *= r;
          mx = bmx;
        }
        for (int64_t j = j0; j < j1; ++j) {
          const float p = std::exp(sc[static_cast<size_t>(j - j0)] - mx);
          sum += p;
          axpy_f32(p, V + j * D, acc.data(), D);
        }
      }
      float* o = op + (t * Hq + h) * D;
      const float inv = 1.0f / sum;
      for (int64_t i = 0; i < D; ++i) o[i] = acc[static_cast<size_t>(i)] * inv;
    }
  });
}

}  // namespace kvp::cpu
