// argmax_t sum_i x[t, i] * w[o, i] over o: greedy decoding's vocabulary projection, when
// only the top token of each row is wanted.
//
// The plain way is the f32 matmul (matmul_cpu.cpp) and an argmax: 2 * vocab * hidden flops
// per row, a sixth of a small model's decode step. For Q8_0 tables with more than
// kGemvMaxT rows this screens instead. x is quantised to int8 per 32-block (as llama.cpp
// does) and every logit is estimated with 8-bit integer dot products (AVX-512 VNNI: 64
// multiply-adds per instruction instead of 16), together with a rigorous bound on its
// distance from the f32 logit the matmul would have produced. Only the entries whose upper
// bound reaches the row's best lower bound can be the f32 argmax; they are recomputed with
// the matmul's own arithmetic (one FMA chain over i in order, from the same dequantised
// weights), so the token is exactly the one argmax(matmul) picks, ties to the lower index.
//
// The bound: with d_b = max|x_b| / 127 and q = round(x / d_b), |x_i - d_b q_i| <= 0.5 d_b
// (plus ~1e-5 d_b for the rounding of x / d_b), so the estimate misses the exact product
// by at most sum_b |s_ob| sum_{i in b} |w_oi| * 0.5 d_b, where s_ob is the weight block's
// scale. The f32 matmul itself is within gamma_K sum_i |w_oi x_i| <= 127 gamma_K
// sum_b |s_ob| sum |w_oi| d_b of the exact product (K = 576: 4.4e-3 per unit), and the
// estimate's own f32 arithmetic adds far less, so a factor kBoundPerScale = 0.52 per unit
// covers all three with room; a relative 2^-18 of the estimate covers the rounding of the
// comparisons themselves.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/reference.h"
#include "backend/cpu/simd.h"
#include "core/error.h"
#include "core/half.h"

namespace kvp::cpu {

namespace {

// Used by the AVX-512 path only ([[maybe_unused]]: clang warns on other CPUs).
[[maybe_unused]] constexpr int64_t kQ8Block = 32;
[[maybe_unused]] constexpr int64_t kQ8BlockBytes = 34;  // f16 scale + 32 int8
[[maybe_unused]] constexpr int64_t kLanes = 16;         // vocabulary rows per vector
[[maybe_unused]] constexpr int64_t kRowsPerPass = 8;    // rows of x per pass over a tile's weights
[[maybe_unused]] constexpr float kBoundPerScale = 0.52f;
[[maybe_unused]] constexpr float kRelativeSlack = 1.f / (1 << 18);

int32_t argmax_row(const float* p, int64_t n) {
  return static_cast<int32_t>(std::max_element(p, p + n) - p);
}

}  // namespace

std::vector<int32_t> matmul_argmax_plain(ThreadPool& pool, const Tensor& x, const Tensor& w) {
  Tensor y = Tensor::empty(DType::F32, {x.rows(), w.rows()});
  matmul(pool, x, w, y);
  std::vector<int32_t> out(static_cast<size_t>(x.rows()));
  for (int64_t t = 0; t < x.rows(); ++t)
    out[static_cast<size_t>(t)] = argmax_row(y.ptr<float>() + t * w.rows(), w.rows());
  return out;
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)

namespace {

// The f16 scale that opens a Q8_0 block.
float block_scale(const uint8_t* block) {
  uint16_t h = 0;
  std::memcpy(&h, block, sizeof h);
  return f16_to_f32(h);
}

// A Q8_0 table laid out for the screen: per tile of 16 rows and per block, 8 vectors whose
// lane l holds 4 consecutive weights of row l, offset by +128 to unsigned (VNNI multiplies
// unsigned by signed bytes), then the 16 rows' scales and bound factors.
struct ScreenTable {
  int64_t rows = 0, cols = 0, blocks = 0, tiles = 0;
  bool usable = false;           // false when a scale is not finite: the plain path handles those
  std::vector<uint8_t> weights;  // [tiles][blocks][8][16][4]
  std::vector<float> scales;     // [tiles][blocks][16]
  std::vector<float> bounds;     // [tiles][blocks][16]: |scale| * sum |q| * kBoundPerScale
};

ScreenTable build_screen_table(const Tensor& w) {
  ScreenTable t;
  t.rows = w.rows();
  t.cols = w.cols();
  t.blocks = t.cols / kQ8Block;
  t.tiles = (t.rows + kLanes - 1) / kLanes;
  t.weights.assign(static_cast<size_t>(t.tiles * t.blocks * kQ8Block * kLanes), 128);
  t.scales.assign(static_cast<size_t>(t.tiles * t.blocks * kLanes), 0.f);
  t.bounds.assign(t.scales.size(), 0.f);
  t.usable = true;
  for (int64_t o = 0; o < t.rows; ++o) {
    const int64_t tile = o / kLanes, lane = o % kLanes;
    for (int64_t b = 0; b < t.blocks; ++b) {
      const uint8_t* blk = w.row_ptr(o) + b * kQ8BlockBytes;
      const float scale = block_scale(blk);
      const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
      int sum_abs = 0;
      uint8_t* dst = t.weights.data() + ((tile * t.blocks + b) * 8 * kLanes) * 4;
      for (int i = 0; i < kQ8Block; ++i) {
        sum_abs += std::abs(static_cast<int>(q[i]));
        dst[((i / 4) * kLanes + lane) * 4 + i % 4] =
            static_cast<uint8_t>(static_cast<int>(q[i]) + 128);
      }
      const size_t at = static_cast<size_t>((tile * t.blocks + b) * kLanes + lane);
      t.scales[at] = scale;
      t.bounds[at] = std::abs(scale) * static_cast<float>(sum_abs) * kBoundPerScale;
      t.usable = t.usable && std::isfinite(scale);
    }
  }
  return t;
}

// The table of w, built on its first use and then kept in the backend's cache for as long as
// w lives (weight_cache.h); the caller's handle keeps it valid whatever the cache does.
std::shared_ptr<const ScreenTable> screen_table(WeightCache& cache, const Tensor& w) {
  return cache.get<ScreenTable>(
      w, [&] { return std::make_shared<ScreenTable>(build_screen_table(w)); });
}

// x quantised per 32-block: int8 values, the block scale d_b, the bound factor of the block
// (d_b, later times each weight block's factor) and 128 * sum q (the unsigned offset).
struct QuantisedRows {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> offset;
};

QuantisedRows quantise_rows(const Tensor& x, int64_t blocks) {
  const int64_t T = x.rows(), K = x.cols();
  QuantisedRows r;
  r.q.resize(static_cast<size_t>(T * K));
  r.scale.resize(static_cast<size_t>(T * blocks));
  r.offset.resize(static_cast<size_t>(T * blocks));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = 0; b < blocks; ++b) {
      const float* xb = x.ptr<float>() + t * K + b * kQ8Block;
      float amax = 0.f;
      for (int i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::abs(xb[i]));
      const float d = amax / 127.f;
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      int32_t sum = 0;
      for (int i = 0; i < kQ8Block; ++i) {
        const int v = std::clamp(static_cast<int>(std::nearbyint(xb[i] * inv)), -127, 127);
        r.q[static_cast<size_t>(t * K + b * kQ8Block + i)] = static_cast<int8_t>(v);
        sum += v;
      }
      r.scale[static_cast<size_t>(t * blocks + b)] = d;
      r.offset[static_cast<size_t>(t * blocks + b)] = 128 * sum;
    }
  return r;
}

struct Candidate {
  int32_t row, index;
  float upper;
};

// Estimates and bounds of rows [t0, t0 + R) against one tile: per row, the tile's best lower
// bound raises best[t], and every entry whose upper bound reaches best[t] so far is kept.
template <int R>
void screen_tile(const ScreenTable& tab, const QuantisedRows& xq, int64_t K, int64_t tile,
                 int64_t t0, float* best, std::vector<Candidate>& out) {
  __m512 est[R], err[R];
  for (int r = 0; r < R; ++r) est[r] = err[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < tab.blocks; ++b) {
    const uint8_t* wb = tab.weights.data() + ((tile * tab.blocks + b) * 8 * kLanes) * 4;
    __m512i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    for (int g = 0; g < 8; ++g) {
      const __m512i wv = _mm512_loadu_si512(wb + g * kLanes * 4);
      for (int r = 0; r < R; ++r) {
        int32_t xs = 0;
        std::memcpy(&xs, xq.q.data() + (t0 + r) * K + b * kQ8Block + g * 4, sizeof xs);
        acc[r] = _mm512_dpbusd_epi32(acc[r], wv, _mm512_set1_epi32(xs));
      }
    }
    const size_t at = static_cast<size_t>((tile * tab.blocks + b) * kLanes);
    const __m512 sv = _mm512_loadu_ps(tab.scales.data() + at);
    const __m512 bv = _mm512_loadu_ps(tab.bounds.data() + at);
    for (int r = 0; r < R; ++r) {
      const size_t rb = static_cast<size_t>((t0 + r) * tab.blocks + b);
      const __m512i exact = _mm512_sub_epi32(acc[r], _mm512_set1_epi32(xq.offset[rb]));
      const __m512 dx = _mm512_set1_ps(xq.scale[rb]);
      est[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(sv, dx), est[r]);
      err[r] = _mm512_fmadd_ps(bv, dx, err[r]);
    }
  }
  const int64_t valid = std::min<int64_t>(kLanes, tab.rows - tile * kLanes);
  const __mmask16 live = first_lanes(valid);
  const __m512 slack = _mm512_set1_ps(kRelativeSlack);
  for (int r = 0; r < R; ++r) {
    const __m512 margin = _mm512_fmadd_ps(_mm512_abs_ps(est[r]), slack, err[r]);
    const __m512 lower = _mm512_sub_ps(est[r], margin), upper = _mm512_add_ps(est[r], margin);
    float& b = best[t0 + r];
    b = std::max(b, _mm512_mask_reduce_max_ps(live, lower));
    __mmask16 keep = _mm512_mask_cmp_ps_mask(live, upper, _mm512_set1_ps(b), _CMP_GE_OQ);
    if (!keep) continue;
    alignas(64) float up[kLanes];
    _mm512_store_ps(up, upper);
    while (keep) {
      const int l = __builtin_ctz(keep);
      keep &= static_cast<__mmask16>(keep - 1);
      out.push_back({static_cast<int32_t>(t0 + r), static_cast<int32_t>(tile * kLanes + l), up[l]});
    }
  }
}

// Logit (t, o) exactly as matmul_tiled computes it: one FMA chain over i, in order, from 0.
float exact_logit(const Tensor& x, const Tensor& w, int64_t t, int64_t o) {
  const int64_t K = x.cols();
  const float* xr = x.ptr<float>() + t * K;
  float acc = 0.f;
  for (int64_t b = 0; b < K / kQ8Block; ++b) {
    const uint8_t* blk = w.row_ptr(o) + b * kQ8BlockBytes;
    const float scale = block_scale(blk);
    const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
    for (int i = 0; i < kQ8Block; ++i)
      acc = std::fma(xr[b * kQ8Block + i], static_cast<float>(q[i]) * scale, acc);
  }
  return acc;
}

}  // namespace

std::vector<int32_t> matmul_argmax(ThreadPool& pool, WeightCache& tables, const Tensor& x,
                                   const Tensor& w) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  check(x.dtype() == DType::F32, "matmul_argmax: x must be F32");
  check(w.cols() == K && N > 0,
        "matmul_argmax: x " + x.shape_string() + " and w " + w.shape_string() + " disagree");
  // The screen reproduces matmul_tiled's arithmetic; fewer rows take the gemv kernels.
  // Inputs far from any real activation (or not finite) take the plain path, so that no
  // estimate can overflow.
  bool screen = w.dtype() == DType::Q8_0 && T > kGemvMaxRows && K % kQ8Block == 0 &&
                w.device() == Device::CPU && x.device() == Device::CPU;
  for (int64_t i = 0; screen && i < T * K; ++i) screen = std::abs(x.ptr<float>()[i]) < 1e15f;
  const std::shared_ptr<const ScreenTable> tab = screen ? screen_table(tables, w) : nullptr;
  if (!tab || !tab->usable) return matmul_argmax_plain(pool, x, w);

  const QuantisedRows xq = quantise_rows(x, tab->blocks);
  // Tiles in chunks, each with its own best lower bounds and candidates (merged below).
  const int64_t chunks = std::min<int64_t>(tab->tiles, 16 * static_cast<int64_t>(pool.size()));
  std::vector<std::vector<float>> best(static_cast<size_t>(chunks),
                                       std::vector<float>(static_cast<size_t>(T), -INFINITY));
  std::vector<std::vector<Candidate>> found(static_cast<size_t>(chunks));
  pool.parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float* b = best[static_cast<size_t>(c)].data();
      auto& out = found[static_cast<size_t>(c)];
      for (int64_t tile = tab->tiles * c / chunks; tile < tab->tiles * (c + 1) / chunks; ++tile) {
        int64_t t = 0;
        for (; t + kRowsPerPass <= T; t += kRowsPerPass)
          screen_tile<kRowsPerPass>(*tab, xq, K, tile, t, b, out);
        for (; t < T; ++t) screen_tile<1>(*tab, xq, K, tile, t, b, out);
      }
    }
  });
  std::vector<float> row_best(static_cast<size_t>(T), -INFINITY);
  for (const auto& b : best)
    for (int64_t t = 0; t < T; ++t)
      row_best[static_cast<size_t>(t)] =
          std::max(row_best[static_cast<size_t>(t)], b[static_cast<size_t>(t)]);
  // Survivors per row, by index; then their exact logits decide.
  std::vector<std::vector<int32_t>> survivors(static_cast<size_t>(T));
  for (const auto& list : found)
    for (const Candidate& c : list)
      if (c.upper >= row_best[static_cast<size_t>(c.row)])
        survivors[static_cast<size_t>(c.row)].push_back(c.index);
  std::vector<int32_t> out(static_cast<size_t>(T));
  pool.parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      auto& s = survivors[static_cast<size_t>(t)];
      std::sort(s.begin(), s.end());
      int32_t arg = -1;
      float top = -INFINITY;
      for (int32_t o : s) {
        const float v = exact_logit(x, w, t, o);
        if (arg < 0 || v > top) {
          arg = o;
          top = v;
        }
      }
      check(arg >= 0, "matmul_argmax: no candidate survived the screen");
      out[static_cast<size_t>(t)] = arg;
    }
  });
  return out;
}

#else

std::vector<int32_t> matmul_argmax(ThreadPool& pool, WeightCache& tables, const Tensor& x,
                                   const Tensor& w) {
  check(x.dtype() == DType::F32, "matmul_argmax: x must be F32");
  return matmul_argmax_plain(pool, x, w);
}

#endif

}  // namespace kvp::cpu
