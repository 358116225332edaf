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
#include "backend/cpu/kv_rows.h"
#include "backend/cpu/simd.h"
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

#if defined(__AVX512F__)

// s[h * ld + j] = scale * q[h] . K[j] for h < NH and 32-key chunks covering j < n, from the
// transposed keys kt ([D][ldk]).
template <int NH>
void scores_from_kt(const float* q, int64_t D, const float* kt, int64_t ldk, int64_t n, float scale,
                    float* s, int64_t ld) {
  const __m512 vs = _mm512_set1_ps(scale);
  for (int64_t j0 = 0; j0 < n; j0 += 32) {
    __m512 a0[NH], a1[NH];
    for (int h = 0; h < NH; ++h) a0[h] = a1[h] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const __m512 k0 = _mm512_loadu_ps(kt + d * ldk + j0),
                   k1 = _mm512_loadu_ps(kt + d * ldk + j0 + 16);
      for (int h = 0; h < NH; ++h) {
        const __m512 qv = _mm512_set1_ps(q[h * D + d]);
        a0[h] = _mm512_fmadd_ps(qv, k0, a0[h]);
        a1[h] = _mm512_fmadd_ps(qv, k1, a1[h]);
      }
    }
    for (int h = 0; h < NH; ++h) {
      _mm512_storeu_ps(s + h * ld + j0, _mm512_mul_ps(a0[h], vs));
      _mm512_storeu_ps(s + h * ld + j0 + 16, _mm512_mul_ps(a1[h], vs));
    }
  }
}

// acc[j] += softmax_j(s[0:n])[j]: masked max, exp_ps, sum, then the normalised add.
void add_softmax(float* s, int64_t n, float* acc) {
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = first_lanes(n - j);
    mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, s + j));
  }
  const __m512 vm = _mm512_set1_ps(hmax(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = first_lanes(n - j);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_loadu_ps(s + j), vm)));
    _mm512_storeu_ps(s + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.f / hsum(sum));
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = first_lanes(n - j);
    const __m512 a = _mm512_maskz_loadu_ps(m, acc + j);
    _mm512_mask_storeu_ps(acc + j, m, _mm512_fmadd_ps(_mm512_loadu_ps(s + j), inv, a));
  }
}

// Queries [t0, t1) of segment g's G heads, added into acc (one partial row of L floats).
void column_sums_avx512(const float* Q, int64_t Hq, int64_t G, int64_t T, int64_t g, int64_t D,
                        const float* kt, int64_t ldk, int64_t len, float scale, int64_t t0,
                        int64_t t1, float* acc) {
  thread_local std::vector<float> s;
  s.resize(static_cast<size_t>(4 * ldk));
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = len - T + t + 1;
    for (int64_t h0 = 0; h0 < G; h0 += 4) {
      const float* q = Q + (t * Hq + g * G + h0) * D;
      const int64_t nh = std::min<int64_t>(4, G - h0);
      switch (nh) {
        case 4:
          scores_from_kt<4>(q, D, kt, ldk, n, scale, s.data(), ldk);
          break;
        case 3:
          scores_from_kt<3>(q, D, kt, ldk, n, scale, s.data(), ldk);
          break;
        case 2:
          scores_from_kt<2>(q, D, kt, ldk, n, scale, s.data(), ldk);
          break;
        default:
          scores_from_kt<1>(q, D, kt, ldk, n, scale, s.data(), ldk);
          break;
      }
      for (int64_t h = 0; h < nh; ++h) add_softmax(s.data() + h * ldk, n, acc);
    }
  }
}

#endif  // __AVX512F__

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
  check(!kv.has_prefix(),
        "attention_column_sums: segments with a borrowed prefix are not supported");
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

  // AVX-512: each segment's keys transposed once ([D][ldk], zero-padded to whole 32-key
  // chunks), so scores of 32 keys are 2 * D broadcast-FMAs per query head, no horizontal sums.
#if defined(__AVX512F__)
  const bool vector_path = D % 16 == 0;
  const int64_t ldk = (L + 31) / 32 * 32;
  std::vector<float> kt;
  if (vector_path) {
    kt.assign(static_cast<size_t>(S * D * ldk), 0.f);
    std::vector<float> conv;
    for (int64_t g = 0; g < S; ++g) {
      const float* K = f32_segment(kv, g, false, conv);
      float* dst = kt.data() + g * D * ldk;
      int64_t j = 0;
      for (; j + 16 <= kv.len[g]; j += 16)
        for (int64_t d = 0; d < D; d += 16) transpose16(K + j * D + d, D, dst + d * ldk + j, ldk);
      for (; j < kv.len[g]; ++j)
        for (int64_t d = 0; d < D; ++d) dst[d * ldk + j] = K[j * D + d];
    }
  }
#endif
  pool.parallel_for(n_items, [&](int64_t begin, int64_t end) {
    std::vector<float> s, conv;
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
#if defined(__AVX512F__)
      if (vector_path) {
        column_sums_avx512(Q, Hq, G, T, g, D, kt.data() + g * D * ldk, ldk, len, scale, t0, t1,
                           acc);
        continue;
      }
#endif
      const float* K = f32_segment(kv, g, false, conv);
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
