// Causal attention over the segmented cache, flash style.
//
// The G = Hq / n_segments query heads that share a kv segment are processed together with a
// block of BQ queries: M = G * BQ rows read each block of kBK keys and values once. Per key
// block: S = Q K^T (K block transposed once, then a broadcast-FMA kernel), scale, causal
// mask, online softmax (running max and sum per row, the output rescaled when the max
// grows), O += P V. Memory is O(M * (D + kBK)) per work item, whatever T and the segment
// lengths. With only a few rows per item (decode: M = G), S is computed instead as dot
// products of whole K rows reduced by a transpose-add tree, which skips transposing the
// block. Keys are read through row pointers, so a segment's borrowed prefix (KvSegments)
// costs nothing extra. Work items are (segment, query block, key split): decode (T = 1) has only
// n_segments items, so long segments are also split along the keys (flash-decoding) and
// the partial results merged by their maxima and sums.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kv_rows.h"
#include "backend/cpu/simd.h"
#include "core/error.h"

namespace kvp::cpu {

namespace {

constexpr int64_t kBK = 64;           // keys per block
constexpr int64_t kRowsPerItem = 48;  // target M = G * BQ
// Jobs of at most this many queries (a question on each cache of a batch) take all their
// queries in one item per segment when the batch has items enough for the threads: each
// key block is then transposed once per segment instead of once per 48-row block.
constexpr int64_t kWholeJobQueries = 64;
constexpr int64_t kMinKeysPerSplit = 256;
// Up to this many rows per item (G query heads x BQ queries) compute S as dot products of
// K rows; more rows amortise transposing the K block (decode with G = 3 or 4 uses dots).
[[maybe_unused]] constexpr int64_t kMaxDotRows = 4;  // AVX-512 path only

struct Item {
  int64_t g, t0, t1, k0, k1;  // segment, queries [t0, t1), keys [k0, k1)
};

// Partial result of one item: per row, running max, sum and unnormalised output.
struct Partial {
  std::vector<float> m, l, o;
};

#if defined(__AVX512F__)

// s[r, 0:64] = sum_d q[r, d] * kt[d, 0:64] for r < NR (accumulators stay in registers).
template <int NR>
void qk_rows(const float* q, int64_t D, const float* kt, float* s) {
  __m512 acc[NR][4];
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    const float* kd = kt + d * kBK;
    const __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16),
                 k2 = _mm512_loadu_ps(kd + 32), k3 = _mm512_loadu_ps(kd + 48);
    for (int r = 0; r < NR; ++r) {
      const __m512 qv = _mm512_set1_ps(q[r * D + d]);
      acc[r][0] = _mm512_fmadd_ps(qv, k0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(qv, k1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(qv, k2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(qv, k3, acc[r][3]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(s + r * kBK + 16 * c, acc[r][c]);
}

// The eight sums of a[0..7]'s lanes, into out[0..7]: a transpose-and-add tree.
inline void hsum8(const __m512 (&a)[8], float* out) {
  __m512 t[4];
  for (int i = 0; i < 4; ++i)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  // Per 128-bit lane: partial sums of a[0..3] (u0) and a[4..7] (u1).
  const __m512 u0 = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[0]), _mm512_castps_pd(t[1]))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[0]), _mm512_castps_pd(t[1]))));
  const __m512 u1 = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[2]), _mm512_castps_pd(t[3]))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[2]), _mm512_castps_pd(t[3]))));
  const __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 w = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  _mm_storeu_ps(out, _mm512_castps512_ps128(w));
  _mm_storeu_ps(out + 4, _mm512_extractf32x4_ps(w, 2));
}

// s[r, j] = q[r] . k[j] for r < NR and all kBK keys, as dot products of whole rows (no
// transposed K block): cheaper when few query rows share the block, as in decoding.
template <int NR>
void qk_dot_rows(const float* q, int64_t D, const float* const* k, float* s) {
  for (int64_t j0 = 0; j0 < kBK; j0 += 8) {
    __m512 acc[NR][8];
    for (int r = 0; r < NR; ++r)
      for (int j = 0; j < 8; ++j) acc[r][j] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; d += 16) {
      __m512 qv[NR];
      for (int r = 0; r < NR; ++r) qv[r] = _mm512_loadu_ps(q + r * D + d);
      for (int j = 0; j < 8; ++j) {
        const __m512 kv = _mm512_loadu_ps(k[j0 + j] + d);
        for (int r = 0; r < NR; ++r) acc[r][j] = _mm512_fmadd_ps(qv[r], kv, acc[r][j]);
      }
    }
    for (int r = 0; r < NR; ++r) hsum8(acc[r], s + r * kBK + j0);
  }
}

// o[r, 0:16 ND] += sum_{j < nk} p[r, j] * v[j][0:16 ND] for r < NR (v: row pointers).
template <int NR, int ND>
void pv_rows(const float* p, int64_t nk, const float* const* v, int64_t d0, int64_t D, float* o) {
  __m512 acc[NR][ND];
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < ND; ++c) acc[r][c] = _mm512_loadu_ps(o + r * D + 16 * c);
  for (int64_t j = 0; j < nk; ++j) {
    __m512 vv[ND];
    for (int c = 0; c < ND; ++c) vv[c] = _mm512_loadu_ps(v[j] + d0 + 16 * c);
    for (int r = 0; r < NR; ++r) {
      const __m512 pr = _mm512_set1_ps(p[r * kBK + j]);
      for (int c = 0; c < ND; ++c) acc[r][c] = _mm512_fmadd_ps(pr, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < ND; ++c) _mm512_storeu_ps(o + r * D + 16 * c, acc[r][c]);
}

template <int NR>
void pv_rows_any(const float* p, int64_t nk, const float* const* v, int64_t D, float* o) {
  int64_t d0 = 0;
  for (; d0 + 64 <= D; d0 += 64) pv_rows<NR, 4>(p, nk, v, d0, D, o + d0);
  switch ((D - d0) / 16) {
    case 3:
      pv_rows<NR, 3>(p, nk, v, d0, D, o + d0);
      break;
    case 2:
      pv_rows<NR, 2>(p, nk, v, d0, D, o + d0);
      break;
    case 1:
      pv_rows<NR, 1>(p, nk, v, d0, D, o + d0);
      break;
    default:
      break;
  }
}

// One work item with D % 16 == 0 and kBK == 64.
void attend_block(const float* q, int64_t Hq, int64_t G, int64_t T, const KvSegments& kv,
                  float scale, const Item& it, Partial& out) {
  const int64_t D = kv.head_dim;
  const int64_t len = kv.len[it.g];
  const int64_t BQ = it.t1 - it.t0, M = G * BQ;
  // Rows by pointer, so that a borrowed prefix (KvSegments) reads like a contiguous segment.
  const float* krow[kBK];
  const float* vrow[kBK];
  thread_local std::vector<float> qb, kt, s, kconv, vconv;  // kconv, vconv: half-type rows as F32
  thread_local std::vector<int64_t> lim;
  if (kv.dtype() != DType::F32) {
    kconv.resize(static_cast<size_t>(kBK * D));
    vconv.resize(static_cast<size_t>(kBK * D));
  }
  qb.resize(static_cast<size_t>(M * D));
  kt.resize(static_cast<size_t>(D * kBK));
  s.resize(static_cast<size_t>(M * kBK));
  out.m.assign(static_cast<size_t>(M), -INFINITY);
  out.l.assign(static_cast<size_t>(M), 0.f);
  out.o.assign(static_cast<size_t>(M * D), 0.f);
  // Row i = (t - t0) * G + hl holds query t of head g * G + hl; it sees keys [0, lim[i]].
  lim.resize(static_cast<size_t>(M));
  for (int64_t t = it.t0; t < it.t1; ++t)
    for (int64_t hl = 0; hl < G; ++hl) {
      const int64_t i = (t - it.t0) * G + hl;
      std::memcpy(qb.data() + i * D, q + (t * Hq + it.g * G + hl) * D,
                  static_cast<size_t>(D) * sizeof(float));
      lim[static_cast<size_t>(i)] = len - T + t;
    }
  const int64_t kend = std::min(it.k1, len - T + it.t1);  // no row sees keys past this
  float* O = out.o.data();
  for (int64_t j0 = it.k0; j0 < kend; j0 += kBK) {
    const int64_t nk = std::min(kBK, kend - j0);
    for (int64_t j = 0; j < nk; ++j) {
      krow[j] = f32_row(kv, kv.k_row(it.g, j0 + j), kconv, j);
      vrow[j] = f32_row(kv, kv.v_row(it.g, j0 + j), vconv, j);
    }
    if (M <= kMaxDotRows) {
      // S as dot products; keys past nk repeat a real row (finite, and masked below).
      for (int64_t j = nk; j < kBK; ++j) krow[j] = krow[0];
      int64_t i0 = 0;
      for (; i0 + 3 <= M; i0 += 3) qk_dot_rows<3>(qb.data() + i0 * D, D, krow, s.data() + i0 * kBK);
      switch (M - i0) {
        case 2:
          qk_dot_rows<2>(qb.data() + i0 * D, D, krow, s.data() + i0 * kBK);
          break;
        case 1:
          qk_dot_rows<1>(qb.data() + i0 * D, D, krow, s.data() + i0 * kBK);
          break;
        default:
          break;
      }
    } else {
      // Kt[d][j] = K[j0 + j][d], zero past nk.
      if (nk == kBK) {
        for (int64_t jb = 0; jb < kBK; jb += 16)
          for (int64_t db = 0; db < D; db += 16)
            transpose16(krow + jb, db, kt.data() + db * kBK + jb, kBK);
      } else {
        for (int64_t j = 0; j < kBK; ++j) {
          if (j < nk) {
            const float* kr = krow[j];
            for (int64_t d = 0; d < D; ++d) kt[static_cast<size_t>(d * kBK + j)] = kr[d];
          } else {
            for (int64_t d = 0; d < D; ++d) kt[static_cast<size_t>(d * kBK + j)] = 0.f;
          }
        }
      }
      // S = Q Kt, four rows at a time.
      int64_t i0 = 0;
      for (; i0 + 4 <= M; i0 += 4)
        qk_rows<4>(qb.data() + i0 * D, D, kt.data(), s.data() + i0 * kBK);
      switch (M - i0) {
        case 3:
          qk_rows<3>(qb.data() + i0 * D, D, kt.data(), s.data() + i0 * kBK);
          break;
        case 2:
          qk_rows<2>(qb.data() + i0 * D, D, kt.data(), s.data() + i0 * kBK);
          break;
        case 1:
          qk_rows<1>(qb.data() + i0 * D, D, kt.data(), s.data() + i0 * kBK);
          break;
        default:
          break;
      }
    }
    // The softmax update row by row.
    for (int64_t i0 = 0; i0 < M; i0 += 4) {
      const int64_t nr = std::min<int64_t>(4, M - i0);
      const __m512 vs = _mm512_set1_ps(scale);
      const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
      for (int64_t r = 0; r < nr; ++r) {
        const int64_t i = i0 + r;
        // Visible keys of this row within the block: [0, vis).
        const int64_t vis = std::clamp<int64_t>(lim[static_cast<size_t>(i)] - j0 + 1, 0, nk);
        const __m512 visv = _mm512_set1_ps(static_cast<float>(vis));
        float* srow = s.data() + i * kBK;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int c = 0; c < 4; ++c) {
          const __m512 idx = _mm512_add_ps(iota, _mm512_set1_ps(static_cast<float>(16 * c)));
          const __mmask16 ok = _mm512_cmp_ps_mask(idx, visv, _CMP_LT_OQ);
          const __m512 v = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), ok,
                                              _mm512_mul_ps(_mm512_loadu_ps(srow + 16 * c), vs));
          _mm512_storeu_ps(srow + 16 * c, v);
          mx = _mm512_max_ps(mx, v);
        }
        const float bmax = hmax(mx);
        float& m = out.m[static_cast<size_t>(i)];
        if (bmax == -INFINITY) {  // nothing visible here: no weight
          std::memset(srow, 0, kBK * sizeof(float));
          continue;
        }
        if (bmax > m) {
          const float alpha = m == -INFINITY ? 0.f : std::exp(m - bmax);
          out.l[static_cast<size_t>(i)] *= alpha;
          const __m512 va = _mm512_set1_ps(alpha);
          for (int64_t d = 0; d < D; d += 16)
            _mm512_storeu_ps(O + i * D + d, _mm512_mul_ps(_mm512_loadu_ps(O + i * D + d), va));
          m = bmax;
        }
        const __m512 vm = _mm512_set1_ps(m);
        __m512 sum = _mm512_setzero_ps();
        for (int c = 0; c < 4; ++c) {
          const __m512 p = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(srow + 16 * c), vm));
          _mm512_storeu_ps(srow + 16 * c, p);
          sum = _mm512_add_ps(sum, p);
        }
        out.l[static_cast<size_t>(i)] += hsum(sum);
      }
    }
    // O += P V, four rows at a time.
    {
      int64_t i0 = 0;
      for (; i0 + 4 <= M; i0 += 4) pv_rows_any<4>(s.data() + i0 * kBK, nk, vrow, D, O + i0 * D);
      switch (M - i0) {
        case 3:
          pv_rows_any<3>(s.data() + i0 * kBK, nk, vrow, D, O + i0 * D);
          break;
        case 2:
          pv_rows_any<2>(s.data() + i0 * kBK, nk, vrow, D, O + i0 * D);
          break;
        case 1:
          pv_rows_any<1>(s.data() + i0 * kBK, nk, vrow, D, O + i0 * D);
          break;
        default:
          break;
      }
    }
  }
}

#endif  // __AVX512F__

// Plain version of attend_block for any D (and machines without AVX-512). Key blocks are
// the outer loop, so a half-type cache converts each block once per item, not per query.
void attend_block_scalar(const float* q, int64_t Hq, int64_t G, int64_t T, const KvSegments& kv,
                         float scale, const Item& it, Partial& out) {
  const int64_t D = kv.head_dim, len = kv.len[it.g];
  const int64_t M = G * (it.t1 - it.t0);
  thread_local std::vector<float> kconv, vconv;  // a half-type block as F32
  kconv.resize(static_cast<size_t>(kBK * D));
  vconv.resize(static_cast<size_t>(kBK * D));
  const float* krow[kBK];
  const float* vrow[kBK];
  out.m.assign(static_cast<size_t>(M), -INFINITY);
  out.l.assign(static_cast<size_t>(M), 0.f);
  out.o.assign(static_cast<size_t>(M * D), 0.f);
  const int64_t kend = std::min(it.k1, len - T + it.t1);  // no row sees keys past this
  for (int64_t j0 = it.k0; j0 < kend; j0 += kBK) {
    const int64_t nk = std::min(kBK, kend - j0);
    for (int64_t j = 0; j < nk; ++j) {
      krow[j] = f32_row(kv, kv.k_row(it.g, j0 + j), kconv, j);
      vrow[j] = f32_row(kv, kv.v_row(it.g, j0 + j), vconv, j);
    }
    for (int64_t t = it.t0; t < it.t1; ++t) {
      const int64_t end = std::min(nk, len - T + t + 1 - j0);  // visible keys of this block
      for (int64_t hl = 0; hl < G; ++hl) {
        const int64_t i = (t - it.t0) * G + hl;
        const float* qv = q + (t * Hq + it.g * G + hl) * D;
        float& m = out.m[static_cast<size_t>(i)];
        float& l = out.l[static_cast<size_t>(i)];
        float* o = out.o.data() + i * D;
        for (int64_t j = 0; j < end; ++j) {
          const float sc = dot_f32(qv, krow[j], D) * scale;
          if (sc > m) {
            const float a = m == -INFINITY ? 0.f : std::exp(m - sc);
            l *= a;
            for (int64_t d = 0; d < D; ++d) o[d] *= a;
            m = sc;
          }
          const float p = std::exp(sc - m);
          l += p;
          axpy_f32(p, vrow[j], o, D);
        }
      }
    }
  }
}

}  // namespace

void attention_many(ThreadPool& pool, const std::vector<AttentionJob>& jobs, float scale) {
  // Items of every job in one list, so that many small jobs (a batched decode step: one
  // query per cache) share one parallel loop instead of one each.
  struct JobItem {
    size_t job;
    Item item;
  };
  struct JobShape {
    int64_t T, Hq, G, BQ, splits;
  };
  std::vector<JobShape> shapes(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    const Tensor& q = *jobs[j].q;
    const KvSegments& kv = jobs[j].kv;
    check(q.dtype() == DType::F32 && jobs[j].out->dtype() == DType::F32,
          "attention: q and out must be F32");
    check(kv.dtype() == DType::F32 || kv.dtype() == DType::F16 || kv.dtype() == DType::BF16,
          "attention: the cache must hold F32, F16 or BF16 rows");
    // (Built messages only on failure: a decode step checks a few hundred jobs per layer.)
    if (q.ndim() != 3) throw Error("attention: q must be [T, Hq, D], got " + q.shape_string());
    const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2);
    if (D != kv.head_dim || D <= 0)
      throw Error("attention: q head_dim " + std::to_string(D) + " differs from the cache's " +
                  std::to_string(kv.head_dim));
    check(kv.n_segments > 0 && Hq % kv.n_segments == 0,
          "attention: query heads not a multiple of kv heads");
    check(jobs[j].out->numel() == q.numel(), "attention: out must have q's shape");
    for (int64_t g = 0; g < kv.n_segments; ++g) {
      if (kv.len[g] < T)
        throw Error("attention: segment " + std::to_string(g) + " holds " +
                    std::to_string(kv.len[g]) + " rows, fewer than the " + std::to_string(T) +
                    " new ones");
    }
    const int64_t G = Hq / kv.n_segments;
    shapes[j] = {T, Hq, G, std::max<int64_t>(1, kRowsPerItem / G), 1};
  }
  // Query blocks: whole small jobs when that leaves items for every thread. The block size
  // changes no result (each query row's arithmetic is its own); only key splits would.
  const int64_t want = 2 * static_cast<int64_t>(pool.size());
  const auto count_items = [&] {
    int64_t n = 0;
    for (size_t j = 0; j < jobs.size(); ++j)
      n += jobs[j].kv.n_segments * ((shapes[j].T + shapes[j].BQ - 1) / shapes[j].BQ);
    return n;
  };
  int64_t base_items = count_items();
  {
    std::vector<JobShape> blocked = shapes;
    for (JobShape& sh : shapes)
      if (sh.T > 0 && sh.T <= kWholeJobQueries) sh.BQ = std::max(sh.BQ, sh.T);
    const int64_t whole_items = count_items();
    if (whole_items >= want || pool.size() == 1) {
      base_items = whole_items;
    } else {
      shapes = std::move(blocked);
    }
  }
  // Split the keys when there are too few (segment, query block) items for the threads.
  std::vector<JobItem> items;
  items.reserve(static_cast<size_t>(base_items));
  for (size_t j = 0; j < jobs.size(); ++j) {
    const KvSegments& kv = jobs[j].kv;
    JobShape& sh = shapes[j];
    if (sh.T == 0) continue;
    const int64_t S = kv.n_segments, BQ = sh.BQ;
    const int64_t qblocks = (sh.T + BQ - 1) / BQ;
    int64_t max_len = 0;
    for (int64_t g = 0; g < S; ++g) max_len = std::max(max_len, kv.len[g]);
    if (base_items < want && pool.size() > 1) {
      sh.splits = std::min((want + S * qblocks - 1) / (S * qblocks),
                           std::max<int64_t>(1, max_len / kMinKeysPerSplit));
    }
    for (int64_t g = 0; g < S; ++g)
      for (int64_t b = 0; b < qblocks; ++b) {
        const int64_t t0 = b * BQ, t1 = std::min(sh.T, t0 + BQ);
        const int64_t keys = kv.len[g] - sh.T + t1;  // keys the block's last query sees
        for (int64_t sp = 0; sp < sh.splits; ++sp) {
          // Split points on kBK boundaries.
          const int64_t blocks = (keys + kBK - 1) / kBK;
          const int64_t k0 = std::min(keys, blocks * sp / sh.splits * kBK),
                        k1 = std::min(keys, blocks * (sp + 1) / sh.splits * kBK);
          if (k0 < k1 || sp == 0) items.push_back({j, {g, t0, t1, k0, k1}});
        }
      }
  }
  // Jobs that borrow rows from the same cache (the cells of one context) read the same
  // lender segment: grouping their items by (lender, segment) lets a thread reuse that
  // segment's rows from its own L2 instead of cycling through every segment per job. The
  // sort is stable, so the splits of one (job, segment, query block) stay consecutive.
  if (jobs.size() > 1) {
    const auto lender = [&](const JobItem& ji) {
      const KvSegments& kv = jobs[ji.job].kv;
      return kv.has_prefix() ? kv.prefix_k.data() : kv.k.data();
    };
    std::stable_sort(items.begin(), items.end(), [&](const JobItem& a, const JobItem& b) {
      const void *la = lender(a), *lb = lender(b);
      if (la != lb) return std::less<const void*>()(la, lb);
      return a.item.g < b.item.g;
    });
  }
  bool any_split = false;
  for (const JobShape& sh : shapes) any_split = any_split || sh.splits > 1;
  std::vector<Partial> partials(any_split ? items.size() : 0);
  auto run = [&](int64_t i0, int64_t i1) {
    thread_local Partial local;
    for (int64_t i = i0; i < i1; ++i) {
      const JobItem& ji = items[static_cast<size_t>(i)];
      const Item& it = ji.item;
      const AttentionJob& job = jobs[ji.job];
      const JobShape& sh = shapes[ji.job];
      const int64_t D = job.kv.head_dim;
      const float* qp = job.q->ptr<float>();
      Partial& p = sh.splits > 1 ? partials[static_cast<size_t>(i)] : local;
#if defined(__AVX512F__)
      if (D % 16 == 0) {
        attend_block(qp, sh.Hq, sh.G, sh.T, job.kv, scale, it, p);
      } else {
        attend_block_scalar(qp, sh.Hq, sh.G, sh.T, job.kv, scale, it, p);
      }
#else
      attend_block_scalar(qp, sh.Hq, sh.G, sh.T, job.kv, scale, it, p);
#endif
      if (sh.splits == 1) {
        float* op = job.out->ptr<float>();
        for (int64_t t = it.t0; t < it.t1; ++t)
          for (int64_t hl = 0; hl < sh.G; ++hl) {
            const int64_t r = (t - it.t0) * sh.G + hl;
            const float inv = 1.f / p.l[static_cast<size_t>(r)];
            float* o = op + (t * sh.Hq + it.g * sh.G + hl) * D;
            for (int64_t d = 0; d < D; ++d) o[d] = p.o[static_cast<size_t>(r * D + d)] * inv;
          }
      }
    }
  };
  if (items.size() == 1 || pool.size() == 1) {
    run(0, static_cast<int64_t>(items.size()));
  } else {
    pool.parallel_for(static_cast<int64_t>(items.size()), run);
  }
  if (!any_split) return;
  // Merge the splits of each (job, segment, query block): items of one are consecutive.
  for (size_t a = 0; a < items.size();) {
    size_t b = a + 1;
    const JobItem& first = items[a];
    while (b < items.size() && items[b].job == first.job && items[b].item.g == first.item.g &&
           items[b].item.t0 == first.item.t0)
      ++b;
    const JobShape& sh = shapes[first.job];
    if (sh.splits == 1) {
      a = b;
      continue;
    }
    const Item& it = first.item;
    const int64_t D = jobs[first.job].kv.head_dim;
    float* op = jobs[first.job].out->ptr<float>();
    for (int64_t t = it.t0; t < it.t1; ++t)
      for (int64_t hl = 0; hl < sh.G; ++hl) {
        const size_t r = static_cast<size_t>((t - it.t0) * sh.G + hl);
        float m = -INFINITY;
        for (size_t c = a; c < b; ++c) m = std::max(m, partials[c].m[r]);
        float l = 0.f;
        float* o = op + (t * sh.Hq + it.g * sh.G + hl) * D;
        std::fill(o, o + D, 0.f);
        for (size_t c = a; c < b; ++c) {
          if (partials[c].m[r] == -INFINITY) continue;
          const float w = std::exp(partials[c].m[r] - m);
          l += partials[c].l[r] * w;
          axpy_f32(w, partials[c].o.data() + r * static_cast<size_t>(D), o, D);
        }
        const float inv = 1.f / l;
        for (int64_t d = 0; d < D; ++d) o[d] *= inv;
      }
    a = b;
  }
}

void attention(ThreadPool& pool, const Tensor& q, const KvSegments& kv, float scale, Tensor& out) {
  attention_many(pool, {AttentionJob{&q, kv, &out}}, scale);
}

}  // namespace kvp::cpu
