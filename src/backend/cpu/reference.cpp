// Scalar references. Written for clarity, not speed. Floating-point contraction is off in
// this file so that every a*b+c is two roundings, as in numpy / PyTorch eager: the
// dequantisation then matches gguf-py bit for bit, and rope / rms_norm follow Hugging Face's
// f32 evaluation order. Long sums (dot products, softmax denominators) accumulate in double,
// so the references are at least as accurate as any f32 implementation they check.
#if defined(__clang__)  // clang ignores GCC's optimize pragma; this is its spelling
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif

#include "backend/cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <string>
#include <vector>

#include "backend/cpu/op_checks.h"
#include "core/error.h"
#include "core/half.h"

namespace kvp::ref {

using cpu::check_f32;

namespace {

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

float load_f16(const uint8_t* p) {
  return f16_to_f32(load_u16(p));
}

// ggml's get_scale_min_k4: 8 (scale, min) pairs of 6 bits packed into 12 bytes.
void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace

void dequantize_row(DType t, const void* src_v, float* y, int64_t n) {
  const auto* src = static_cast<const uint8_t*>(src_v);
  const int64_t be = static_cast<int64_t>(block_elements(t));
  check(n % be == 0, "dequantize_row: " + std::to_string(n) +
                         " elements is not a multiple of the " + dtype_name(t) + " block size");
  const int64_t nb = n / be;
  switch (t) {
    case DType::F32:
      std::memcpy(y, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) y[i] = load_f16(src + 2 * i);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(load_u16(src + 2 * i));
      return;
    case DType::Q4_0:  // { f16 d; u8 qs[16] }: (q - 8) * d, low nibbles = elements 0..15
      for (int64_t b = 0; b < nb; ++b, src += 18, y += 32) {
        const float d = load_f16(src);
        const uint8_t* qs = src + 2;
        for (int j = 0; j < 16; ++j) {
          y[j] = static_cast<float>((qs[j] & 0xF) - 8) * d;
          y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
        }
      }
      return;
    case DType::Q4_1:  // { f16 d; f16 m; u8 qs[16] }: q * d + m
      for (int64_t b = 0; b < nb; ++b, src += 20, y += 32) {
        const float d = load_f16(src);
        const float m = load_f16(src + 2);
        const uint8_t* qs = src + 4;
        for (int j = 0; j < 16; ++j) {
          y[j] = static_cast<float>(qs[j] & 0xF) * d + m;
          y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
        }
      }
      return;
    case DType::Q8_0:  // { f16 d; i8 qs[32] }: q * d
      for (int64_t b = 0; b < nb; ++b, src += 34, y += 32) {
        const float d = load_f16(src);
        const auto* qs = reinterpret_cast<const int8_t*>(src + 2);
        for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
      }
      return;
    case DType::Q4_K:  // { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }, 8 sub-blocks of 32
      for (int64_t b = 0; b < nb; ++b, src += 144) {
        const float d = load_f16(src);
        const float dmin = load_f16(src + 2);
        const uint8_t* scales = src + 4;
        const uint8_t* q = src + 16;
        for (int j = 0; j < 4; ++j, q += 32) {  // 64 elements: 32 low nibbles, 32 high
          uint8_t sc, m;
          scale_min_k4(2 * j, scales, &sc, &m);
          const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
          scale_min_k4(2 * j + 1, scales, &sc, &m);
          const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
          for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
          for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
        }
      }
      return;
    case DType::Q6_K:  // { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }, 16 sub-blocks of 16
      for (int64_t b = 0; b < nb; ++b, src += 210) {
        const uint8_t* ql = src;
        const uint8_t* qh = src + 128;
        const auto* sc = reinterpret_cast<const int8_t*>(src + 192);
        const float d = load_f16(src + 208);
        for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
            y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
            y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
            y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
          }
        }
      }
      return;
    case DType::I32:
      break;
  }
  throw Error("dequantize_row: unsupported type " + dtype_name(t));
}

void matmul(const Tensor& x, const Tensor& w, Tensor& y) {
  check_f32(x, "matmul x");
  check_f32(y, "matmul y");
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  check(w.cols() == K,
        "matmul: x has " + std::to_string(K) + " columns, w " + std::to_string(w.cols()));
  check(y.rows() == T && y.cols() == N, "matmul: y must be [" + std::to_string(T) + ", " +
                                            std::to_string(N) + "], got " + y.shape_string());
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t o = 0; o < N; ++o) {
    dequantize_row(w.dtype(), w.row_ptr(o), row.data(), K);
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x.ptr<float>() + t * K;
      double s = 0;
      for (int64_t i = 0; i < K; ++i) s += static_cast<double>(xt[i]) * row[static_cast<size_t>(i)];
      y.ptr<float>()[t * N + o] = static_cast<float>(s);
    }
  }
}

std::vector<int32_t> matmul_argmax(const Tensor& x, const Tensor& w) {
  Tensor y = Tensor::empty(DType::F32, {x.rows(), w.rows()});
  matmul(x, w, y);
  std::vector<int32_t> out(static_cast<size_t>(x.rows()));
  for (int64_t t = 0; t < x.rows(); ++t) {
    const float* p = y.ptr<float>() + t * w.rows();
    out[static_cast<size_t>(t)] = static_cast<int32_t>(std::max_element(p, p + w.rows()) - p);
  }
  return out;
}

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  check_f32(x, "rms_norm x");
  check_f32(y, "rms_norm y");
  check_f32(weight, "rms_norm weight");
  const int64_t D = weight.numel();
  check(D > 0 && x.numel() % D == 0 && y.numel() == x.numel(), "rms_norm: shapes do not match");
  const int64_t rows = x.numel() / D;
  const float* w = weight.ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.ptr<float>() + r * D;
    float* yr = y.ptr<float>() + r * D;
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float var = static_cast<float>(ss / static_cast<double>(D));
    const float inv = 1.0f / std::sqrt(var + eps);
    for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] * inv) * w[i];
  }
}

void rope(Tensor& x, const int32_t* positions, const RopeParams& params) {
  check_f32(x, "rope x");
  const int64_t D = params.head_dim;
  check(D > 0 && D % 2 == 0 && x.cols() == D, "rope: x's last dim must equal head_dim");
  const int64_t T = x.ndim() >= 3 ? x.dim(0) : x.rows();
  const int64_t per_t = x.rows() / T;  // heads
  std::vector<float> inv(static_cast<size_t>(D / 2));
  rope_inv_freq(params, inv.data());
  const int64_t h = D / 2;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < h; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv[static_cast<size_t>(i)];
      const float c = std::cos(angle), s = std::sin(angle);
      for (int64_t hd = 0; hd < per_t; ++hd) {
        float* v = x.ptr<float>() + (t * per_t + hd) * D;
        const float x0 = v[i], x1 = v[i + h];
        v[i] = x0 * c - x1 * s;
        v[i + h] = x1 * c + x0 * s;
      }
    }
  }
}

void silu_mul(Tensor& gate, const Tensor& up) {
  check_f32(gate, "silu_mul gate");
  check_f32(up, "silu_mul up");
  check(gate.numel() == up.numel(), "silu_mul: gate and up differ in size");
  float* g = gate.ptr<float>();
  const float* u = up.ptr<float>();
  for (int64_t i = 0; i < gate.numel(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void add(Tensor& y, const Tensor& x) {
  check_f32(y, "add y");
  check_f32(x, "add x");
  check(y.numel() == x.numel(), "add: sizes differ");
  for (int64_t i = 0; i < y.numel(); ++i) y.ptr<float>()[i] += x.ptr<float>()[i];
}

void add_bias(Tensor& y, const Tensor& bias) {
  check_f32(y, "add_bias y");
  check_f32(bias, "add_bias bias");
  const int64_t n = bias.numel();
  check(n > 0 && y.numel() % n == 0, "add_bias: bias does not divide y");
  for (int64_t i = 0; i < y.numel(); ++i) y.ptr<float>()[i] += bias.ptr<float>()[i % n];
}

void embed(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out) {
  check_f32(out, "embed out");
  const int64_t V = table.rows(), D = table.cols();
  check(out.numel() == n * D,
        "embed: out must hold " + std::to_string(n) + " rows of " + std::to_string(D));
  for (int64_t t = 0; t < n; ++t) {
    check(ids[t] >= 0 && ids[t] < V, "embed: token id " + std::to_string(ids[t]) +
                                         " out of range [0, " + std::to_string(V) + ")");
    dequantize_row(table.dtype(), table.row_ptr(ids[t]), out.ptr<float>() + t * D, D);
  }
}

void attention(const Tensor& q, const KvSegments& kv, float scale, Tensor& out) {
  check_f32(q, "attention q");
  check_f32(out, "attention out");
  check(q.ndim() == 3, "attention: q must be [T, Hq, D]");
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2);
  check(D == kv.head_dim, "attention: q head_dim differs from the cache's");
  check(kv.n_segments > 0 && Hq % kv.n_segments == 0,
        "attention: query heads not a multiple of kv heads");
  check(out.numel() == q.numel(), "attention: out must have q's shape");
  const int64_t group = Hq / kv.n_segments;
  std::vector<double> s, acc(static_cast<size_t>(D));
  std::vector<float> kr(static_cast<size_t>(D)), vr(static_cast<size_t>(D));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / group;
      const int64_t len = kv.len[g];
      check(len >= T, "attention: segment shorter than the new rows");
      const int64_t n = len - T + t + 1;
      const float* qv = q.ptr<float>() + (t * Hq + h) * D;
      s.assign(static_cast<size_t>(n), 0.0);
      double mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        double d = 0;
        dequantize_row(kv.dtype(), kv.k_row(g, j), kr.data(), D);
        for (int64_t i = 0; i < D; ++i)
          d += static_cast<double>(qv[i]) * kr[static_cast<size_t>(i)];
        s[static_cast<size_t>(j)] = d * scale;
        mx = std::max(mx, s[static_cast<size_t>(j)]);
      }
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < n; ++j) {
        const double p = std::exp(s[static_cast<size_t>(j)] - mx);
        sum += p;
        dequantize_row(kv.dtype(), kv.v_row(g, j), vr.data(), D);
        for (int64_t i = 0; i < D; ++i)
          acc[static_cast<size_t>(i)] += p * vr[static_cast<size_t>(i)];
      }
      float* o = out.ptr<float>() + (t * Hq + h) * D;
      for (int64_t i = 0; i < D; ++i) o[i] = static_cast<float>(acc[static_cast<size_t>(i)] / sum);
    }
  }
}

void attention_column_sums(const Tensor& q, const KvSegments& kv, float scale, Tensor& out) {
  check_f32(q, "attention_column_sums q");
  check_f32(out, "attention_column_sums out");
  check(q.ndim() == 3, "attention_column_sums: q must be [Tq, Hq, D]");
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2);
  check(D == kv.head_dim, "attention_column_sums: q head_dim differs from the cache's");
  check(kv.n_segments > 0 && Hq % kv.n_segments == 0,
        "attention_column_sums: query heads not a multiple of kv heads");
  check(out.ndim() == 2 && out.dim(0) == kv.n_segments,
        "attention_column_sums: out must be [n_segments, L]");
  check(!kv.has_prefix(),
        "attention_column_sums: segments with a borrowed prefix are not supported");
  const int64_t L = out.dim(1), group = Hq / kv.n_segments;
  std::vector<double> acc(static_cast<size_t>(kv.n_segments * L), 0.0), s;
  for (int64_t h = 0; h < Hq; ++h) {
    const int64_t g = h / group;
    const int64_t len = kv.len[g];
    check(len >= T && len <= L, "attention_column_sums: segment length out of range");
    std::vector<float> K(static_cast<size_t>(len * D));
    for (int64_t j = 0; j < len; ++j)
      dequantize_row(kv.dtype(), kv.k_row(g, j), K.data() + j * D, D);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = len - T + t + 1;
      const float* qv = q.ptr<float>() + (t * Hq + h) * D;
      s.assign(static_cast<size_t>(n), 0.0);
      double mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        double d = 0;
        for (int64_t i = 0; i < D; ++i)
          d += static_cast<double>(qv[i]) * K[static_cast<size_t>(j * D + i)];
        s[static_cast<size_t>(j)] = d * scale;
        mx = std::max(mx, s[static_cast<size_t>(j)]);
      }
      double sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += std::exp(s[static_cast<size_t>(j)] - mx);
      for (int64_t j = 0; j < n; ++j)
        acc[static_cast<size_t>(g * L + j)] += std::exp(s[static_cast<size_t>(j)] - mx) / sum;
    }
  }
  for (size_t i = 0; i < acc.size(); ++i) out.ptr<float>()[i] = static_cast<float>(acc[i]);
}

}  // namespace kvp::ref
