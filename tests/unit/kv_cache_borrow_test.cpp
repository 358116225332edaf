// A cache that borrows its kept rows from a full cache (KVCache::borrow_kept) must attend
// exactly like one that copied them (KVCache::copy_kept): same rows, same order, so the CPU
// kernels give bit-identical outputs, and the scalar reference agrees with both.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/reference.h"
#include "backend/factory.h"
#include "cache/kv_cache.h"
#include "core/error.h"
#include "support/host_tensors.h"

namespace kvp {

namespace {

constexpr int kKvHeads = 3, kQueryHeads = 9, kHeadDim = 64;

std::vector<float> random_rows(std::mt19937& rng, int64_t T) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(T * kKvHeads * kHeadDim));
  for (float& f : x) f = dist(rng);
  return x;
}

void append_random(KVCache& a, KVCache* b, int layer, std::mt19937& rng, int64_t first, int64_t T) {
  const std::vector<float> k = random_rows(rng, T), v = random_rows(rng, T);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(first + t);
  const Tensor kt = test::heads_view(k, T, kKvHeads, kHeadDim),
               vt = test::heads_view(v, T, kKvHeads, kHeadDim);
  a.append(layer, kt, vt, pos.data());
  if (b) b->append(layer, kt, vt, pos.data());
}

// Per segment: a random subset of [0, T) in a random order, of a different size per head.
KeepPlan random_plan(std::mt19937& rng, int64_t T) {
  KeepPlan keep(kKvHeads);
  for (int s = 0; s < kKvHeads; ++s) {
    std::vector<int32_t> all(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i) all[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(static_cast<size_t>(T / (s + 2) + 17 * s));
    keep[static_cast<size_t>(s)] = all;
  }
  return keep;
}

Tensor random_queries(std::mt19937& rng, int64_t T) {
  std::normal_distribution<float> dist(0.f, 1.f);
  Tensor q = Tensor::empty(DType::F32, {T, kQueryHeads, kHeadDim});
  for (int64_t i = 0; i < q.numel(); ++i) q.ptr<float>()[i] = dist(rng);
  return q;
}

}  // namespace

TEST(KVCacheBorrow, AttendsExactlyLikeACopy) {
  std::mt19937 rng(7);
  const int64_t T = 300;
  KVCache full(test::cpu_backend(), 1, kKvHeads, kHeadDim, T + 80);
  append_random(full, nullptr, 0, rng, 0, T);
  const KeepPlan keep = random_plan(rng, T);
  KVCache copied(test::cpu_backend(), 1, kKvHeads, kHeadDim, 0),
      borrowed(test::cpu_backend(), 1, kKvHeads, kHeadDim, 0);
  copied.copy_kept(0, full, keep, 80);
  borrowed.borrow_kept(0, full, keep, 80);
  EXPECT_EQ(borrowed.lengths(), copied.lengths());
  EXPECT_TRUE(borrowed.view(0).has_prefix());
  EXPECT_FALSE(copied.view(0).has_prefix());
  EXPECT_EQ(borrowed.used_bytes(), 0u);  // the kept rows are the lender's bytes

  auto backend = make_backend("cpu", 2);
  // A question prefill (37 rows, several key blocks and a causal mask across the prefix
  // boundary), then single decode steps.
  for (const int64_t n : {int64_t{37}, int64_t{1}, int64_t{1}, int64_t{5}}) {
    append_random(copied, &borrowed, 0, rng, T, n);
    const Tensor q = random_queries(rng, n);
    Tensor out_copy = Tensor::empty(DType::F32, {n, kQueryHeads, kHeadDim});
    Tensor out_borrow = Tensor::empty(DType::F32, {n, kQueryHeads, kHeadDim});
    Tensor out_ref = Tensor::empty(DType::F32, {n, kQueryHeads, kHeadDim});
    backend->attention(q, copied.view(0), 0.125f, out_copy);
    backend->attention(q, borrowed.view(0), 0.125f, out_borrow);
    ref::attention(q, borrowed.view(0), 0.125f, out_ref);
    ASSERT_EQ(std::memcmp(out_copy.data(), out_borrow.data(), out_copy.nbytes()), 0) << "n = " << n;
    for (int64_t i = 0; i < out_ref.numel(); ++i)
      ASSERT_NEAR(out_borrow.ptr<float>()[i], out_ref.ptr<float>()[i], 1e-4f)
          << "n = " << n << ", i = " << i;
  }
  EXPECT_EQ(borrowed.lengths(), copied.lengths());
  // Several borrowed caches in one batched launch, as a decode step of the eval grid runs.
  KVCache other(test::cpu_backend(), 1, kKvHeads, kHeadDim, 0);
  other.borrow_kept(0, full, random_plan(rng, T), 4);
  append_random(other, nullptr, 0, rng, T, 1);
  const Tensor q1 = random_queries(rng, 1), q2 = random_queries(rng, 1);
  const auto one_row = [] { return Tensor::empty(DType::F32, {1, kQueryHeads, kHeadDim}); };
  Tensor o1 = one_row(), o2 = one_row(), r1 = one_row(), r2 = one_row();
  backend->attention_batch({{&q1, borrowed.view(0), &o1}, {&q2, other.view(0), &o2}}, 0.125f);
  ref::attention(q1, borrowed.view(0), 0.125f, r1);
  ref::attention(q2, other.view(0), 0.125f, r2);
  for (int64_t i = 0; i < r1.numel(); ++i) {
    ASSERT_NEAR(o1.ptr<float>()[i], r1.ptr<float>()[i], 1e-4f);
    ASSERT_NEAR(o2.ptr<float>()[i], r2.ptr<float>()[i], 1e-4f);
  }
}

TEST(KVCacheBorrow, TruncateKeepsThePrefixAndDecodingAllocatesNothing) {
  std::mt19937 rng(3);
  KVCache full(test::cpu_backend(), 2, kKvHeads, kHeadDim, 64);
  append_random(full, nullptr, 0, rng, 0, 64);
  append_random(full, nullptr, 1, rng, 0, 64);
  KVCache cell(test::cpu_backend(), 2, kKvHeads, kHeadDim, 0);
  cell.borrow_kept(0, full, random_plan(rng, 64), 8);
  cell.borrow_kept(1, full, random_plan(rng, 64), 8);
  const auto lengths = cell.lengths();
  const uint64_t allocations = KVCache::allocation_count();
  for (int step = 0; step < 8; ++step) {
    append_random(cell, nullptr, 0, rng, 64 + step, 1);
    append_random(cell, nullptr, 1, rng, 64 + step, 1);
  }
  EXPECT_EQ(KVCache::allocation_count(), allocations);
  EXPECT_EQ(cell.used_bytes(), 2u * 2 * 8 * kKvHeads * kHeadDim * sizeof(float));
  cell.truncate(lengths);
  EXPECT_EQ(cell.lengths(), lengths);
  EXPECT_EQ(cell.used_bytes(), 0u);
}

TEST(KVCacheBorrow, RejectsWhatItCannotDo) {
  std::mt19937 rng(5);
  KVCache full(test::cpu_backend(), 2, kKvHeads, kHeadDim, 32),
      other_full(test::cpu_backend(), 2, kKvHeads, kHeadDim, 32);
  append_random(full, nullptr, 0, rng, 0, 32);
  append_random(other_full, nullptr, 1, rng, 0, 32);
  KVCache cell(test::cpu_backend(), 2, kKvHeads, kHeadDim, 0);
  const KeepPlan keep = {{0, 5}, {3}, {31, 30, 2}};
  cell.borrow_kept(0, full, keep, 2);
  EXPECT_THROW(cell.borrow_kept(0, full, keep, 2), Error);                // layer not empty
  EXPECT_THROW(cell.borrow_kept(1, other_full, keep, 2), Error);          // a second lender
  EXPECT_THROW(cell.borrow_kept(1, full, {{0}, {0}, {32}}, 2), Error);    // row out of range
  EXPECT_THROW(cell.borrow_kept(1, full, {{0, 0}, {0}, {1}}, 2), Error);  // repeated row
  EXPECT_THROW(cell.borrow_kept(1, cell, keep, 2), Error);                // itself
  EXPECT_THROW(cell.compact(0, {{0}, {0}, {0}}, 2), Error);
  EXPECT_THROW(cell.positions(0, 0), Error);
  KVCache copy(test::cpu_backend(), 2, kKvHeads, kHeadDim, 0),
      second(test::cpu_backend(), 2, kKvHeads, kHeadDim, 0);
  EXPECT_THROW(copy.copy_kept(0, cell, keep, 2), Error);  // a borrower does not lend
  EXPECT_THROW(second.borrow_kept(0, cell, keep, 2), Error);
  auto lengths = cell.lengths();
  lengths[0][2] = 2;  // into the prefix of segment 2 (3 rows)
  EXPECT_THROW(cell.truncate(lengths), Error);
  append_random(cell, nullptr, 0, rng, 32, 2);  // fills the reserve
  EXPECT_THROW(append_random(cell, nullptr, 0, rng, 34, 1), Error);
  Tensor q = Tensor::empty(DType::F32, {1, kQueryHeads, kHeadDim});
  Tensor sums = Tensor::empty(DType::F32, {kKvHeads, 8});
  auto backend = make_backend("cpu", 1);
  EXPECT_THROW(backend->attention_column_sums(q, cell.view(0), 0.125f, sums), Error);
  EXPECT_THROW(ref::attention_column_sums(q, cell.view(0), 0.125f, sums), Error);
}

}  // namespace kvp
