// Every model op of every backend (test::BackendOps: the CPU with 1 and 2 threads, and any
// backend the build adds) against the scalar references in kvp::ref, on random inputs of odd
// sizes and every weight type; the CPU's fast dequantisation and SIMD exp; the references'
// dequantisation against golden files written by gguf-py; rope against known values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/quant.h"
#include "backend/cpu/reference.h"
#include "backend/cpu/simd.h"
#include "core/error.h"
#include "core/half.h"
#include "core/tensor.h"
#include "support/backend_ops.h"

namespace kvp {
namespace {

const DType kCacheTypes[] = {DType::F32, DType::F16, DType::BF16};
const DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0,
                           DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q6_K};

Tensor random_f32(std::mt19937& rng, std::initializer_list<int64_t> shape, float lo = -1.f,
                  float hi = 1.f) {
  Tensor t = Tensor::empty(DType::F32, shape);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = dist(rng);
  return t;
}

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// A [rows, cols] weight of type t with random but well-formed blocks: scales are small
// finite halves, quants are random bytes.
Tensor random_weight(std::mt19937& rng, DType t, int64_t rows, int64_t cols) {
  Tensor w = Tensor::empty(t, {rows, cols});
  std::uniform_real_distribution<float> val(-1.f, 1.f), scale(0.001f, 0.05f);
  std::uniform_int_distribution<int> byte(0, 255);
  auto* p = static_cast<uint8_t*>(w.data());
  const size_t nbytes = w.nbytes();
  for (size_t i = 0; i < nbytes; ++i) p[i] = static_cast<uint8_t>(byte(rng));
  const size_t bb = block_bytes(t);
  const size_t nblocks = nbytes / bb;
  for (size_t b = 0; b < nblocks; ++b) {
    uint8_t* q = p + b * bb;
    switch (t) {
      case DType::F32: {
        const float v = val(rng);
        std::memcpy(q, &v, 4);
        break;
      }
      case DType::F16:
        put_f16(q, val(rng));
        break;
      case DType::BF16: {
        const float v = val(rng);
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        const uint16_t h = static_cast<uint16_t>(bits >> 16);
        std::memcpy(q, &h, 2);
        break;
      }
      case DType::Q4_0:
      case DType::Q8_0:
        put_f16(q, scale(rng));
        break;
      case DType::Q4_1:
        put_f16(q, scale(rng));
        put_f16(q + 2, -8 * scale(rng));
        break;
      case DType::Q4_K:
        put_f16(q, scale(rng) * 0.1f);
        put_f16(q + 2, scale(rng) * 0.1f);
        break;
      case DType::Q6_K:
        put_f16(q + 208, scale(rng) * 0.01f);
        break;
      default:
        break;
    }
  }
  return w;
}

float max_abs(const float* p, int64_t n) {
  float m = 0.f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(p[i]));
  return m;
}

std::vector<float> dequantized(const Tensor& w) {
  std::vector<float> out(static_cast<size_t>(w.rows() * w.cols()));
  for (int64_t r = 0; r < w.rows(); ++r)
    ref::dequantize_row(w.dtype(), w.row_ptr(r), out.data() + r * w.cols(), w.cols());
  return out;
}

class Ops : public test::BackendOps {
 protected:
  // The stated matmul bound for entry i of y = x w^T ([T, N]; wf: w dequantised), as
  // MatmulEveryType explains: the f32-sum bound, or on the GPU, where the weight is held as
  // BF16 or x is rounded for cuBLAS, 2^-6 * sum_k |x_k w_k| + 1e-5.
  float matmul_bound(const Tensor& x, const std::vector<float>& wf, DType t, int64_t N,
                     int64_t i) const {
    const int64_t K = x.cols(), T = x.rows(), row = i / N, col = i % N;
    const float* xr = x.ptr<float>() + row * K;
    double abs_dot = 0;
    for (int64_t k = 0; k < K; ++k) {
      abs_dot += std::fabs(static_cast<double>(xr[k]) * wf[static_cast<size_t>(col * K + k)]);
    }
    const float f32_bound = 1e-5f * std::sqrt(static_cast<float>(K)) *
                                max_abs(x.ptr<float>(), x.numel()) *
                                max_abs(wf.data(), static_cast<int64_t>(wf.size())) +
                            1e-6f;
    const bool rounded = is_quantized(t) || (t != DType::F32 && T > 8);
    if (!gpu() || !rounded) return f32_bound;
    return static_cast<float>(std::ldexp(abs_dot, -6)) + 1e-5f;
  }

  // attention(q) over kvd on the backend, and the reference's over kv (the same rows in host
  // memory): {ours, the reference's}, both on the host, [T, Hq, D].
  std::pair<Tensor, Tensor> attention_and_reference(const Tensor& q, const KvSegments& kv,
                                                    const KvSegments& kvd, float scale) {
    Tensor out = dev_zeros(DType::F32, {q.dim(0), q.dim(1), q.dim(2)});
    Tensor outr = Tensor::empty(DType::F32, {q.dim(0), q.dim(1), q.dim(2)});
    be_->attention(dev(q), kvd, scale, out);
    ref::attention(q, kv, scale, outr);
    return {host(out), outr};
  }
};

// --- dequantisation ---------------------------------------------------------------------

// The backend's SIMD dequantisation is bit-identical to the reference.
TEST(CpuQuant, FastDequantMatchesReferenceExactly) {
  std::mt19937 rng(7);
  for (DType t : kAllTypes) {
    for (int64_t cols : {256, 512, 1536}) {
      Tensor w = random_weight(rng, t, 3, cols);
      std::vector<float> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
      for (int64_t r = 0; r < 3; ++r) {
        ref::dequantize_row(t, w.row_ptr(r), a.data(), cols);
        cpu::dequantize_row(t, w.row_ptr(r), b.data(), cols);
        ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4))
            << dtype_name(t) << " cols " << cols;
      }
    }
  }
}

TEST(RefQuant, HandWrittenBlocks) {
  // Q4_0: d = 0.5, byte j = (j+1) | (15-j) << 4 -> low (j+1-8)*0.5, high (15-j-8)*0.5
  uint8_t q40[18];
  put_f16(q40, 0.5f);
  for (int j = 0; j < 16; ++j) q40[2 + j] = static_cast<uint8_t>(((j + 1) & 15) | ((15 - j) << 4));
  float y[32];
  ref::dequantize_row(DType::Q4_0, q40, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], static_cast<float>(((j + 1) & 15) - 8) * 0.5f);
    EXPECT_EQ(y[j + 16], static_cast<float>(15 - j - 8) * 0.5f);
  }
  // Q4_1: d = 0.25, m = -1
  uint8_t q41[20];
  put_f16(q41, 0.25f);
  put_f16(q41 + 2, -1.f);
  for (int j = 0; j < 16; ++j) q41[4 + j] = static_cast<uint8_t>(j | (j << 4));
  ref::dequantize_row(DType::Q4_1, q41, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.25f - 1.f);
    EXPECT_EQ(y[j + 16], j * 0.25f - 1.f);
  }
  // Q8_0: d = 2, q = j - 16
  uint8_t q80[34];
  put_f16(q80, 2.f);
  for (int j = 0; j < 32; ++j) q80[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  ref::dequantize_row(DType::Q8_0, q80, y, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 2.f * static_cast<float>(j - 16));
}

TEST(RefQuant, KQuantScalesAndLayout) {
  // Q4_K with d = 1, dmin = 1, sub-block j scale j+1 and min j, every nibble 1: element i of
  // sub-block j = (j+1) - j = 1, except through the packing of sub-blocks 4..7.
  uint8_t b[144] = {};
  put_f16(b, 1.f);
  put_f16(b + 2, 1.f);
  uint8_t* sc = b + 4;
  const int scale[8] = {1, 2, 3, 4, 50, 6, 7, 63};
  const int mins[8] = {0, 1, 2, 3, 4, 40, 6, 33};
  for (int j = 0; j < 4; ++j) {
    sc[j] = static_cast<uint8_t>(scale[j] | ((scale[j + 4] >> 4) << 6));
    sc[j + 4] = static_cast<uint8_t>(mins[j] | ((mins[j + 4] >> 4) << 6));
    sc[j + 8] = static_cast<uint8_t>((scale[j + 4] & 15) | ((mins[j + 4] & 15) << 4));
  }
  for (int i = 0; i < 128; ++i) b[16 + i] = 0x21;  // low nibble 1, high nibble 2
  float y[256];
  ref::dequantize_row(DType::Q4_K, b, y, 256);
  for (int j = 0; j < 8; ++j) {
    const float q = (j % 2 == 0) ? 1.f : 2.f;  // even sub-blocks take low nibbles
    for (int l = 0; l < 32; ++l) ASSERT_EQ(y[32 * j + l], scale[j] * q - mins[j]) << j << " " << l;
  }
  // Q6_K: d = 1, scales k -> k - 8, ql = 0x31 (low nibble 1, high 3), qh = 0b11100100
  // (2-bit fields 0, 1, 2, 3): element groups of 32 get q = ({1,1,3,3} | {0,1,2,3} << 4) - 32.
  uint8_t c[210] = {};
  for (int i = 0; i < 128; ++i) c[i] = 0x31;
  for (int i = 0; i < 64; ++i) c[128 + i] = 0xE4;
  for (int k = 0; k < 16; ++k) c[192 + k] = static_cast<uint8_t>(static_cast<int8_t>(k - 8));
  put_f16(c + 208, 1.f);
  ref::dequantize_row(DType::Q6_K, c, y, 256);
  const int low[4] = {1, 1, 3, 3};
  for (int i = 0; i < 256; ++i) {
    const int g = (i % 128) / 32;
    const int q = (low[g] | (g << 4)) - 32;
    const int s = i / 16 - 8;
    ASSERT_EQ(y[i], static_cast<float>(s) * static_cast<float>(q)) << i;
  }
}

// Golden rows written by gguf-py (tests/golden/quant_<TYPE>.bin: raw blocks; .f32: the
// little-endian floats gguf-py dequantised them to). Must match bit for bit.
TEST(RefQuant, MatchesGgufPyGoldens) {
  const std::filesystem::path dir = std::filesystem::path(KVP_SOURCE_DIR) / "tests" / "golden";
  if (!std::filesystem::exists(dir / "quant.json"))
    GTEST_FAIL() << "no " << (dir / "quant.json") << " (committed golden)";
  int checked = 0;
  for (DType t : kAllTypes) {
    const auto bin = dir / ("quant_" + dtype_name(t) + ".bin");
    const auto f32 = dir / ("quant_" + dtype_name(t) + ".f32");
    if (!std::filesystem::exists(bin) || !std::filesystem::exists(f32)) continue;
    std::ifstream fb(bin, std::ios::binary), ff(f32, std::ios::binary);
    std::vector<char> raw((std::istreambuf_iterator<char>(fb)), std::istreambuf_iterator<char>());
    std::vector<char> fraw((std::istreambuf_iterator<char>(ff)), std::istreambuf_iterator<char>());
    ASSERT_EQ(fraw.size() % 4, 0u);
    const int64_t n = static_cast<int64_t>(fraw.size() / 4);
    ASSERT_EQ(raw.size(), row_bytes(t, n)) << dtype_name(t);
    std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n)),
        fast(static_cast<size_t>(n));
    std::memcpy(want.data(), fraw.data(), fraw.size());
    ref::dequantize_row(t, raw.data(), got.data(), n);
    cpu::dequantize_row(t, raw.data(), fast.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const size_t k = static_cast<size_t>(i);
      if (std::isnan(want[k])) {
        ASSERT_TRUE(std::isnan(got[k]));
        continue;
      }
      ASSERT_EQ(got[k], want[k]) << dtype_name(t) << " element " << i;
      ASSERT_EQ(fast[k], want[k]) << dtype_name(t) << " element " << i;
    }
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

#if defined(__AVX512F__)
// The vector e^x of softmax and silu: within 4 ulp of libm over [-87, 88], 0 / inf / NaN at
// the ends.
TEST(CpuSimd, ExpAccuracy) {
  std::vector<float> xs;
  for (float x = -87.f; x <= 88.f; x += 0.0137f) xs.push_back(x);
  for (float x : {0.f, -0.f, 1e-30f, -1e-30f, 1.f, -1.f, 88.7f, -87.3f}) xs.push_back(x);
  while (xs.size() % 16) xs.push_back(0.5f);
  float worst = 0.f;
  for (size_t i = 0; i < xs.size(); i += 16) {
    float out[16];
    _mm512_storeu_ps(out, cpu::exp_ps(_mm512_loadu_ps(xs.data() + i)));
    for (int j = 0; j < 16; ++j) {
      const double want = std::exp(static_cast<double>(xs[i + j]));
      const double ulps =
          std::fabs(out[j] - want) /
          (std::nextafter(static_cast<float>(want), INFINITY) - static_cast<float>(want));
      worst = std::max(worst, static_cast<float>(ulps));
    }
  }
  EXPECT_LE(worst, 4.f);
  const float special[16] = {-INFINITY, INFINITY, NAN, -100.f, 100.f, -88.f, 89.f, 0.f,
                             0.f,       0.f,      0.f, 0.f,    0.f,   0.f,   0.f,  0.f};
  float out[16];
  _mm512_storeu_ps(out, cpu::exp_ps(_mm512_loadu_ps(special)));
  EXPECT_EQ(out[0], 0.f);
  EXPECT_EQ(out[1], INFINITY);
  EXPECT_TRUE(std::isnan(out[2]));
  EXPECT_EQ(out[3], 0.f);
  EXPECT_EQ(out[4], INFINITY);
  EXPECT_EQ(out[6], INFINITY);
  EXPECT_EQ(out[7], 1.f);
}
#endif

// --- matmul -----------------------------------------------------------------------------

// Bound: |diff| <= 1e-5 * sqrt(K) * max|x| * max|w| + 1e-6. The reference sums in double,
// the backend in f32 (blocked sums: error grows ~ sqrt(K) * 2^-24 per product magnitude).
// On the GPU, weights the backend holds as BF16 (quantised ones) and x rounded to the weight
// type for a cuBLAS product (more than 8 rows of 16-bit weights) each move a term by at
// most 2^-8 relatively (BF16's half ulp); with the f32 sums on top:
// |diff| <= 2^-6 * sum_i |x_i w_i| + 1e-5 (see matmul_bound).
TEST_P(Ops, MatmulEveryType) {
  for (DType t : kAllTypes) {
    for (int64_t K : {256, 768}) {
      for (int64_t N : {1, 37, 130}) {
        for (int64_t T : {1, 3, 17}) {
          Tensor w = random_weight(rng_, t, N, K);
          Tensor x = random_f32(rng_, {T, K});
          Tensor y = Tensor::empty(DType::F32, {T, N}), yr = Tensor::empty(DType::F32, {T, N});
          Tensor yd = dev(y);
          be_->matmul(dev(x), weight(w), yd);
          y = host(yd);
          ref::matmul(x, w, yr);
          const std::vector<float> wf = dequantized(w);
          for (int64_t i = 0; i < y.numel(); ++i)
            ASSERT_NEAR(y.ptr<float>()[i], yr.ptr<float>()[i], matmul_bound(x, wf, t, N, i))
                << dtype_name(t) << " K=" << K << " N=" << N << " T=" << T << " at " << i;
        }
      }
    }
  }
}

// y += x w^T (a projection and its residual add): y's old value plus what matmul's bound
// allows for the product, whether the backend adds in the product's epilogue (a few rows)
// or computes the product apart and adds it (many rows, rows the vector kernel cannot take).
TEST_P(Ops, MatmulAdd) {
  for (DType t : kAllTypes) {
    for (int64_t K : {7, 256}) {
      if (t != DType::F32 && K % 32 != 0) continue;  // quantised rows come in blocks of 32
      for (int64_t T : {1, 3, 17}) {
        const int64_t N = 130;
        Tensor w = random_weight(rng_, t, N, K);
        Tensor x = random_f32(rng_, {T, K});
        Tensor y0 = random_f32(rng_, {T, N});
        Tensor yd = dev(y0), scratch = dev_zeros(DType::F32, {T, N});
        be_->matmul_add(dev(x), weight(w), yd, scratch);
        Tensor y = host(yd), prod = Tensor::empty(DType::F32, {T, N});
        ref::matmul(x, w, prod);
        const std::vector<float> wf = dequantized(w);
        for (int64_t i = 0; i < y.numel(); ++i) {
          const float want = y0.ptr<float>()[i] + prod.ptr<float>()[i];
          ASSERT_NEAR(y.ptr<float>()[i], want,
                      matmul_bound(x, wf, t, N, i) + 1e-6f * std::fabs(want))
              << dtype_name(t) << " K=" << K << " T=" << T << " at " << i;
        }
      }
    }
  }
}

// Several matrices over one x (a layer's q, k and v): each y as matmul's bound allows,
// whether the backend streams them in one pass (a few rows of x, up to three matrices of one
// type) or falls back to one matmul each (many rows, four matrices, mixed types, odd K).
TEST_P(Ops, MatmulMulti) {
  struct Case {
    std::vector<DType> types;
    std::vector<int64_t> n;
    int64_t K, T;
  };
  for (const Case& c :
       {Case{{DType::Q4_1, DType::Q4_1, DType::Q4_1}, {64, 16, 16}, 256, 1},
        Case{{DType::F32, DType::F32}, {300, 300}, 96, 3},
        Case{{DType::BF16, DType::BF16, DType::BF16}, {5, 1, 2000}, 512, 8},
        Case{{DType::F16, DType::F16, DType::F16, DType::F16}, {7, 8, 9, 10}, 64, 2},
        Case{{DType::Q8_0, DType::F16}, {33, 20}, 256, 1}, Case{{DType::F32}, {40}, 7, 2},
        Case{{DType::BF16, DType::BF16}, {70, 30}, 128, 20}}) {
    Tensor x = random_f32(rng_, {c.T, c.K});
    std::vector<Tensor> w, wd, yd;
    for (size_t m = 0; m < c.n.size(); ++m) {
      w.push_back(random_weight(rng_, c.types[m], c.n[m], c.K));
      wd.push_back(weight(w.back()));
      yd.push_back(dev_zeros(DType::F32, {c.T, c.n[m]}));
    }
    std::vector<Backend::MatmulOut> outs;
    for (size_t m = 0; m < c.n.size(); ++m) outs.push_back({&wd[m], &yd[m]});
    be_->matmul_multi(dev(x), outs);
    for (size_t m = 0; m < c.n.size(); ++m) {
      Tensor y = host(yd[m]), yr = Tensor::empty(DType::F32, {c.T, c.n[m]});
      ref::matmul(x, w[m], yr);
      const std::vector<float> wf = dequantized(w[m]);
      for (int64_t i = 0; i < y.numel(); ++i)
        ASSERT_NEAR(y.ptr<float>()[i], yr.ptr<float>()[i],
                    matmul_bound(x, wf, c.types[m], c.n[m], i))
            << "matrix " << m << " of " << c.n.size() << ", T=" << c.T << " at " << i;
    }
  }
}

TEST_P(Ops, MatmulLargeT) {
  for (DType t : {DType::Q4_1, DType::Q8_0, DType::F32}) {
    const int64_t K = 576, N = 100, T = 77;
    Tensor w = random_weight(rng_, t, N, K);
    Tensor x = random_f32(rng_, {T, K});
    Tensor y = Tensor::empty(DType::F32, {T, N}), yr = Tensor::empty(DType::F32, {T, N});
    Tensor yd = dev(y);
    be_->matmul(dev(x), weight(w), yd);
    y = host(yd);
    ref::matmul(x, w, yr);
    const std::vector<float> wf = dequantized(w);
    for (int64_t i = 0; i < y.numel(); ++i)
      ASSERT_NEAR(y.ptr<float>()[i], yr.ptr<float>()[i], matmul_bound(x, wf, t, N, i)) << i;
  }
}

// Plain types take any K, including ones that are no multiple of the vector width.
TEST_P(Ops, MatmulPlainTypesOddK) {
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    for (int64_t K : {1, 7, 100}) {
      for (int64_t T : {1, 2, 9}) {
        const int64_t N = 45;
        Tensor w = random_weight(rng_, t, N, K);
        Tensor x = random_f32(rng_, {T, K});
        Tensor y = Tensor::empty(DType::F32, {T, N}), yr = Tensor::empty(DType::F32, {T, N});
        Tensor yd = dev(y);
        be_->matmul(dev(x), weight(w), yd);
        y = host(yd);
        ref::matmul(x, w, yr);
        const std::vector<float> wf = dequantized(w);
        for (int64_t i = 0; i < y.numel(); ++i)
          ASSERT_NEAR(y.ptr<float>()[i], yr.ptr<float>()[i],
                      std::max(1e-5f * std::sqrt(static_cast<float>(K)) + 1e-6f,
                               matmul_bound(x, wf, t, N, i)))
              << dtype_name(t) << " K=" << K << " T=" << T;
      }
    }
  }
}

TEST_P(Ops, MatmulRejectsBadShapes) {
  Tensor w = random_weight(rng_, DType::Q4_1, 8, 64);
  Tensor x = random_f32(rng_, {2, 32});
  Tensor y = Tensor::empty(DType::F32, {2, 8});
  Tensor xd = dev(x), wd = weight(w), yd = dev(y);
  EXPECT_THROW(be_->matmul(xd, wd, yd), Error);
  Tensor x2 = random_f32(rng_, {2, 64});
  Tensor y2 = Tensor::empty(DType::F32, {2, 9});
  Tensor x2d = dev(x2), y2d = dev(y2);
  EXPECT_THROW(be_->matmul(x2d, wd, y2d), Error);
}

// --- elementwise ------------------------------------------------------------------------

// Bound: |diff| <= 1e-5 * |ref| + 1e-6 (the sum of squares differs in order only).
TEST_P(Ops, RmsNorm) {
  for (int64_t T : {1, 3, 17, 300}) {
    // 4096 and 5124: the GPU's register path for wide rows (a whole number of float4s per
    // thread and not).
    for (int64_t D : {64, 576, 100, 4096, 5124}) {
      if (T == 300 && D > 576) continue;
      Tensor x = random_f32(rng_, {T, D}, -3.f, 3.f), w = random_f32(rng_, {D});
      Tensor y = Tensor::empty(DType::F32, {T, D}), yr = Tensor::empty(DType::F32, {T, D});
      Tensor xd = dev(x), wd = dev(w), yd = dev(y);
      be_->rms_norm(xd, wd, 1e-5f, yd);
      y = host(yd);
      ref::rms_norm(x, w, 1e-5f, yr);
      for (int64_t i = 0; i < y.numel(); ++i)
        ASSERT_NEAR(y.ptr<float>()[i], yr.ptr<float>()[i],
                    1e-5f * std::fabs(yr.ptr<float>()[i]) + 1e-6f);
      be_->rms_norm(xd, wd, 1e-5f, xd);  // in place
      x = host(xd);
      for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(x.ptr<float>()[i], y.ptr<float>()[i]);
    }
  }
}

// Bound: exact. Same inv_freq, cos, sin and evaluation order as the reference.
TEST_P(Ops, Rope) {
  RopeParams p;
  p.head_dim = 64;
  p.theta = 100000.f;
  for (int64_t T : {1, 3, 17, 200}) {
    for (int heads : {3, 9}) {
      Tensor x = random_f32(rng_, {T, heads, 64}, -2.f, 2.f);
      Tensor xr = Tensor::empty(DType::F32, {T, heads, 64});
      std::memcpy(xr.data(), x.data(), x.nbytes());
      std::vector<int32_t> pos(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t)
        pos[static_cast<size_t>(t)] = static_cast<int32_t>(t * 37 + 5);
      Tensor xd = dev(x);
      be_->rope(xd, pos.data(), p);
      x = host(xd);
      ref::rope(xr, pos.data(), p);
      for (int64_t i = 0; i < x.numel(); ++i)
        ASSERT_NEAR(x.ptr<float>()[i], xr.ptr<float>()[i],
                    1e-6f * (1.f + std::fabs(xr.ptr<float>()[i])))
            << i;
    }
  }
}

TEST(RefRope, KnownValues) {
  RopeParams p;
  p.head_dim = 4;
  p.theta = 10000.f;
  float inv[2];
  rope_inv_freq(p, inv);
  EXPECT_EQ(inv[0], 1.f);
  EXPECT_FLOAT_EQ(inv[1], 0.01f);
  // x = [1, 2, 3, 4] at position 1: pairs (x0, x2) by angle 1, (x1, x3) by angle 0.01.
  float v[4] = {1, 2, 3, 4};
  Tensor x = Tensor::view(DType::F32, {1, 1, 4}, v);
  const int32_t pos = 1;
  ref::rope(x, &pos, p);
  EXPECT_NEAR(v[0], 1 * std::cos(1.0) - 3 * std::sin(1.0), 1e-6);
  EXPECT_NEAR(v[2], 3 * std::cos(1.0) + 1 * std::sin(1.0), 1e-6);
  EXPECT_NEAR(v[1], 2 * std::cos(0.01) - 4 * std::sin(0.01), 1e-6);
  EXPECT_NEAR(v[3], 4 * std::cos(0.01) + 2 * std::sin(0.01), 1e-6);
  // Position 0 is the identity.
  float w[4] = {1, 2, 3, 4};
  Tensor x0 = Tensor::view(DType::F32, {1, 1, 4}, w);
  const int32_t zero = 0;
  ref::rope(x0, &zero, p);
  EXPECT_EQ(w[0], 1.f);
  EXPECT_EQ(w[3], 4.f);
}

// Llama 3.1's scaling (theta 500000, factor 8, low 1, high 4, original 8192, head_dim 128),
// against the formula evaluated in double.
TEST(RefRope, Llama3Scaling) {
  RopeParams p;
  p.head_dim = 128;
  p.theta = 500000.f;
  p.llama3_factor = 8.f;
  p.llama3_low_freq_factor = 1.f;
  p.llama3_high_freq_factor = 4.f;
  p.llama3_original_max_positions = 8192;
  float inv[64];
  rope_inv_freq(p, inv);
  int low = 0, mid = 0, high = 0;
  for (int i = 0; i < 64; ++i) {
    const double f = 1.0 / std::pow(500000.0, 2.0 * i / 128.0);
    const double wl = 2 * std::numbers::pi / f;
    double want;
    if (wl < 8192.0 / 4) {
      want = f;
      ++high;
    } else if (wl > 8192.0 / 1) {
      want = f / 8;
      ++low;
    } else {
      const double s = (8192.0 / wl - 1) / (4 - 1);
      want = (1 - s) * f / 8 + s * f;
      ++mid;
    }
    EXPECT_NEAR(inv[i], want, 2e-6 * want) << i;
  }
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
  EXPECT_GT(high, 0);
}

// Bound: |diff| <= 1e-6 * (|ref| + 1) (exp may differ by an ulp or two).
TEST_P(Ops, SiluMulAddBias) {
  for (int64_t n : {1, 17, 1536, 3 * 1536 + 5}) {
    Tensor g = random_f32(rng_, {n}, -8.f, 8.f), u = random_f32(rng_, {n});
    Tensor gr = Tensor::empty(DType::F32, {n});
    std::memcpy(gr.data(), g.data(), g.nbytes());
    Tensor gd = dev(g), ud = dev(u);
    be_->silu_mul(gd, ud);
    g = host(gd);
    ref::silu_mul(gr, u);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(g.ptr<float>()[i], gr.ptr<float>()[i],
                  1e-6f * (std::fabs(gr.ptr<float>()[i]) + 1.f));
    // add: exact
    be_->add(gd, ud);
    g = host(gd);
    ref::add(gr, u);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(g.ptr<float>()[i], gr.ptr<float>()[i],
                  1e-6f * (std::fabs(gr.ptr<float>()[i]) + 1.f));
  }
  for (int64_t T : {1, 3, 70}) {
    Tensor y = random_f32(rng_, {T, 192}), b = random_f32(rng_, {192});
    Tensor yr = Tensor::empty(DType::F32, {T, 192});
    std::memcpy(yr.data(), y.data(), y.nbytes());
    Tensor yd = dev(y);
    be_->add_bias(yd, dev(b));
    y = host(yd);
    ref::add_bias(yr, b);
    for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.ptr<float>()[i], yr.ptr<float>()[i]);
  }
}

// Bound: exact (dequantisation is exact); on the GPU, a quantised table is held as BF16, so
// |diff| <= 2^-8 |ref| (one rounding to nearest: half of BF16's 2^-7 ulp).
TEST_P(Ops, EmbedEveryType) {
  for (DType t : kAllTypes) {
    Tensor table = random_weight(rng_, t, 50, 512);
    const std::vector<int32_t> ids = {0, 49, 7, 7, 23};
    Tensor out = Tensor::empty(DType::F32, {5, 512}), outr = Tensor::empty(DType::F32, {5, 512});
    Tensor outd = dev(out), tabled = weight(table);
    be_->embed(tabled, ids.data(), 5, outd);
    out = host(outd);
    ref::embed(table, ids.data(), 5, outr);
    if (gpu() && is_quantized(t)) {
      for (int64_t i = 0; i < out.numel(); ++i)
        ASSERT_NEAR(out.ptr<float>()[i], outr.ptr<float>()[i],
                    std::ldexp(std::fabs(outr.ptr<float>()[i]), -8))
            << dtype_name(t) << " at " << i;
    } else {
      ASSERT_EQ(0, std::memcmp(out.data(), outr.data(), out.nbytes())) << dtype_name(t);
    }
    const int32_t bad = 50;
    EXPECT_THROW(be_->embed(tabled, &bad, 1, outd), Error);
  }
}

// --- attention --------------------------------------------------------------------------

// GQA with 3 kv heads and 9 query heads, segments of different lengths, with spare capacity
// between them; the last T rows of each segment are the new tokens.
// Bound: |diff| <= 2e-5 * max|v| (the output is a convex combination of v rows).
TEST_P(Ops, AttentionSegmentsGqa) {
  const int D = 64, Hkv = 3, Hq = 9;
  for (int64_t T : {1, 3, 17}) {
    for (int64_t base : {0, 40, 300}) {
      std::vector<int64_t> len = {base + T, base / 2 + T + 5, base * 2 + T + 1};
      std::vector<int64_t> offset(3);
      int64_t total = 0;
      for (int s = 0; s < Hkv; ++s) {
        offset[static_cast<size_t>(s)] = total;
        total += len[static_cast<size_t>(s)] + 7;  // capacity beyond len
      }
      // The cache's row types in turn (attention computes in f32 from any of them).
      const DType t = kCacheTypes[static_cast<size_t>(base + T) % 3];
      Tensor v32 = random_f32(rng_, {total, D});
      Tensor k = test::as_dtype(random_f32(rng_, {total, D}, -2.f, 2.f), t);
      Tensor v = test::as_dtype(v32, t);
      Tensor q = random_f32(rng_, {T, Hq, D}, -2.f, 2.f);
      KvSegments kv{k, v, offset.data(), len.data(), Hkv, D};
      KvSegments kvd{dev(k), dev(v), offset.data(), len.data(), Hkv, D};
      const float scale = 1.f / std::sqrt(static_cast<float>(D));
      const auto [out, outr] = attention_and_reference(q, kv, kvd, scale);
      const float bound = 2e-5f * max_abs(v32.ptr<float>(), v32.numel());
      for (int64_t i = 0; i < out.numel(); ++i)
        ASSERT_NEAR(out.ptr<float>()[i], outr.ptr<float>()[i], bound)
            << dtype_name(t) << " T=" << T << " base=" << base << " at " << i;
    }
  }
}

// Other head shapes: plain multi-head (G = 1), wide groups (G = 8), a head_dim that is no
// multiple of 16 (the scalar path), long decode segments (split along the keys), decode
// with 1, 2 and 4 query rows per kv head (S as dot products of K rows, partial key blocks).
TEST_P(Ops, AttentionShapes) {
  struct Case {
    int D, Hkv, Hq;
    int64_t T, len;
  };
  for (const Case& c : {Case{64, 4, 4, 5, 90}, Case{128, 1, 8, 1, 2000}, Case{24, 2, 6, 3, 70},
                        Case{64, 2, 4, 1, 1500}, Case{32, 3, 9, 70, 200}, Case{64, 4, 4, 1, 130},
                        Case{64, 2, 8, 1, 300}, Case{128, 2, 8, 1, 77}, Case{64, 1, 2, 2, 45}}) {
    std::vector<int64_t> len, offset;
    int64_t total = 0;
    for (int s = 0; s < c.Hkv; ++s) {
      offset.push_back(total);
      len.push_back(c.len + 13 * s);
      total += len.back() + 3;
    }
    Tensor k = random_f32(rng_, {total, c.D}, -2.f, 2.f), v = random_f32(rng_, {total, c.D});
    Tensor q = random_f32(rng_, {c.T, c.Hq, c.D}, -2.f, 2.f);
    KvSegments kv{k, v, offset.data(), len.data(), c.Hkv, c.D};
    KvSegments kvd{dev(k), dev(v), offset.data(), len.data(), c.Hkv, c.D};
    const float scale = 1.f / std::sqrt(static_cast<float>(c.D));
    const auto [out, outr] = attention_and_reference(q, kv, kvd, scale);
    for (int64_t i = 0; i < out.numel(); ++i)
      ASSERT_NEAR(out.ptr<float>()[i], outr.ptr<float>()[i], 2e-5f)
          << "D=" << c.D << " Hq=" << c.Hq << " at " << i;
  }
}

TEST_P(Ops, AttentionLongPrefill) {
  const int D = 64, Hkv = 3, Hq = 9;
  const int64_t T = 700;
  std::vector<int64_t> len = {T, T, T + 20}, offset = {0, T, 2 * T};
  Tensor k = random_f32(rng_, {3 * T + 20, D}, -1.f, 1.f), v = random_f32(rng_, {3 * T + 20, D});
  Tensor q = random_f32(rng_, {T, Hq, D}, -1.f, 1.f);
  KvSegments kv{k, v, offset.data(), len.data(), Hkv, D};
  KvSegments kvd{dev(k), dev(v), offset.data(), len.data(), Hkv, D};
  const auto [out, outr] = attention_and_reference(q, kv, kvd, 0.125f);
  for (int64_t i = 0; i < out.numel(); ++i)
    ASSERT_NEAR(out.ptr<float>()[i], outr.ptr<float>()[i], 2e-5f) << i;
}

// Long prefills over 16-bit caches, the shape the GPU's tensor-core kernel takes (at least
// kPrefillMinQueries queries, head_dim 64 or 128): GQA, segments that also hold older rows,
// query counts that are no multiple of a block's rows. q is rounded to the cache's type first,
// since that kernel feeds q to the tensor cores in it. Bound: the kernel also rounds each
// probability p to 16 bits (relative 2^-9 at most), so the output moves by at most
// 2^-9 * max|v|; 2^-8 * max|v| on a GPU, 2e-5 * max|v| elsewhere. Off-by-one masks would fail
// it: the first query sees a single row, so its output is that row.
TEST_P(Ops, AttentionPrefill16Bit) {
  struct Case {
    DType t;
    int D;
    int64_t T, past;
  };
  for (const Case& c : {Case{DType::BF16, 128, 300, 0}, Case{DType::BF16, 128, 130, 77},
                        Case{DType::F16, 64, 257, 40}, Case{DType::BF16, 64, 200, 0},
                        Case{DType::F16, 128, 129, 1}}) {
    const int Hkv = 2, Hq = 8;
    std::vector<int64_t> len = {c.T + c.past, c.T + 2 * c.past}, offset = {5, c.T + c.past + 9};
    const int64_t total = offset[1] + len[1] + 3;
    Tensor v32 = random_f32(rng_, {total, c.D});
    Tensor k = test::as_dtype(random_f32(rng_, {total, c.D}), c.t), v = test::as_dtype(v32, c.t);
    Tensor q16 = test::as_dtype(random_f32(rng_, {c.T, Hq, c.D}), c.t);
    Tensor q = Tensor::empty(DType::F32, {c.T, Hq, c.D});
    for (int64_t i = 0; i < q.numel(); ++i) {
      const uint16_t bits = static_cast<const uint16_t*>(q16.data())[i];
      q.ptr<float>()[i] = c.t == DType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
    }
    KvSegments kv{k, v, offset.data(), len.data(), Hkv, c.D};
    KvSegments kvd{dev(k), dev(v), offset.data(), len.data(), Hkv, c.D};
    const float scale = 1.f / std::sqrt(static_cast<float>(c.D));
    const auto [out, outr] = attention_and_reference(q, kv, kvd, scale);
    const float bound = (gpu() ? 0x1p-8f : 2e-5f) * max_abs(v32.ptr<float>(), v32.numel());
    for (int64_t i = 0; i < out.numel(); ++i)
      ASSERT_NEAR(out.ptr<float>()[i], outr.ptr<float>()[i], bound)
          << dtype_name(c.t) << " D=" << c.D << " T=" << c.T << " past=" << c.past << " at " << i;
  }
}

// Decode and short question prefills over 16-bit caches, what the GPU's tensor-core split
// kernel takes: head_dim 64 and 128, GQA 4, a long and a short segment (the long one split
// into many work items), 1 to 5 new tokens (up to 20 query vectors: more than one 16-row
// tile), and segments that start with rows borrowed from another cache in scattered order.
// Bound as AttentionSegmentsGqa: that kernel keeps f32 accuracy (the queries enter the tensor
// cores as three 16-bit terms, P as two), which one rounding of either would break.
TEST_P(Ops, AttentionSplit16Bit) {
  struct Case {
    DType t;
    int D;
    int64_t T;
    bool borrow;
  };
  for (const Case& c : {Case{DType::BF16, 128, 1, false}, Case{DType::F16, 64, 1, true},
                        Case{DType::BF16, 128, 5, true}, Case{DType::F16, 128, 3, false},
                        Case{DType::BF16, 64, 2, true}}) {
    const int Hkv = 2, Hq = 8;
    std::vector<int64_t> len = {3000 + c.T, 70 + c.T}, plen = {500, 40}, poff = {3, 650};
    if (!c.borrow) plen = {0, 0};
    std::vector<int64_t> offset = {0, len[0] - plen[0] + 9};
    const int64_t total = offset[1] + len[1] - plen[1] + 2, borrowed_rows = 700;
    std::vector<std::vector<int32_t>> rows(2);
    for (size_t s = 0; s < 2; ++s)
      for (int64_t j = 0; j < plen[s]; ++j)
        rows[s].push_back(static_cast<int32_t>((j * 37 + 11) % (s == 0 ? 640 : 50)));
    const int32_t* row_lists[2] = {rows[0].data(), rows[1].data()};
    Tensor v32 = random_f32(rng_, {total, c.D}), pv32 = random_f32(rng_, {borrowed_rows, c.D});
    Tensor k = test::as_dtype(random_f32(rng_, {total, c.D}, -2.f, 2.f), c.t);
    Tensor pk = test::as_dtype(random_f32(rng_, {borrowed_rows, c.D}, -2.f, 2.f), c.t);
    Tensor v = test::as_dtype(v32, c.t), pv = test::as_dtype(pv32, c.t);
    Tensor q = random_f32(rng_, {c.T, Hq, c.D}, -2.f, 2.f);
    KvSegments kv{k, v, offset.data(), len.data(), Hkv, c.D};
    KvSegments kvd{dev(k), dev(v), offset.data(), len.data(), Hkv, c.D};
    if (c.borrow) {
      for (KvSegments* s : {&kv, &kvd}) {
        s->prefix_offset = poff.data();
        s->prefix_len = plen.data();
        s->prefix_rows = row_lists;
      }
      kv.prefix_k = pk;
      kv.prefix_v = pv;
      kvd.prefix_k = dev(pk);
      kvd.prefix_v = dev(pv);
    }
    const float scale = 1.f / std::sqrt(static_cast<float>(c.D));
    const auto [out, outr] = attention_and_reference(q, kv, kvd, scale);
    const float bound = 2e-5f * std::max(max_abs(v32.ptr<float>(), v32.numel()),
                                         max_abs(pv32.ptr<float>(), pv32.numel()));
    for (int64_t i = 0; i < out.numel(); ++i)
      ASSERT_NEAR(out.ptr<float>()[i], outr.ptr<float>()[i], bound)
          << dtype_name(c.t) << " D=" << c.D << " T=" << c.T << " borrow=" << c.borrow << " at "
          << i;
  }
}

// A batch of jobs (as a batched decode step or question prefill issues): each job's own
// queries over its own cache, with mixed T, lengths and key splits, in one call.
// Bound: as AttentionSegmentsGqa.
TEST_P(Ops, AttentionBatchMatchesEachJob) {
  const int D = 64, Hkv = 3, Hq = 9;
  struct Job {
    Tensor k, v, q, out, outr, kd, vd, qd, outd;
    std::vector<int64_t> len, offset;
  };
  for (int n_jobs : {1, 2, 25}) {
    std::vector<Job> jobs(static_cast<size_t>(n_jobs));
    std::vector<AttentionJob> batch;
    for (int j = 0; j < n_jobs; ++j) {
      Job& b = jobs[static_cast<size_t>(j)];
      const int64_t T = j % 3 == 0 ? 1 : j % 3 == 1 ? 4 : 33;
      const int64_t base = j % 2 == 0 ? 20 : 900;  // long ones split along the keys alone
      int64_t total = 0;
      for (int s = 0; s < Hkv; ++s) {
        b.offset.push_back(total);
        b.len.push_back(base + T + 11 * s);
        total += b.len.back() + 5;
      }
      b.k = random_f32(rng_, {total, D}, -2.f, 2.f);
      b.v = random_f32(rng_, {total, D});
      b.q = random_f32(rng_, {T, Hq, D}, -2.f, 2.f);
      b.out = Tensor::empty(DType::F32, {T, Hq, D});
      b.outr = Tensor::empty(DType::F32, {T, Hq, D});
    }
    for (Job& b : jobs) {
      KvSegments kv{b.k, b.v, b.offset.data(), b.len.data(), Hkv, D};
      b.kd = dev(b.k);
      b.vd = dev(b.v);
      b.qd = dev(b.q);
      b.outd = dev(b.out);
      batch.push_back(
          {&b.qd, KvSegments{b.kd, b.vd, b.offset.data(), b.len.data(), Hkv, D}, &b.outd});
      ref::attention(b.q, kv, 0.125f, b.outr);
    }
    be_->attention_batch(batch, 0.125f);
    for (Job& b : jobs) b.out = host(b.outd);
    for (size_t j = 0; j < jobs.size(); ++j) {
      const float bound = 2e-5f * max_abs(jobs[j].v.ptr<float>(), jobs[j].v.numel());
      for (int64_t i = 0; i < jobs[j].out.numel(); ++i)
        ASSERT_NEAR(jobs[j].out.ptr<float>()[i], jobs[j].outr.ptr<float>()[i], bound)
            << n_jobs << " jobs, job " << j << " at " << i;
    }
  }
}

KVP_INSTANTIATE_BACKEND_OPS(Ops);

}  // namespace
}  // namespace kvp
