// Quantised kernels: dequantisation (exactly as the reference: contraction is off in this
// file, so d * q + m is two roundings as in gguf-py) and decode's matrix-vector products.
//
// The matrix-vector kernels work on R = 4 weight rows at a time so each load of x serves
// four rows. Per 32-element block of a row they widen the 4- or 8-bit quants to f32
// (vpmovzx/sx + vcvtdq2ps), form dot(q, x_block) with one mul and one FMA, and scale it by
// the block's d with one more FMA; Q4_1's m (and Q4_0's -8 d) meet the precomputed block
// sums of x in a 4-lane side accumulator.
#if defined(__clang__)  // clang ignores GCC's optimize pragma; this is its spelling
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif

#include <cstring>
#include <vector>

#include "backend/cpu/quant.h"
#include "backend/cpu/reference.h"
#include "backend/cpu/simd.h"
#include "core/half.h"

namespace kvp::cpu {

namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// load_u32 and load_f16 serve the AVX-512 path only ([[maybe_unused]]: clang warns elsewhere).
[[maybe_unused]] inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

[[maybe_unused]] inline float load_f16(const uint8_t* p) {
  return f16_to_f32(load_u16(p));
}

#if defined(__AVX512F__)

inline float half(const uint8_t* p) {
  return _cvtsh_ss(load_u16(p));
}

inline __m512i load_u8x16(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m512i load_i8x16(const uint8_t* p) {
  return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

void dequant_q4_0(const uint8_t* src, float* y, int64_t nb) {
  const __m512i m15 = _mm512_set1_epi32(15), eight = _mm512_set1_epi32(8);
  for (int64_t b = 0; b < nb; ++b, src += 18, y += 32) {
    const __m512 d = _mm512_set1_ps(half(src));
    const __m512i v = load_u8x16(src + 2);
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(v, m15), eight));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(v, 4), eight));
    _mm512_storeu_ps(y, _mm512_mul_ps(lo, d));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(hi, d));
  }
}

void dequant_q4_1(const uint8_t* src, float* y, int64_t nb) {
  const __m512i m15 = _mm512_set1_epi32(15);
  for (int64_t b = 0; b < nb; ++b, src += 20, y += 32) {
    const __m512 d = _mm512_set1_ps(half(src)), m = _mm512_set1_ps(half(src + 2));
    const __m512i v = load_u8x16(src + 4);
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, m15));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
    _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(lo, d), m));
    _mm512_storeu_ps(y + 16, _mm512_add_ps(_mm512_mul_ps(hi, d), m));
  }
}

void dequant_q8_0(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 34, y += 32) {
    const __m512 d = _mm512_set1_ps(half(src));
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(load_i8x16(src + 2)), d));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(load_i8x16(src + 18)), d));
  }
}

inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void dequant_q4_k(const uint8_t* src, float* y, int64_t nb) {
  const __m512i m15 = _mm512_set1_epi32(15);
  for (int64_t b = 0; b < nb; ++b, src += 144) {
    const float d = half(src), dmin = half(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* q = src + 16;
    for (int j = 0; j < 4; ++j, q += 32, y += 64) {
      int sc, m;
      scale_min_k4(2 * j, scales, &sc, &m);
      const __m512 d1 = _mm512_set1_ps(d * static_cast<float>(sc)),
                   m1 = _mm512_set1_ps(dmin * static_cast<float>(m));
      scale_min_k4(2 * j + 1, scales, &sc, &m);
      const __m512 d2 = _mm512_set1_ps(d * static_cast<float>(sc)),
                   m2 = _mm512_set1_ps(dmin * static_cast<float>(m));
      for (int l = 0; l < 32; l += 16) {
        const __m512i v = load_u8x16(q + l);
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, m15));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
        _mm512_storeu_ps(y + l, _mm512_sub_ps(_mm512_mul_ps(d1, lo), m1));
        _mm512_storeu_ps(y + 32 + l, _mm512_sub_ps(_mm512_mul_ps(d2, hi), m2));
      }
    }
  }
}

void dequant_q6_k(const uint8_t* src, float* y, int64_t nb) {
  const __m512i m15 = _mm512_set1_epi32(15), m3 = _mm512_set1_epi32(3), k32 = _mm512_set1_epi32(32);
  for (int64_t b = 0; b < nb; ++b, src += 210) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(src + 192);
    const float d = half(src + 208);
    for (int h = 0; h < 2; ++h, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; l += 16) {
        const int is = l / 16;
        const __m512i a = load_u8x16(ql + l), c = load_u8x16(ql + 32 + l), hb = load_u8x16(qh + l);
        const __m512i q1 =
            _mm512_sub_epi32(_mm512_or_si512(_mm512_and_si512(a, m15),
                                             _mm512_slli_epi32(_mm512_and_si512(hb, m3), 4)),
                             k32);
        const __m512i q2 = _mm512_sub_epi32(
            _mm512_or_si512(_mm512_and_si512(c, m15),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 2), m3), 4)),
            k32);
        const __m512i q3 = _mm512_sub_epi32(
            _mm512_or_si512(_mm512_srli_epi32(a, 4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 4), m3), 4)),
            k32);
        const __m512i q4 =
            _mm512_sub_epi32(_mm512_or_si512(_mm512_srli_epi32(c, 4),
                                             _mm512_slli_epi32(_mm512_srli_epi32(hb, 6), 4)),
                             k32);
        _mm512_storeu_ps(y + l, _mm512_mul_ps(_mm512_set1_ps(d * static_cast<float>(sc[is])),
                                              _mm512_cvtepi32_ps(q1)));
        _mm512_storeu_ps(y + l + 32,
                         _mm512_mul_ps(_mm512_set1_ps(d * static_cast<float>(sc[is + 2])),
                                       _mm512_cvtepi32_ps(q2)));
        _mm512_storeu_ps(y + l + 64,
                         _mm512_mul_ps(_mm512_set1_ps(d * static_cast<float>(sc[is + 4])),
                                       _mm512_cvtepi32_ps(q3)));
        _mm512_storeu_ps(y + l + 96,
                         _mm512_mul_ps(_mm512_set1_ps(d * static_cast<float>(sc[is + 6])),
                                       _mm512_cvtepi32_ps(q4)));
      }
    }
  }
}

void dequant_f16(const uint8_t* src, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(
        y + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i))));
  for (; i < n; ++i) y[i] = load_f16(src + 2 * i);
}

void dequant_bf16(const uint8_t* src, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i)));
    _mm512_storeu_ps(y + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
  }
  for (; i < n; ++i) y[i] = bf16_to_f32(load_u16(src + 2 * i));
}

// ---- matrix-vector kernels ------------------------------------------------------------

constexpr int kPrefetchBytes = 8192;

// R rows of Q4_1: sum_b d_b * dot(q_b, x_b) + m_b * xsum_b.
template <int R>
void gemv_q4_1(const uint8_t* w, size_t rb, int64_t nb, const float* x, const float* xs, float* y) {
  const __m512i m15 = _mm512_set1_epi32(15);
  __m512 acc[R];
  __m128 macc[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm512_setzero_ps();
    macc[r] = _mm_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 xl = _mm512_loadu_ps(x + 32 * b), xh = _mm512_loadu_ps(x + 32 * b + 16);
    const __m128 xsb = _mm_set1_ps(xs[b]);
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * rb + 20 * b;
      _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes), _MM_HINT_T0);
      const __m128 dm =
          _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u32(blk))));  // d, m, 0, 0
      const __m512i v = load_u8x16(blk + 4);
      const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, m15));
      const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
      const __m512 t = _mm512_fmadd_ps(hi, xh, _mm512_mul_ps(lo, xl));
      acc[r] = _mm512_fmadd_ps(t, _mm512_broadcastss_ps(dm), acc[r]);
      macc[r] = _mm_fmadd_ps(dm, xsb, macc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float lanes[4];
    _mm_storeu_ps(lanes, macc[r]);
    y[r] = hsum(acc[r]) + lanes[1];
  }
}

// R rows of Q4_0: sum_b d_b * (dot(q_b, x_b) - 8 xsum_b).
template <int R>
void gemv_q4_0(const uint8_t* w, size_t rb, int64_t nb, const float* x, const float* xs, float* y) {
  const __m512i m15 = _mm512_set1_epi32(15);
  __m512 acc[R];
  __m128 macc[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm512_setzero_ps();
    macc[r] = _mm_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 xl = _mm512_loadu_ps(x + 32 * b), xh = _mm512_loadu_ps(x + 32 * b + 16);
    const __m128 xsb = _mm_set1_ps(xs[b]);
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * rb + 18 * b;
      const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(blk)));
      const __m512i v = load_u8x16(blk + 2);
      const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, m15));
      const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
      const __m512 t = _mm512_fmadd_ps(hi, xh, _mm512_mul_ps(lo, xl));
      acc[r] = _mm512_fmadd_ps(t, _mm512_broadcastss_ps(d), acc[r]);
      macc[r] = _mm_fmadd_ps(d, xsb, macc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = hsum(acc[r]) - 8.f * _mm_cvtss_f32(macc[r]);
}

// R rows of Q8_0: sum_b d_b * dot(q_b, x_b).
template <int R>
void gemv_q8_0(const uint8_t* w, size_t rb, int64_t nb, const float* x, const float*, float* y) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 xl = _mm512_loadu_ps(x + 32 * b), xh = _mm512_loadu_ps(x + 32 * b + 16);
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * rb + 34 * b;
      _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes), _MM_HINT_T0);
      const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(blk)));
      const __m512 lo = _mm512_cvtepi32_ps(load_i8x16(blk + 2));
      const __m512 hi = _mm512_cvtepi32_ps(load_i8x16(blk + 18));
      const __m512 t = _mm512_fmadd_ps(hi, xh, _mm512_mul_ps(lo, xl));
      acc[r] = _mm512_fmadd_ps(t, _mm512_broadcastss_ps(d), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = hsum(acc[r]);
}

// R rows of F16 (K a multiple of 16; the tail is done by the caller's scalar loop).
template <int R>
void gemv_f16(const uint8_t* w, size_t rb, int64_t K, const float* x, float* y) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= K; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_fmadd_ps(
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * rb + 2 * i))),
          xv, acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(acc[r]);
    for (int64_t j = i; j < K; ++j) s += load_f16(w + r * rb + 2 * j) * x[j];
    y[r] = s;
  }
}

template <int R>
void gemv_bf16(const uint8_t* w, size_t rb, int64_t K, const float* x, float* y) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= K; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    for (int r = 0; r < R; ++r) {
      const __m512i v = _mm512_cvtepu16_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * rb + 2 * i)));
      acc[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), xv, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(acc[r]);
    for (int64_t j = i; j < K; ++j) s += bf16_to_f32(load_u16(w + r * rb + 2 * j)) * x[j];
    y[r] = s;
  }
}

template <int R>
void gemv_f32(const uint8_t* w, size_t rb, int64_t K, const float* x, float* y) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= K; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(reinterpret_cast<const float*>(w + r * rb) + i), xv,
                               acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    const auto* wr = reinterpret_cast<const float*>(w + r * rb);
    float s = hsum(acc[r]);
    for (int64_t j = i; j < K; ++j) s += wr[j] * x[j];
    y[r] = s;
  }
}

#endif  // __AVX512F__

// Any type: dequantise one row into a thread-local buffer, then a plain f32 dot.
void gemv_generic(DType t, const uint8_t* w, size_t rb, int64_t n_rows, int64_t K, const float* x,
                  float* y) {
  thread_local std::vector<float> row;
  if (row.size() < static_cast<size_t>(K)) row.resize(static_cast<size_t>(K));
  for (int64_t r = 0; r < n_rows; ++r) {
    dequantize_row(t, w + static_cast<size_t>(r) * rb, row.data(), K);
    y[r] = dot_f32(row.data(), x, K);
  }
}

}  // namespace

void dequantize_row(DType t, const void* src_v, float* dst, int64_t n) {
#if defined(__AVX512F__)
  const auto* src = static_cast<const uint8_t*>(src_v);
  const int64_t be = static_cast<int64_t>(block_elements(t));
  if (n % be == 0) {
    switch (t) {
      case DType::F32:
        std::memcpy(dst, src, static_cast<size_t>(n) * 4);
        return;
      case DType::F16:
        dequant_f16(src, dst, n);
        return;
      case DType::BF16:
        dequant_bf16(src, dst, n);
        return;
      case DType::Q4_0:
        dequant_q4_0(src, dst, n / 32);
        return;
      case DType::Q4_1:
        dequant_q4_1(src, dst, n / 32);
        return;
      case DType::Q8_0:
        dequant_q8_0(src, dst, n / 32);
        return;
      case DType::Q4_K:
        dequant_q4_k(src, dst, n / 256);
        return;
      case DType::Q6_K:
        dequant_q6_k(src, dst, n / 256);
        return;
      default:
        break;
    }
  }
#elif defined(__AVX2__) && defined(__F16C__)
  // Half-precision KV cache rows on AVX2 machines: 8 at a time, exact like the scalar path.
  const auto* src = static_cast<const uint8_t*>(src_v);
  if (t == DType::F16 || t == DType::BF16) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
      const __m256 f = t == DType::F16
                           ? _mm256_cvtph_ps(h)
                           : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      _mm256_storeu_ps(dst + i, f);
    }
    for (; i < n; ++i)
      dst[i] =
          t == DType::F16 ? f16_to_f32(load_u16(src + 2 * i)) : bf16_to_f32(load_u16(src + 2 * i));
    return;
  }
#endif
  ref::dequantize_row(t, src_v, dst, n);
}

void block_sums32(const float* x, int64_t K, float* xsum) {
  for (int64_t b = 0; b < K / 32; ++b) {
#if defined(__AVX512F__)
    xsum[b] = hsum(_mm512_add_ps(_mm512_loadu_ps(x + 32 * b), _mm512_loadu_ps(x + 32 * b + 16)));
#else
    float s = 0.f;
    for (int i = 0; i < 32; ++i) s += x[32 * b + i];
    xsum[b] = s;
#endif
  }
}

bool gemv_needs_block_sums(DType t) {
  return t == DType::Q4_0 || t == DType::Q4_1;
}

void gemv(DType t, const uint8_t* w, size_t rb, int64_t n_rows, int64_t K, const float* x,
          const float* xsum, float* y) {
#if defined(__AVX512F__)
#ifndef KVP_GEMV_R
#define KVP_GEMV_R 4
#endif
  constexpr int R = KVP_GEMV_R;  // rows per kernel call: each load of x serves R rows
  int64_t r = 0;
  const int64_t nb = K / 32;
  switch (t) {
#define KVP_GEMV_ROWS(call4, call1)      \
  for (; r + R <= n_rows; r += R) call4; \
  for (; r < n_rows; ++r) call1;         \
  return;
    case DType::Q4_1:
      KVP_GEMV_ROWS(gemv_q4_1<R>(w + r * rb, rb, nb, x, xsum, y + r),
                    gemv_q4_1<1>(w + r * rb, rb, nb, x, xsum, y + r))
    case DType::Q4_0:
      KVP_GEMV_ROWS(gemv_q4_0<R>(w + r * rb, rb, nb, x, xsum, y + r),
                    gemv_q4_0<1>(w + r * rb, rb, nb, x, xsum, y + r))
    case DType::Q8_0:
      KVP_GEMV_ROWS(gemv_q8_0<R>(w + r * rb, rb, nb, x, xsum, y + r),
                    gemv_q8_0<1>(w + r * rb, rb, nb, x, xsum, y + r))
    case DType::F16:
      KVP_GEMV_ROWS(gemv_f16<R>(w + r * rb, rb, K, x, y + r),
                    gemv_f16<1>(w + r * rb, rb, K, x, y + r))
    case DType::BF16:
      KVP_GEMV_ROWS(gemv_bf16<R>(w + r * rb, rb, K, x, y + r),
                    gemv_bf16<1>(w + r * rb, rb, K, x, y + r))
    case DType::F32:
      KVP_GEMV_ROWS(gemv_f32<R>(w + r * rb, rb, K, x, y + r),
                    gemv_f32<1>(w + r * rb, rb, K, x, y + r))
#undef KVP_GEMV_ROWS
    default:
      break;
  }
#endif
  (void)xsum;
  gemv_generic(t, w, rb, n_rows, K, x, y);
}

}  // namespace kvp::cpu
