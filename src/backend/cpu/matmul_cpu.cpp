// y[t, o] = sum_i x[t, i] * w[o, i] for weights of any type.
//
// Few rows of x (decode, T <= kGemvMaxRows): matrix-vector products straight from the stored
// weights (quant_dot.cpp), parallel over chunks of output rows.
//
// Many rows (prefill): the output columns are cut into tiles of kTileRows weight rows. A
// tile is dequantised once into a thread-local f32 buffer laid out as panels of 32 rows
// transposed ([k][32], so one k holds 32 consecutive outputs), then a register-blocked
// micro-kernel computes kMR rows of x against a panel at a time: per k, two loads of the
// panel, kMR broadcasts of x and 2 kMR FMAs into 2 kMR accumulators. Work items are
// (tile, chunk of T) pairs, spread over the pool.
#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/quant.h"
#include "backend/cpu/simd.h"
#include "core/error.h"

namespace kvp::cpu {

namespace {

constexpr int64_t kGemvChunkRows = 16;    // output rows per unit of parallel work (decode)
constexpr int64_t kTileRows = 64;         // weight rows dequantised together (prefill)
constexpr int64_t kPanel = 32;            // outputs per micro-kernel column block
constexpr int kMR = 6;                    // rows of x per micro-kernel call
constexpr int64_t kKc = 128;              // K slice per micro-kernel call
constexpr int64_t kMaxRowsPerItem = 512;  // rows of x per work item (prefill)

void matmul_gemv(ThreadPool& pool, const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  const DType dt = w.dtype();
  const float* xp = x.ptr<float>();
  float* yp = y.ptr<float>();
  std::vector<float> xsum;
  if (gemv_needs_block_sums(dt)) {
    xsum.resize(static_cast<size_t>(T * (K / 32)));
    for (int64_t t = 0; t < T; ++t) block_sums32(xp + t * K, K, xsum.data() + t * (K / 32));
  }
  const auto* wp = static_cast<const uint8_t*>(w.data());
  const size_t rb = w.row_bytes();
  auto run = [&](int64_t o0, int64_t o1) {
    for (int64_t t = 0; t < T; ++t) {
      const float* xs = xsum.empty() ? nullptr : xsum.data() + t * (K / 32);
      if (T == 1) {
        gemv(dt, wp + o0 * rb, rb, o1 - o0, K, xp, xs, yp + o0);
      } else {
        float tmp[kGemvChunkRows];
        for (int64_t c = o0; c < o1; c += kGemvChunkRows) {
          const int64_t ce = std::min(o1, c + kGemvChunkRows);
          gemv(dt, wp + c * rb, rb, ce - c, K, xp + t * K, xs, tmp);
          std::memcpy(yp + t * N + c, tmp, static_cast<size_t>(ce - c) * sizeof(float));
        }
      }
    }
  };
  const int64_t chunks = (N + kGemvChunkRows - 1) / kGemvChunkRows;
  if (pool.size() == 1 || chunks == 1) {
    run(0, N);
    return;
  }
  pool.parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    // Whole chunks for all T rows of x at once, so the weights come from L1 for t > 0.
    for (int64_t c = c0; c < c1; ++c)
      run(c * kGemvChunkRows, std::min(N, (c + 1) * kGemvChunkRows));
  });
}

#if defined(__AVX512F__)

// y[i, 0:cols] (+)= sum_{k < K} x[i * ldx + k] * panel[k, 0:cols] for i < MR.
template <int MR>
void micro_kernel(int64_t K, const float* x, int64_t ldx, const float* panel, float* y, int64_t ldy,
                  int cols, bool accumulate) {
  __m512 c0[MR], c1[MR];
  const __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
  if (accumulate) {
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm512_maskz_loadu_ps(m0, y + i * ldy);
      c1[i] = _mm512_maskz_loadu_ps(m1, y + i * ldy + 16);
    }
  } else {
    for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w0 = _mm512_load_ps(panel + k * kPanel),
                 w1 = _mm512_load_ps(panel + k * kPanel + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 xb = _mm512_set1_ps(x[i * ldx + k]);
      c0[i] = _mm512_fmadd_ps(xb, w0, c0[i]);
      c1[i] = _mm512_fmadd_ps(xb, w1, c1[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    _mm512_mask_storeu_ps(y + i * ldy, m0, c0[i]);
    _mm512_mask_storeu_ps(y + i * ldy + 16, m1, c1[i]);
  }
}

using MicroKernel = void (*)(int64_t, const float*, int64_t, const float*, float*, int64_t, int,
                             bool);
template <int... I>
constexpr auto make_kernels(std::integer_sequence<int, I...>) {
  return std::array<MicroKernel, sizeof...(I)>{micro_kernel<I + 1>...};
}
constexpr auto kKernels = make_kernels(std::make_integer_sequence<int, kMR>{});  // kKernels[mr - 1]

#elif defined(__AVX2__) && defined(__FMA__)

// The AVX-512 kernel's arithmetic on 8-lane registers: each output is still one FMA chain
// over k in order, so both kernels give the same bits. At most 3 rows per call: 12
// accumulators, a broadcast and a panel load fill the 16 ymm registers.
template <int MR>
void micro_kernel_avx2(int64_t K, const float* x, int64_t ldx, const float* panel, float* y,
                       int64_t ldy, int cols, bool accumulate) {
  // A partial panel (cols < 32) goes through a padded copy: AVX2 has no masked float load.
  alignas(32) float edge[MR][kPanel];
  float* out[MR];
  for (int i = 0; i < MR; ++i) out[i] = y + i * ldy;
  if (cols < kPanel) {
    for (int i = 0; i < MR; ++i) {
      std::memset(edge[i], 0, sizeof edge[i]);
      if (accumulate) std::memcpy(edge[i], y + i * ldy, static_cast<size_t>(cols) * sizeof(float));
      out[i] = edge[i];
    }
  }
  __m256 c[MR][4];
  for (int i = 0; i < MR; ++i)
    for (int q = 0; q < 4; ++q)
      c[i][q] = accumulate ? _mm256_loadu_ps(out[i] + 8 * q) : _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* wk = panel + k * kPanel;
    for (int i = 0; i < MR; ++i) {
      const __m256 xb = _mm256_set1_ps(x[i * ldx + k]);
      for (int q = 0; q < 4; ++q)
        c[i][q] = _mm256_fmadd_ps(xb, _mm256_load_ps(wk + 8 * q), c[i][q]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int q = 0; q < 4; ++q) _mm256_storeu_ps(out[i] + 8 * q, c[i][q]);
  if (cols < kPanel)
    for (int i = 0; i < MR; ++i)
      std::memcpy(y + i * ldy, edge[i], static_cast<size_t>(cols) * sizeof(float));
}

void micro_kernel_rows(int mr, int64_t K, const float* x, int64_t ldx, const float* panel, float* y,
                       int64_t ldy, int cols, bool accumulate) {
  for (int i = 0; i < mr; i += 3) {
    const int n = std::min(3, mr - i);
    const float* xi = x + i * ldx;
    float* yi = y + i * ldy;
    if (n == 3) micro_kernel_avx2<3>(K, xi, ldx, panel, yi, ldy, cols, accumulate);
    if (n == 2) micro_kernel_avx2<2>(K, xi, ldx, panel, yi, ldy, cols, accumulate);
    if (n == 1) micro_kernel_avx2<1>(K, xi, ldx, panel, yi, ldy, cols, accumulate);
  }
}

#endif  // __AVX512F__

// Dequantises weight rows [o0, o0 + rows) into panels of kPanel transposed rows:
// panel p, element (k, j) = w[o0 + p * kPanel + j, k] at buf[(p * K + k) * kPanel + j];
// rows past the end are zero.
void pack_tile(const Tensor& w, int64_t o0, int64_t rows, std::vector<float>& tmp, float* buf) {
  const int64_t K = w.cols();
  const int64_t panels = (rows + kPanel - 1) / kPanel;
  // Row addresses by hand: Tensor::row_ptr recomputes (and checks) the row size every call.
  const auto* base = static_cast<const uint8_t*>(w.data());
  const size_t rb = w.row_bytes();
  if (tmp.size() < static_cast<size_t>(kPanel * K)) tmp.resize(static_cast<size_t>(kPanel * K));
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t r0 = p * kPanel, nr = std::min(kPanel, rows - r0);
    for (int64_t r = 0; r < nr; ++r)
      dequantize_row(w.dtype(), base + static_cast<size_t>(o0 + r0 + r) * rb, tmp.data() + r * K,
                     K);
    if (nr < kPanel)
      std::memset(tmp.data() + nr * K, 0, static_cast<size_t>((kPanel - nr) * K) * sizeof(float));
    float* dst = buf + p * K * kPanel;
    int64_t k = 0;
#if defined(__AVX512F__)
    for (; k + 16 <= K; k += 16) {
      transpose16(tmp.data() + k, K, dst + k * kPanel, kPanel);
      transpose16(tmp.data() + 16 * K + k, K, dst + k * kPanel + 16, kPanel);
    }
#endif
    for (; k < K; ++k)
      for (int64_t j = 0; j < kPanel; ++j)
        dst[k * kPanel + j] = tmp[static_cast<size_t>(j * K + k)];
  }
}

void matmul_tiled(ThreadPool& pool, const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  const float* xp = x.ptr<float>();
  float* yp = y.ptr<float>();
  // Half-size tiles when full ones are too few to balance over the threads (a 576-row
  // projection is 9 tiles, 5 against 4 on two threads; 18 half tiles split evenly).
  const int64_t tile_rows =
      (N + kTileRows - 1) / kTileRows >= 8 * static_cast<int64_t>(pool.size()) ? kTileRows : kPanel;
  const int64_t tiles = (N + tile_rows - 1) / tile_rows;
  // Split T as well when there are too few tiles to keep every thread busy, and always into
  // chunks of at most kMaxRowsPerItem rows, so that a chunk of x stays in cache while every
  // tile passes over it (x of a 4500-row batched question prefill is 10-28 MB).
  const int64_t want_items = 4 * static_cast<int64_t>(pool.size());
  int64_t t_chunks = tiles >= want_items ? 1 : (want_items + tiles - 1) / tiles;
  t_chunks = std::max<int64_t>(1, std::min(t_chunks, T / (4 * kMR)));
  t_chunks = std::max(t_chunks, (T + kMaxRowsPerItem - 1) / kMaxRowsPerItem);
  const int64_t t_step = (T + t_chunks - 1) / t_chunks;
  // Items in chunk-major order: the threads work through one chunk of x at a time.
  pool.parallel_for(tiles * t_chunks, [&](int64_t i0, int64_t i1) {
    thread_local std::vector<float> tmp;
    thread_local std::vector<float, std::allocator<float>> packed_storage;
    const size_t need = static_cast<size_t>(kTileRows * K + 16);
    if (packed_storage.size() < need) packed_storage.resize(need);
    // 64-byte aligned view for aligned panel loads.
    float* packed = reinterpret_cast<float*>(
        (reinterpret_cast<uintptr_t>(packed_storage.data()) + 63) & ~uintptr_t{63});
    int64_t packed_tile = -1;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t tc = item / tiles, tile = item % tiles;
      const int64_t o0 = tile * tile_rows, rows = std::min(tile_rows, N - o0);
      if (tile != packed_tile) {
        pack_tile(w, o0, rows, tmp, packed);
        packed_tile = tile;
      }
      const int64_t t0 = tc * t_step, t1 = std::min(T, t0 + t_step);
      const int64_t panels = (rows + kPanel - 1) / kPanel;
      // K in slices of kKc: a panel's slice (kKc x 32 floats) stays in L1 while every row
      // block of x passes it; the x slice stays in L2 for the tile's other panels.
      for (int64_t k0 = 0; k0 < K; k0 += kKc) {
        const int64_t kc = std::min(kKc, K - k0);
        for (int64_t p = 0; p < panels; ++p) {
          const int cols = static_cast<int>(std::min(kPanel, rows - p * kPanel));
          const float* panel = packed + (p * K + k0) * kPanel;
          for (int64_t t = t0; t < t1; t += kMR) {
            const int mr = static_cast<int>(std::min<int64_t>(kMR, t1 - t));
            float* yo = yp + t * N + o0 + p * kPanel;
#if defined(__AVX512F__)
            kKernels[static_cast<size_t>(mr - 1)](kc, xp + t * K + k0, K, panel, yo, N, cols,
                                                  k0 > 0);
#elif defined(__AVX2__) && defined(__FMA__)
            micro_kernel_rows(mr, kc, xp + t * K + k0, K, panel, yo, N, cols, k0 > 0);
#else
            for (int i = 0; i < mr; ++i)
              for (int j = 0; j < cols; ++j) {
                float sum = k0 > 0 ? yo[i * N + j] : 0.f;
                for (int64_t k = 0; k < kc; ++k) sum += xp[(t + i) * K + k0 + k] * panel[k * kPanel + j];
                yo[i * N + j] = sum;
              }
#endif
          }
        }
      }
    }
  });
}

}  // namespace

void matmul(ThreadPool& pool, const Tensor& x, const Tensor& w, Tensor& y) {
  check(x.dtype() == DType::F32 && y.dtype() == DType::F32, "matmul: x and y must be F32");
  check(x.device() == Device::CPU && w.device() == Device::CPU && y.device() == Device::CPU,
        "matmul: tensors must be on the CPU");
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  check(w.cols() == K,
        "matmul: x " + x.shape_string() + " and w " + w.shape_string() + " disagree on K");
  check(y.rows() == T && y.cols() == N, "matmul: y must be [" + std::to_string(T) + ", " +
                                            std::to_string(N) + "], got " + y.shape_string());
  if (T == 0 || N == 0) return;
  if (T <= kGemvMaxRows) {
    matmul_gemv(pool, x, w, y);
  } else {
    matmul_tiled(pool, x, w, y);
  }
}

}  // namespace kvp::cpu
