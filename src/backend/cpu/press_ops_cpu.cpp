// Ops that presses need: attention probabilities summed over queries (SnapKV, TOVA,
// ObservedAttention, PyramidKV).
//
// attention_column_sums: work items are (segment, block of queries); the G query heads of a
// segment are done together so each key row is read once per query. Each item accumulates
// into its own partial row of L floats, and the partials are added in a fixed order, so the
// result does not depend on the number of threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace kvp::cpu {

namespace {

// Dot product with 16 independent lanes (vectorised without -ffast-math).
inline float dot(const float* a, const float* b, int64_t D) {
  float lane[16] = {};
  int64_t d = 0;
  for (; d + 16 <= D; d += 16)
    for (int i = 0; i < 16; ++i) lane[i] += a[d + i] * b[d + i];
  float s = 0;
  for (; d < D; ++d) s += a[d] * b[d];
  for (int i = 0; i < 16; ++i) s += lane[i];
  return s;
}

}  // namespace

void attention_column_sums(ThreadPool& pool, const Tensor& q, const KvSegments& kv, float scale,
                           Tensor& out) {
  check(q.dtype() == DType::F32 && out.dtype() == DType::F32,
        "attention_column_sums: q and out must be F32");
  check(q.ndim() == 3, "attention_column_sums: q must be [Tq, Hq, D]");
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2);
  check(D == kv.head_dim, "attention_column_sums: q head_dim differs from the cache's");
  check(kv.n_segments > 0 && Hq % kv.n_segments == 0,
        "attention_column_sums: query heads not a multiple of kv heads");
  check(out.ndim() == 2 && out.dim(0) == kv.n_segments,
        "attention_column_sums: out must be [n_segments, L]");
  check(!kv.has_prefix(), "attention_column_sums: segments with a borrowed prefix are not supported");
  const int64_t S = kv.n_segments, L = out.dim(1), G = Hq / S;
  for (int64_t g = 0; g < S; ++g)
    check(kv.len[g] >= T && kv.len[g] <= L, "attention_column_sums: segment length out of range");
  float* o = out.ptr<float>();
  std::fill(o, o + S * L, 0.f);
  if (T == 0) return;

  // Blocks of queries per segment: a fixed count, so partial sums never depend on threads.
  const int64_t n_blocks = std::min<int64_t>(T, 8);
  const int64_t n_items = S * n_blocks;
  std::vector<float> partial(static_cast<size_t>(n_items * L), 0.f);
  const float* Q = q.ptr<float>();

  pool.parallel_for(n_items, [&](int64_t begin, int64_t end) {
    std::vector<float> s;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / n_blocks, b = item % n_blocks;
      // Later queries see more keys: split the query range so blocks have similar work.
      const int64_t len = kv.len[g];
      auto work_before = [&](int64_t t) {  // keys seen by queries [0, t)
        const int64_t first = len - T + 1;
        return static_cast<double>(t) * static_cast<double>(first) +
               static_cast<double>(t) * static_cast<double>(t - 1) / 2;
      };
      const double total = work_before(T);
      auto boundary = [&](int64_t k) {
        if (k >= n_blocks) return T;
        int64_t lo = 0, hi = T;  // smallest t with work_before(t) >= total * k / n_blocks
        const double target = total * static_cast<double>(k) / static_cast<double>(n_blocks);
        while (lo < hi) {
          const int64_t mid = (lo + hi) / 2;
          if (work_before(mid) >= target)
            hi = mid;
          else
            lo = mid + 1;
        }
        return lo;
      };
      const int64_t t0 = boundary(b), t1 = boundary(b + 1);
      float* acc = partial.data() + item * L;
      const float* K = kv.k + kv.offset[g] * D;
      s.resize(static_cast<size_t>(G * len));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = len - T + t + 1;
        const float* qt = Q + (t * Hq + g * G) * D;
        for (int64_t j = 0; j < n; ++j) {
          const float* kr = K + j * D;
          for (int64_t h = 0; h < G; ++h)
            s[static_cast<size_t>(h * len + j)] = dot(qt + h * D, kr, D) * scale;
        }
        for (int64_t h = 0; h < G; ++h) {
          float* sh = s.data() + h * len;
          float mx = -INFINITY;
          for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sh[j]);
          float sum = 0;
          for (int64_t j = 0; j < n; ++j) {
            sh[j] = std::exp(sh[j] - mx);
            sum += sh[j];
          }
          const float inv = 1.f / sum;
          for (int64_t j = 0; j < n; ++j) acc[j] += sh[j] * inv;
        }
      }
    }
  });
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t g = item / n_blocks;
    const float* p = partial.data() + item * L;
    float* og = o + g * L;
    for (int64_t j = 0; j < kv.len[g]; ++j) og[j] += p[j];
  }
}

}  // namespace kvp::cpu
