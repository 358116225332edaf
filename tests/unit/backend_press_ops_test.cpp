// The press ops (Backend::row_norms ... top_k) on every backend against the scalar
// references: every row dtype the cache stores (F32, F16, BF16), shapes that are empty, odd
// and large. Bounds: the references sum in double; a backend may sum in f32, so values that
// come from a sum of C terms may differ by about C * 2^-24 of the terms' magnitudes. Where an
// op only moves or compares values (transpose, scatter, top-k, set_cols_to_max) the result
// must be exact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/reference.h"
#include "core/error.h"
#include "core/half.h"
#include "support/backend_ops.h"

namespace kvp {
namespace {

using test::BackendOps;
using PressOpsAll = BackendOps;

const DType kRowTypes[] = {DType::F32, DType::F16, DType::BF16};

struct Shape {
  int64_t rows, cols;
};
// Empty, one element, odd, a head's keys, and a long context's head.
const Shape kShapes[] = {{0, 8}, {1, 1}, {7, 5}, {33, 64}, {3000, 128}};

Tensor random_rows(std::mt19937& rng, DType t, int64_t rows, int64_t cols, float lo = -2.f,
                   float hi = 2.f) {
  Tensor x = Tensor::empty(t, {rows, cols});
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = dist(rng);
    if (t == DType::F32) {
      x.ptr<float>()[i] = v;
    } else {
      const uint16_t h = t == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
      std::memcpy(static_cast<uint8_t*>(x.data()) + 2 * i, &h, 2);
    }
  }
  return x;
}

void expect_near_all(const Tensor& got, const Tensor& want, double rel, double abs,
                     const std::string& what) {
  ASSERT_EQ(got.numel(), want.numel()) << what;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const float g = got.ptr<float>()[i], w = want.ptr<float>()[i];
    if (std::isnan(w)) {
      ASSERT_TRUE(std::isnan(g)) << what << " at " << i;
      continue;
    }
    if (std::isinf(w)) {
      ASSERT_EQ(g, w) << what << " at " << i;
      continue;
    }
    ASSERT_NEAR(g, w, rel * std::fabs(w) + abs) << what << " at " << i;
  }
}

void expect_equal_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.nbytes(), want.nbytes()) << what;
  if (got.nbytes() > 0) {
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.nbytes())) << what;
  }
}

std::string label(DType t, const Shape& s) {
  return dtype_name(t) + " [" + std::to_string(s.rows) + ", " + std::to_string(s.cols) + "]";
}

TEST_P(PressOpsAll, RowNorms) {
  for (DType t : kRowTypes)
    for (const Shape& s : kShapes)
      for (Norm norm : {Norm::L1, Norm::L2}) {
        const Tensor x = random_rows(rng_, t, s.rows, s.cols);
        Tensor out = dev_zeros(DType::F32, {s.rows}), want = Tensor::empty(DType::F32, {s.rows});
        be_->row_norms(dev(x), norm, out);
        ref::row_norms(x, norm, want);
        expect_near_all(host(out), want, 1e-6 * static_cast<double>(s.cols), 1e-6, label(t, s));
      }
}

TEST_P(PressOpsAll, CosineSimilarityAndNormalize) {
  for (DType t : kRowTypes)
    for (const Shape& s : kShapes) {
      const Tensor x = random_rows(rng_, t, s.rows, s.cols);
      const Tensor a = random_rows(rng_, DType::F32, 1, s.cols);
      Tensor cos = dev_zeros(DType::F32, {s.rows}), cos_want = Tensor::empty(DType::F32, {s.rows});
      be_->cosine_similarity(dev(x), dev(a), 1e-8f, cos);
      ref::cosine_similarity(x, a, 1e-8f, cos_want);
      expect_near_all(host(cos), cos_want, 1e-6 * static_cast<double>(s.cols), 1e-6, label(t, s));
      Tensor nx = dev_zeros(DType::F32, {s.rows, s.cols});
      Tensor nx_want = Tensor::empty(DType::F32, {s.rows, s.cols});
      be_->normalize_rows(dev(x), 1e-12f, nx);
      ref::normalize_rows(x, 1e-12f, nx_want);
      expect_near_all(host(nx), nx_want, 1e-6, 1e-7, label(t, s));
    }
  // A zero row: the norm's clamp keeps it finite (torch's eps).
  const Tensor zero = Tensor::empty(DType::F32, {1, 4});
  Tensor nz = dev_zeros(DType::F32, {1, 4});
  be_->normalize_rows(dev(zero), 1e-12f, nz);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(host(nz).ptr<float>()[i], 0.f);
}

TEST_P(PressOpsAll, ReduceBothAxes) {
  for (const Shape& s : kShapes)
    for (Reduce op : {Reduce::Sum, Reduce::Mean, Reduce::Max})
      for (int axis : {0, 1}) {
        const Tensor x = random_rows(rng_, DType::F32, s.rows, s.cols);
        const int64_t n = axis == 0 ? s.cols : s.rows;
        Tensor out = dev_zeros(DType::F32, {n}), want = Tensor::empty(DType::F32, {n});
        be_->reduce(dev(x), axis, op, out);
        ref::reduce(x, axis, op, want);
        const int64_t terms = axis == 0 ? s.rows : s.cols;
        expect_near_all(host(out), want, 1e-6, 1e-6 * static_cast<double>(terms),
                        label(DType::F32, s) + " axis " + std::to_string(axis));
      }
  const Tensor x = random_rows(rng_, DType::F32, 2, 3);
  Tensor wrong = dev_zeros(DType::F32, {2});
  EXPECT_THROW(be_->reduce(dev(x), 0, Reduce::Sum, wrong), Error);
  EXPECT_THROW(be_->reduce(dev(x), 2, Reduce::Sum, wrong), Error);
}

TEST_P(PressOpsAll, ElementwiseAffineMulDiv) {
  for (const Shape& s : kShapes) {
    const Tensor x = random_rows(rng_, DType::F32, s.rows, s.cols);
    const Tensor full = random_rows(rng_, DType::F32, s.rows, s.cols, 0.5f, 2.f);
    const Tensor row = random_rows(rng_, DType::F32, 1, s.cols, 0.5f, 2.f);
    const Tensor one = random_rows(rng_, DType::F32, 1, 1, 0.5f, 2.f);
    for (const Tensor* by : {&full, &row, &one}) {
      Tensor y = dev(x), want = host(dev(x));
      be_->affine(y, -1.5f, 0.25f);
      ref::affine(want, -1.5f, 0.25f);
      be_->mul(y, dev(*by));
      ref::mul(want, *by);
      be_->div(y, dev(*by));
      ref::div(want, *by);
      expect_near_all(host(y), want, 2e-7, 0, label(DType::F32, s));
    }
  }
  Tensor y = dev(random_rows(rng_, DType::F32, 3, 4));
  EXPECT_THROW(be_->mul(y, dev(random_rows(rng_, DType::F32, 1, 3))), Error);
}

TEST_P(PressOpsAll, SoftmaxRows) {
  for (const Shape& s : kShapes) {
    const Tensor x = random_rows(rng_, DType::F32, s.rows, s.cols, -30.f, 30.f);
    Tensor y = dev(x), want = host(dev(x));
    be_->softmax_rows(y);
    ref::softmax_rows(want);
    expect_near_all(host(y), want, 1e-5, 1e-9, label(DType::F32, s));
  }
}

TEST_P(PressOpsAll, TransposeIsExact) {
  for (const Shape& s : kShapes) {
    const Tensor x = random_rows(rng_, DType::F32, s.rows, s.cols);
    Tensor out = dev_zeros(DType::F32, {s.cols, s.rows});
    Tensor want = Tensor::empty(DType::F32, {s.cols, s.rows});
    be_->transpose(dev(x), out);
    ref::transpose(x, want);
    expect_equal_bits(host(out), want, label(DType::F32, s));
  }
}

TEST_P(PressOpsAll, AvgPool) {
  for (const Shape& s : kShapes)
    for (int64_t kernel : {1, 5, 7})
      for (int64_t cols : {int64_t{0}, s.cols / 2, s.cols}) {
        const Tensor x = random_rows(rng_, DType::F32, s.rows, s.cols, 0.f, 1.f);
        Tensor out = dev(x), want = host(dev(x));
        be_->avg_pool(out, cols, kernel, 0.125, out);  // in place, as snapkv runs it
        ref::avg_pool(want, cols, kernel, 0.125, want);
        expect_near_all(host(out), want, 1e-6, 0, label(DType::F32, s));
      }
  Tensor x = dev_zeros(DType::F32, {2, 5});
  EXPECT_THROW(be_->avg_pool(x, 5, 4, 1.0, x), Error);  // even kernel
  EXPECT_THROW(be_->avg_pool(x, 6, 3, 1.0, x), Error);  // past the columns
}

TEST_P(PressOpsAll, SetColsToMaxAndScatterAreExact) {
  for (const Shape& s : kShapes) {
    const Tensor x = random_rows(rng_, DType::F32, s.rows, s.cols);
    for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 0}, {0, s.cols / 3}, {s.cols / 2, s.cols}}) {
      Tensor y = dev(x), want = host(dev(x));
      be_->set_cols_to_max(y, b, e, 1.f);
      ref::set_cols_to_max(want, b, e, 1.f);
      expect_equal_bits(host(y), want, label(DType::F32, s));
    }
    const int64_t k = std::min<int64_t>(s.cols, 3);
    Tensor idx = Tensor::empty(DType::I32, {s.rows, k});
    for (int64_t i = 0; i < idx.numel(); ++i)
      idx.ptr<int32_t>()[i] = static_cast<int32_t>((i * 7) % s.cols);
    Tensor y = dev(x), want = host(dev(x));
    be_->scatter_value(y, dev(idx), INFINITY);
    ref::scatter_value(want, idx, INFINITY);
    expect_equal_bits(host(y), want, label(DType::F32, s));
  }
  Tensor y = dev_zeros(DType::F32, {2, 4});
  Tensor bad = Tensor::empty(DType::I32, {2, 1});
  bad.ptr<int32_t>()[0] = 4;
  EXPECT_THROW(be_->scatter_value(y, dev(bad), 1.f), Error);
  EXPECT_THROW(be_->set_cols_to_max(y, 3, 5, 1.f), Error);
}

TEST_P(PressOpsAll, TopKIsExactWithTiesAndNaN) {
  for (const Shape& s : kShapes)
    for (int variant = 0; variant < 3; ++variant) {
      Tensor x = random_rows(rng_, DType::F32, s.rows, s.cols);
      for (int64_t i = 0; i < x.numel(); ++i) {
        float& v = x.ptr<float>()[i];
        if (variant == 1) v = std::round(v);                // many ties
        if (variant == 2 && i % 5 == 0) v = std::nanf("");  // NaN ranks last
        if (variant == 2 && i % 7 == 0) v = -0.f;           // ties with +0
      }
      for (int64_t k : {int64_t{0}, int64_t{1}, s.cols / 2, s.cols}) {
        Tensor idx = dev_zeros(DType::I32, {s.rows, k});
        Tensor want = Tensor::empty(DType::I32, {s.rows, k});
        be_->top_k(dev(x), k, idx);
        ref::top_k(x, k, want);
        expect_equal_bits(host(idx), want, label(DType::F32, s) + " k " + std::to_string(k));
      }
    }
  Tensor idx = dev_zeros(DType::I32, {1, 4});
  EXPECT_THROW(be_->top_k(dev(random_rows(rng_, DType::F32, 1, 3)), 4, idx), Error);
}

// Rows of at least 16384 scores (a 32k context's heads), which the GPU sorts all at once as
// (row, score) keys rather than row by row: ties, NaN and -0 as above, rows in any order.
TEST_P(PressOpsAll, TopKWideRows) {
  for (const Shape& s : {Shape{3, 20000}, Shape{1, 40000}})
    for (int variant = 0; variant < 3; ++variant) {
      Tensor x = random_rows(rng_, DType::F32, s.rows, s.cols);
      for (int64_t i = 0; i < x.numel(); ++i) {
        float& v = x.ptr<float>()[i];
        if (variant == 1) v = std::round(v);
        if (variant == 2 && i % 5 == 0) v = std::nanf("");
        if (variant == 2 && i % 7 == 0) v = -0.f;
      }
      for (int64_t k : {int64_t{1}, s.cols / 2, s.cols}) {
        Tensor idx = dev_zeros(DType::I32, {s.rows, k});
        Tensor want = Tensor::empty(DType::I32, {s.rows, k});
        be_->top_k(dev(x), k, idx);
        ref::top_k(x, k, want);
        expect_equal_bits(host(idx), want, label(DType::F32, s) + " k " + std::to_string(k));
      }
    }
}

KVP_INSTANTIATE_BACKEND_OPS(PressOpsAll);

}  // namespace
}  // namespace kvp
