// attention_column_sums on every backend (test::BackendOps) and every cache row type against
// the scalar reference: attention_column_sums on GQA segments of different lengths, queries that
// are the whole segment (ObservedAttention), a window (SnapKV) or one row (TOVA).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/reference.h"
#include "core/error.h"
#include "core/tensor.h"
#include "support/backend_ops.h"

namespace kvp {
namespace {

Tensor random_f32(std::mt19937& rng, std::initializer_list<int64_t> shape, float lo, float hi) {
  Tensor t = Tensor::empty(DType::F32, shape);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = dist(rng);
  return t;
}

using PressOps = test::BackendOps;

TEST_P(PressOps, AttentionColumnSums) {
  struct Case {
    int D, Hkv, Hq;
    int64_t T, len;
  };
  for (const Case& c : {Case{64, 3, 9, 1, 50}, Case{64, 3, 9, 16, 300}, Case{64, 3, 9, 200, 200},
                        Case{24, 2, 6, 5, 40}, Case{64, 4, 4, 64, 700}, Case{128, 1, 8, 3, 3}}) {
    std::vector<int64_t> len, offset;
    int64_t total = 0, longest = 0;
    for (int s = 0; s < c.Hkv; ++s) {
      offset.push_back(total);
      len.push_back(c.len + 7 * s);
      longest = std::max(longest, len.back());
      total += len.back() + 5;  // spare capacity between segments
    }
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {  // the cache's row types
      const Tensor k = test::as_dtype(random_f32(rng_, {total, c.D}, -2.f, 2.f), t);
      Tensor q = random_f32(rng_, {c.T, c.Hq, c.D}, -2.f, 2.f);
      KvSegments kv{k, Tensor(), offset.data(), len.data(), c.Hkv, c.D};
      KvSegments kvd{dev(k), Tensor(), offset.data(), len.data(), c.Hkv, c.D};
      const int64_t L = longest + 3;
      Tensor out = Tensor::empty(DType::F32, {c.Hkv, L}),
             outr = Tensor::empty(DType::F32, {c.Hkv, L});
      for (int64_t i = 0; i < out.numel(); ++i) out.ptr<float>()[i] = 99.f;  // must be overwritten
      const float scale = 1.f / std::sqrt(static_cast<float>(c.D));
      Tensor outd = dev(out);
      be_->attention_column_sums(dev(q), kvd, scale, outd);
      out = host(outd);
      ref::attention_column_sums(q, kv, scale, outr);
      const int64_t G = c.Hq / c.Hkv;
      for (int s = 0; s < c.Hkv; ++s) {
        double total_mass = 0;
        for (int64_t j = 0; j < L; ++j) {
          const float got = out.ptr<float>()[s * L + j], want = outr.ptr<float>()[s * L + j];
          ASSERT_NEAR(got, want, 1e-5f * (1.f + std::fabs(want)))
              << "D=" << c.D << " Hq=" << c.Hq << " T=" << c.T << " segment " << s << " row " << j;
          if (j >= len[static_cast<size_t>(s)]) {
            ASSERT_EQ(got, 0.f);
          }
          total_mass += got;
        }
        // Every (query, head) row of probabilities sums to 1.
        EXPECT_NEAR(total_mass, static_cast<double>(c.T * G), 1e-3 * static_cast<double>(c.T * G));
      }
    }
  }
}

TEST_P(PressOps, AttentionColumnSumsCausality) {
  // One segment, T = len: the last key is seen only by the last query, so its column sum is
  // that query's probability of it; the first query sees only key 0 (probability 1).
  const int D = 16;
  const int64_t T = 9;
  std::vector<int64_t> len = {T}, offset = {0};
  Tensor k = random_f32(rng_, {T, D}, -1.f, 1.f);
  Tensor q = Tensor::empty(DType::F32, {T, 1, D});  // zero queries: uniform over visible keys
  KvSegments kv{dev(k), Tensor(), offset.data(), len.data(), 1, D};
  Tensor out = dev_zeros(DType::F32, {1, T});
  be_->attention_column_sums(dev(q), kv, 0.25f, out);
  out = host(out);
  for (int64_t j = 0; j < T; ++j) {
    double want = 0;
    for (int64_t t = j; t < T; ++t) want += 1.0 / static_cast<double>(t + 1);
    EXPECT_NEAR(out.ptr<float>()[j], want, 1e-5) << j;
  }
}

TEST_P(PressOps, AttentionColumnSumsErrors) {
  const int D = 8;
  std::vector<int64_t> len = {4}, offset = {0};
  Tensor k = random_f32(rng_, {4, D}, -1.f, 1.f);
  KvSegments kv{dev(k), Tensor(), offset.data(), len.data(), 1, D};
  Tensor q = dev(random_f32(rng_, {5, 1, D}, -1.f, 1.f));  // more queries than rows
  Tensor out = dev_zeros(DType::F32, {1, 4});
  EXPECT_THROW(be_->attention_column_sums(q, kv, 1.f, out), Error);
  Tensor q2 = dev(random_f32(rng_, {2, 1, D}, -1.f, 1.f));
  Tensor small = dev_zeros(DType::F32, {1, 3});  // shorter than the segment
  EXPECT_THROW(be_->attention_column_sums(q2, kv, 1.f, small), Error);
}

KVP_INSTANTIATE_BACKEND_OPS(PressOps);

}  // namespace
}  // namespace kvp
