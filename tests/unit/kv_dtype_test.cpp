// Half-precision KV caches (--kv-dtype f16 / bf16): the cache stores rows rounded to the type
// and counts their real bytes; attention and the press ops read them in F32 and match the
// scalar references on the same rounded rows, on 1 and 2 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/reference.h"
#include "cache/kv_cache.h"
#include "core/error.h"
#include "core/half.h"
#include "support/backend_threads.h"
#include "support/host_tensors.h"

namespace kvp {
namespace {

float rounded(DType t, float x) {
  return t == DType::F16    ? f16_to_f32(f32_to_f16(x))
         : t == DType::BF16 ? bf16_to_f32(f32_to_bf16(x))
                            : x;
}

std::vector<float> random_values(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> x(n);
  for (float& f : x) f = dist(rng);
  return x;
}

// Rows of `dtype` made from F32 values through the backend's conversion.
Tensor rows_of(Backend& be, DType dtype, const std::vector<float>& x, int64_t rows, int64_t cols) {
  const Tensor src = Tensor::view(DType::F32, {rows, cols}, const_cast<float*>(x.data()));
  Tensor out = be.alloc(dtype, {rows, cols});
  std::vector<int64_t> idx(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) idx[static_cast<size_t>(i)] = i;
  be.copy_rows(src, idx.data(), out, idx.data(), rows);
  return out;
}

class KvDtype : public ::testing::TestWithParam<std::tuple<DType, int>> {
 protected:
  void SetUp() override { be_ = make_backend("cpu", std::get<1>(GetParam())); }
  DType dtype() const { return std::get<0>(GetParam()); }
  std::unique_ptr<Backend> be_;
  std::mt19937 rng_{77};
};

TEST_P(KvDtype, CacheStoresRoundedRowsAndCountsTheirBytes) {
  const int H = 3, D = 16;
  const int64_t T = 10;
  KVCache cache(*be_, 2, H, D, T + 4, dtype());
  const std::vector<float> k = random_values(rng_, T * H * D, -3.f, 3.f),
                           v = random_values(rng_, T * H * D, -3.f, 3.f);
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(t);
  cache.append(0, test::heads_view(k, T, H, D), test::heads_view(v, T, H, D), pos.data());
  const size_t elem = dtype() == DType::F32 ? 4 : 2;
  EXPECT_EQ(cache.bytes_for_rows(T), 2u * T * 2 * H * D * elem);
  EXPECT_EQ(cache.used_bytes(), 2u * T * H * D * elem);
  EXPECT_EQ(cache.allocated_bytes(), 2u * (T + 4) * H * D * elem);
  for (int h = 0; h < H; ++h) {
    const Tensor keys = cache.rows_f32(0, h, KVCache::Part::K, 2, 5);
    const Tensor values = cache.rows_f32(0, h, KVCache::Part::V, 0, T);
    ASSERT_EQ(keys.dim(0), 5);
    for (int64_t j = 0; j < 5; ++j)
      for (int d = 0; d < D; ++d)
        ASSERT_EQ(keys.ptr<float>()[j * D + d],
                  rounded(dtype(), k[static_cast<size_t>(((j + 2) * H + h) * D + d)]));
    for (int64_t j = 0; j < T; ++j)
      ASSERT_EQ(values.ptr<float>()[j * D],
                rounded(dtype(), v[static_cast<size_t>((j * H + h) * D)]));
  }
  // write_rows stores F32 rows back, rounded.
  std::vector<float> row(D, 1.0009765625f);  // 1 + 2^-10: exact in F16, rounds in BF16
  cache.write_rows(0, 1, KVCache::Part::K, 3, Tensor::view(DType::F32, {1, D}, row.data()));
  EXPECT_EQ(cache.rows_f32(0, 1, KVCache::Part::K, 3, 1).ptr<float>()[0], rounded(dtype(), row[0]));
  EXPECT_THROW(cache.rows_f32(0, 0, KVCache::Part::K, 8, 3), Error);  // past the length
  // Compaction keeps the type and the rows.
  cache.compact(0, KeepPlan{{9, 0}, {1}, {2, 3, 4}}, 1);
  EXPECT_EQ(cache.used_bytes(), 6u * 2 * D * elem);
  EXPECT_EQ(cache.rows_f32(0, 0, KVCache::Part::V, 0, 1).ptr<float>()[0],
            rounded(dtype(), v[static_cast<size_t>((9 * H + 0) * D)]));
}

TEST_P(KvDtype, AttentionMatchesTheReferenceOnTheSameRows) {
  const int D = 64, Hkv = 3, Hq = 9;
  for (int64_t T : {int64_t{1}, int64_t{5}, int64_t{70}}) {
    std::vector<int64_t> len, offset;
    int64_t total = 0;
    for (int s = 0; s < Hkv; ++s) {
      offset.push_back(total);
      len.push_back(T + 300 + 13 * s);
      total += len.back() + 3;
    }
    const Tensor k = rows_of(
        *be_, dtype(), random_values(rng_, static_cast<size_t>(total * D), -2.f, 2.f), total, D);
    const Tensor v = rows_of(
        *be_, dtype(), random_values(rng_, static_cast<size_t>(total * D), -1.f, 1.f), total, D);
    Tensor q = Tensor::empty(DType::F32, {T, Hq, D});
    const std::vector<float> qv = random_values(rng_, static_cast<size_t>(q.numel()), -2.f, 2.f);
    std::copy(qv.begin(), qv.end(), q.ptr<float>());
    KvSegments kv{k, v, offset.data(), len.data(), Hkv, D};
    Tensor out = Tensor::empty(DType::F32, {T, Hq, D}),
           want = Tensor::empty(DType::F32, {T, Hq, D});
    be_->attention(q, kv, 0.125f, out);
    ref::attention(q, kv, 0.125f, want);
    for (int64_t i = 0; i < out.numel(); ++i)
      ASSERT_NEAR(out.ptr<float>()[i], want.ptr<float>()[i], 2e-5f) << "T=" << T << " at " << i;

    const int64_t L = len.back();
    Tensor sums = Tensor::empty(DType::F32, {Hkv, L}),
           sums_ref = Tensor::empty(DType::F32, {Hkv, L});
    be_->attention_column_sums(q, kv, 0.125f, sums);
    ref::attention_column_sums(q, kv, 0.125f, sums_ref);
    for (int64_t i = 0; i < sums.numel(); ++i)
      ASSERT_NEAR(sums.ptr<float>()[i], sums_ref.ptr<float>()[i],
                  1e-5f * (1.f + std::fabs(sums_ref.ptr<float>()[i])))
          << "T=" << T << " at " << i;
  }
}

TEST(KvDtypeCache, OnlyFloatTypesStoreRows) {
  EXPECT_THROW(KVCache(test::cpu_backend(), 1, 1, 32, 4, DType::Q8_0), Error);
  EXPECT_THROW(KVCache(test::cpu_backend(), 1, 1, 32, 4, DType::I32), Error);
}

INSTANTIATE_TEST_SUITE_P(Types, KvDtype,
                         ::testing::Combine(::testing::Values(DType::F32, DType::F16, DType::BF16),
                                            ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return dtype_name(std::get<0>(info.param)) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "threads";
                         });

}  // namespace
}  // namespace kvp
