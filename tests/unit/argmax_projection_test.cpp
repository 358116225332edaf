// Backend::matmul_argmax must pick exactly the token argmax(matmul) picks: the CPU backend
// screens Q8_0 tables with int8 estimates and error bounds, then recomputes the survivors.
// Random tables, exact and near ties, outlier activations and degenerate rows, with 1 and
// 2 threads; the scalar reference agrees up to rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/reference.h"
#include "backend/factory.h"
#include "core/half.h"
#include "core/tensor.h"
#include "support/backend_threads.h"

namespace kvp {
namespace {

constexpr int64_t kBlockBytes = 34;

// A [rows, cols] Q8_0 table with scales in [0.001, 0.05] and quants in [-128, 127].
Tensor random_q8(std::mt19937& rng, int64_t rows, int64_t cols) {
  Tensor w = Tensor::empty(DType::Q8_0, {rows, cols});
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  std::uniform_int_distribution<int> quant(-128, 127);
  auto* p = static_cast<uint8_t*>(w.data());
  for (int64_t b = 0; b < rows * cols / 32; ++b) {
    const uint16_t h = f32_to_f16(scale(rng));
    std::memcpy(p + b * kBlockBytes, &h, 2);
    for (int i = 0; i < 32; ++i) p[b * kBlockBytes + 2 + i] = static_cast<uint8_t>(quant(rng));
  }
  return w;
}

// x rows in [-1, 1] with a few outlier dimensions (as in real residual streams).
Tensor random_x(std::mt19937& rng, int64_t T, int64_t K) {
  Tensor x = Tensor::empty(DType::F32, {T, K});
  std::uniform_real_distribution<float> val(-1.f, 1.f);
  for (int64_t i = 0; i < T * K; ++i) x.ptr<float>()[i] = val(rng);
  for (int64_t t = 0; t < T; ++t) x.ptr<float>()[t * K + (7 * t) % K] *= 40.f;
  return x;
}

std::vector<int32_t> argmax_of_matmul(Backend& be, const Tensor& x, const Tensor& w) {
  Tensor y = Tensor::empty(DType::F32, {x.rows(), w.rows()});
  be.matmul(x, w, y);
  std::vector<int32_t> out;
  for (int64_t t = 0; t < x.rows(); ++t) {
    const float* p = y.ptr<float>() + t * w.rows();
    out.push_back(static_cast<int32_t>(std::max_element(p, p + w.rows()) - p));
  }
  return out;
}

using ArgmaxProjection = CpuBackendThreads;

TEST_P(ArgmaxProjection, RandomTablesPickWhatTheMatmulPicks) {
  for (int64_t K : {64, 576}) {
    for (int64_t N : {45, 1000, 4099}) {
      for (int64_t T : {1, 3, 4, 17, 50}) {
        Tensor w = random_q8(rng_, N, K);
        Tensor x = random_x(rng_, T, K);
        ASSERT_EQ(be_->matmul_argmax(x, w), argmax_of_matmul(*be_, x, w))
            << "K=" << K << " N=" << N << " T=" << T;
      }
    }
  }
}

// Exact ties go to the lower index; rows one quant apart are told apart by the f32 logits.
TEST_P(ArgmaxProjection, TiesAndNearTies) {
  const int64_t K = 576, N = 2000, T = 12;
  Tensor w = random_q8(rng_, N, K);
  const size_t row = static_cast<size_t>(K / 32 * kBlockBytes);
  // Rows 700 and 90 copy row 1500; row 1999 is row 1500 with one quant nudged by one.
  std::memcpy(w.row_ptr(700), w.row_ptr(1500), row);
  std::memcpy(w.row_ptr(90), w.row_ptr(1500), row);
  std::memcpy(w.row_ptr(1999), w.row_ptr(1500), row);
  uint8_t* nudged = w.row_ptr(1999) + 2 + 5;
  *nudged = static_cast<uint8_t>(
      static_cast<int8_t>(*nudged) == 127 ? 126 : static_cast<int8_t>(*nudged) + 1);
  // x points along row 1500's weights (its sign pattern), so those rows lead every row of x.
  std::vector<float> w1500(static_cast<size_t>(K));
  ref::dequantize_row(DType::Q8_0, w.row_ptr(1500), w1500.data(), K);
  Tensor x = random_x(rng_, T, K);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < K; ++i) {
      float& v = x.ptr<float>()[t * K + i];
      v = 0.05f * v + (w1500[static_cast<size_t>(i)] >= 0 ? 1.f : -1.f) * (t % 2 ? 1.f : 0.3f);
    }
  const std::vector<int32_t> got = be_->matmul_argmax(x, w);
  ASSERT_EQ(got, argmax_of_matmul(*be_, x, w));
  for (int32_t o : got) EXPECT_TRUE(o == 90 || o == 1999) << o;  // 90 beats its copies
}

// Every entry equal (every row the same, or x zero): the whole table survives the screen.
TEST_P(ArgmaxProjection, DegenerateRows) {
  const int64_t K = 64, N = 300, T = 5;
  Tensor w = random_q8(rng_, N, K);
  for (int64_t o = 1; o < N; ++o) std::memcpy(w.row_ptr(o), w.row_ptr(0), K / 32 * kBlockBytes);
  Tensor x = random_x(rng_, T, K);
  EXPECT_EQ(be_->matmul_argmax(x, w), std::vector<int32_t>(T, 0));
  Tensor w2 = random_q8(rng_, N, K);
  Tensor zero = Tensor::empty(DType::F32, {T, K});
  std::fill(zero.ptr<float>(), zero.ptr<float>() + T * K, 0.f);
  EXPECT_EQ(be_->matmul_argmax(zero, w2), std::vector<int32_t>(T, 0));
  // Non-finite inputs take the plain path and still agree with it.
  Tensor bad = random_x(rng_, T, K);
  bad.ptr<float>()[3] = NAN;
  bad.ptr<float>()[K + 1] = INFINITY;
  EXPECT_EQ(be_->matmul_argmax(bad, w2), argmax_of_matmul(*be_, bad, w2));
}

// Other weight types compute every logit; the reference agrees up to rounding.
TEST_P(ArgmaxProjection, AgreesWithTheReference) {
  const int64_t K = 576, N = 777, T = 9;
  Tensor w = random_q8(rng_, N, K);
  Tensor x = random_x(rng_, T, K);
  const std::vector<int32_t> got = be_->matmul_argmax(x, w), want = ref::matmul_argmax(x, w);
  Tensor yr = Tensor::empty(DType::F32, {T, N});
  ref::matmul(x, w, yr);
  for (int64_t t = 0; t < T; ++t) {
    const float* p = yr.ptr<float>() + t * N;
    EXPECT_NEAR(p[got[static_cast<size_t>(t)]], p[want[static_cast<size_t>(t)]],
                1e-4f * std::abs(p[want[static_cast<size_t>(t)]]) + 1e-5f);
  }
  Tensor wf = Tensor::empty(DType::F32, {N, K});
  for (int64_t o = 0; o < N; ++o)
    ref::dequantize_row(DType::Q8_0, w.row_ptr(o), wf.ptr<float>() + o * K, K);
  EXPECT_EQ(be_->matmul_argmax(x, wf), argmax_of_matmul(*be_, x, wf));
}

INSTANTIATE_TEST_SUITE_P(Threads, ArgmaxProjection, ::testing::Values(1, 2));

// Two backends in two threads: one keeps projecting onto the same table while the other
// brings new tables in and lets them go. Each backend keeps its own screen tables, and a
// table in use is never freed under its user (the screen's tables were once one
// process-global map, cleared every few tables while another thread could be reading one).
TEST(ArgmaxProjectionTables, TwoBackendsWhileTablesComeAndGo) {
  std::mt19937 rng(99);
  const int64_t K = 576, N = 4099, T = 17;
  const Tensor w = random_q8(rng, N, K);
  const Tensor x = random_x(rng, T, K);
  auto steady = make_backend("cpu", 1), churn = make_backend("cpu", 1);
  const std::vector<int32_t> want = argmax_of_matmul(*steady, x, w);
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0}, steps{0};
  std::thread user([&] {
    while (!stop.load() || steps.load() < 20) {
      if (steady->matmul_argmax(x, w) != want) ++wrong;
      ++steps;
    }
  });
  std::mt19937 rng2(7);
  for (int i = 0; i < 12; ++i) {
    const Tensor wi = random_q8(rng2, N, K);
    const Tensor xi = random_x(rng2, T, K);
    EXPECT_EQ(churn->matmul_argmax(xi, wi), argmax_of_matmul(*churn, xi, wi)) << i;
  }
  stop = true;
  user.join();
  EXPECT_EQ(wrong.load(), 0) << "of " << steps.load();
}

}  // namespace
}  // namespace kvp
