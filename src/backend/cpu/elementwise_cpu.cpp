// rms_norm, rope, silu_mul, add, add_bias, embed. Small in decode (one row of a few hundred
// floats: run inline, a parallel_for would cost more than the work), parallel over rows in
// prefill. Evaluation order follows Hugging Face's f32 code (see reference.cpp).
#if defined(__clang__)  // clang ignores GCC's optimize pragma; this is its spelling
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")  // rope: products then sums, as PyTorch does
#endif

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/op_checks.h"
#include "backend/cpu/quant.h"
#include "backend/cpu/reference.h"
#include "backend/cpu/simd.h"
#include "core/error.h"

namespace kvp::cpu {

namespace {

// Below this many elements an op runs on the calling thread alone.
constexpr int64_t kParallelElements = 1 << 15;

// Runs fn(begin, end) over [0, rows), in parallel when rows * cols is large enough.
template <typename Fn>
void for_rows(ThreadPool& pool, int64_t rows, int64_t cols, const Fn& fn) {
  if (pool.size() == 1 || rows < 2 || rows * cols < kParallelElements) {
    fn(int64_t{0}, rows);
  } else {
    pool.parallel_for(rows, [&](int64_t b, int64_t e) { fn(b, e); });
  }
}

}  // namespace

void rms_norm(ThreadPool& pool, const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  check_f32(x, "rms_norm x");
  check_f32(y, "rms_norm y");
  check_f32(weight, "rms_norm weight");
  const int64_t D = weight.numel();
  check(D > 0 && x.numel() % D == 0 && y.numel() == x.numel(),
        "rms_norm: x " + x.shape_string() + ", weight " + weight.shape_string() + " and y " +
            y.shape_string() + " do not match");
  const float* w = weight.ptr<float>();
  const float* xp = x.ptr<float>();
  float* yp = y.ptr<float>();
  for_rows(pool, x.numel() / D, D, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = xp + r * D;
      float* yr = yp + r * D;
      const float var = sumsq_f32(xr, D) / static_cast<float>(D);
      const float inv = 1.0f / std::sqrt(var + eps);
      int64_t i = 0;
#if defined(__AVX512F__)
      const __m512 vinv = _mm512_set1_ps(inv);
      for (; i + 16 <= D; i += 16)
        _mm512_storeu_ps(yr + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(xr + i), vinv),
                                               _mm512_loadu_ps(w + i)));
#endif
      for (; i < D; ++i) yr[i] = (xr[i] * inv) * w[i];
    }
  });
}

void rope(ThreadPool& pool, Tensor& x, const int32_t* positions, const RopeParams& params) {
  check_f32(x, "rope x");
  const int64_t D = params.head_dim;
  check(D > 0 && D % 2 == 0 && x.cols() == D, "rope: x's last dim " + std::to_string(x.cols()) +
                                                  " must equal head_dim " + std::to_string(D));
  const int64_t T = x.ndim() >= 3 ? x.dim(0) : x.rows();
  if (T == 0) return;
  const int64_t heads = x.rows() / T;
  const int64_t h = D / 2;
  std::vector<float> inv(static_cast<size_t>(h));
  rope_inv_freq(params, inv.data());
  float* xp = x.ptr<float>();
  for_rows(pool, T, heads * D, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(static_cast<size_t>(D));  // cos in [0, h), sin in [h, D)
    float* c = cs.data();
    float* s = cs.data() + h;
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < h; ++i) {
        const float angle = static_cast<float>(positions[t]) * inv[static_cast<size_t>(i)];
        c[i] = std::cos(angle);
        s[i] = std::sin(angle);
      }
      for (int64_t hd = 0; hd < heads; ++hd) {
        float* v = xp + (t * heads + hd) * D;
        int64_t i = 0;
#if defined(__AVX512F__)
        for (; i + 16 <= h; i += 16) {
          const __m512 x0 = _mm512_loadu_ps(v + i), x1 = _mm512_loadu_ps(v + i + h);
          const __m512 vc = _mm512_loadu_ps(c + i), vs = _mm512_loadu_ps(s + i);
          _mm512_storeu_ps(v + i, _mm512_sub_ps(_mm512_mul_ps(x0, vc), _mm512_mul_ps(x1, vs)));
          _mm512_storeu_ps(v + i + h, _mm512_add_ps(_mm512_mul_ps(x1, vc), _mm512_mul_ps(x0, vs)));
        }
#endif
        for (; i < h; ++i) {
          const float x0 = v[i], x1 = v[i + h];
          const float a = x0 * c[i], b = x1 * s[i], e = x1 * c[i], f = x0 * s[i];
          v[i] = a - b;
          v[i + h] = e + f;
        }
      }
    }
  });
}

void silu_mul(ThreadPool& pool, Tensor& gate, const Tensor& up) {
  check_f32(gate, "silu_mul gate");
  check_f32(up, "silu_mul up");
  check(gate.numel() == up.numel(), "silu_mul: gate " + gate.shape_string() + " and up " +
                                        up.shape_string() + " differ in size");
  float* g = gate.ptr<float>();
  const float* u = up.ptr<float>();
  const int64_t n = gate.numel();
  constexpr int64_t kChunk = 4096;
  for_rows(pool, (n + kChunk - 1) / kChunk, kChunk, [&](int64_t c0, int64_t c1) {
    const int64_t e = std::min(n, c1 * kChunk);
    int64_t i = c0 * kChunk;
#if defined(__AVX512F__)
    // silu(g) * u = g / (1 + e^-g) * u, in PyTorch's order (division, then product)
    const __m512 one = _mm512_set1_ps(1.f);
    for (; i + 16 <= e; i += 16) {
      const __m512 x = _mm512_loadu_ps(g + i);
      const __m512 den = _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x)));
      _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(x, den), _mm512_loadu_ps(u + i)));
    }
#endif
    for (; i < e; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  });
}

void add(ThreadPool& pool, Tensor& y, const Tensor& x) {
  check_f32(y, "add y");
  check_f32(x, "add x");
  check(y.numel() == x.numel(),
        "add: y " + y.shape_string() + " and x " + x.shape_string() + " differ in size");
  float* yp = y.ptr<float>();
  const float* xp = x.ptr<float>();
  const int64_t n = y.numel();
  constexpr int64_t kChunk = 8192;
  for_rows(pool, (n + kChunk - 1) / kChunk, kChunk, [&](int64_t c0, int64_t c1) {
    const int64_t e = std::min(n, c1 * kChunk);
    for (int64_t i = c0 * kChunk; i < e; ++i) yp[i] += xp[i];
  });
}

void add_bias(ThreadPool& pool, Tensor& y, const Tensor& bias) {
  check_f32(y, "add_bias y");
  check_f32(bias, "add_bias bias");
  const int64_t n = bias.numel();
  check(n > 0 && y.numel() % n == 0,
        "add_bias: bias " + bias.shape_string() + " does not divide y " + y.shape_string());
  float* yp = y.ptr<float>();
  const float* b = bias.ptr<float>();
  for_rows(pool, y.numel() / n, n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i = 0; i < n; ++i) yp[r * n + i] += b[i];
  });
}

void embed(ThreadPool& pool, const Tensor& table, const int32_t* ids, int64_t n, Tensor& out) {
  check_f32(out, "embed out");
  check(table.device() == Device::CPU, "embed: table must be on the CPU");
  const int64_t V = table.rows(), D = table.cols();
  check(out.numel() == n * D, "embed: out " + out.shape_string() + " must hold " +
                                  std::to_string(n) + " rows of " + std::to_string(D));
  for (int64_t t = 0; t < n; ++t)
    if (ids[t] < 0 || ids[t] >= V)  // the message is built on failure only
      throw Error("embed: token id " + std::to_string(ids[t]) + " out of range [0, " +
                  std::to_string(V) + ")");
  float* o = out.ptr<float>();
  // Row addresses by hand: Tensor::row_ptr recomputes (and checks) the row size every call.
  const auto* base = static_cast<const uint8_t*>(table.data());
  const size_t rb = table.row_bytes();
  for_rows(pool, n, D, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      dequantize_row(table.dtype(), base + static_cast<size_t>(ids[t]) * rb, o + t * D, D);
  });
}

}  // namespace kvp::cpu
