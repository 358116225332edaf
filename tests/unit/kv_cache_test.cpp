#include "cache/kv_cache.h"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "support/host_tensors.h"

namespace kvp {

namespace {

// Row value that encodes (token, head, channel, k-or-v) so every copy can be checked.
float value(int64_t t, int h, int d, bool is_v) {
  return static_cast<float>(t * 1000 + h * 100 + d) + (is_v ? 0.5f : 0.f);
}

void append_tokens(KVCache& cache, int layer, int64_t first, int64_t T) {
  const int H = cache.n_segments(), D = cache.head_dim();
  std::vector<float> k(static_cast<size_t>(T * H * D)), v(k.size());
  for (int64_t t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d) {
        k[static_cast<size_t>((t * H + h) * D + d)] = value(first + t, h, d, false);
        v[static_cast<size_t>((t * H + h) * D + d)] = value(first + t, h, d, true);
      }
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(first + t);
  cache.append(layer, test::heads_view(k, T, H, D), test::heads_view(v, T, H, D), pos.data());
}

float k_at(const KVCache& cache, int layer, int seg, int64_t row, int d) {
  const KvSegments s = cache.view(layer);
  return s.k.ptr<float>()[(s.offset[seg] + row) * s.head_dim + d];
}

}  // namespace

TEST(KVCache, AppendLaysOutSegmentsPerHead) {
  KVCache cache(test::cpu_backend(), 2, 3, 4, 8);
  EXPECT_EQ(cache.allocated_bytes(), 0u);  // layers are allocated when first written
  append_tokens(cache, 0, 0, 5);
  append_tokens(cache, 1, 0, 5);
  for (int h = 0; h < 3; ++h) {
    EXPECT_EQ(cache.length(0, h), 5);
    EXPECT_EQ(cache.length(1, h), 5);
    for (int64_t t = 0; t < 5; ++t) EXPECT_EQ(k_at(cache, 0, h, t, 2), value(t, h, 2, false));
  }
  EXPECT_EQ(cache.allocated_bytes(), 2u * 2 * 3 * 8 * 4 * sizeof(float));
  EXPECT_EQ(cache.bytes_for_rows(8), cache.allocated_bytes());
}

TEST(KVCache, GrowsByDoublingAndKeepsRows) {
  KVCache cache(test::cpu_backend(), 1, 2, 4, 2);
  for (int64_t t = 0; t < 40; ++t) append_tokens(cache, 0, t, 1);
  for (int h = 0; h < 2; ++h)
    for (int64_t t = 0; t < 40; ++t) ASSERT_EQ(k_at(cache, 0, h, t, 3), value(t, h, 3, false));
}

TEST(KVCache, CompactKeepsRowsPerHeadAndFreesMemory) {
  KVCache cache(test::cpu_backend(), 1, 3, 4, 100);
  append_tokens(cache, 0, 0, 100);
  const size_t before = cache.allocated_bytes();
  std::vector<std::vector<int32_t>> keep = {{0, 5, 99}, {1, 2, 3, 4, 50, 60, 70}, {7}};
  cache.compact(0, keep, 10);
  EXPECT_EQ(cache.length(0, 0), 3);
  EXPECT_EQ(cache.length(0, 1), 7);
  EXPECT_EQ(cache.length(0, 2), 1);
  for (int h = 0; h < 3; ++h)
    for (size_t i = 0; i < keep[h].size(); ++i) {
      EXPECT_EQ(k_at(cache, 0, h, static_cast<int64_t>(i), 1), value(keep[h][i], h, 1, false));
      EXPECT_EQ(cache.positions(0, h)[i], keep[h][i]);
    }
  EXPECT_EQ(cache.allocated_bytes(), 2u * (3 + 7 + 1 + 3 * 10) * 4 * sizeof(float));
  EXPECT_LT(cache.allocated_bytes(), before / 2);
}

// The eval grid's path: a compressed layer built straight from another cache's full layer
// equals the same rows compacted in place, and leaves the source untouched.
TEST(KVCache, CopyKeptEqualsCompactOfACopy) {
  KVCache full(test::cpu_backend(), 2, 3, 4, 20), copied(test::cpu_backend(), 2, 3, 4, 20),
      compacted(test::cpu_backend(), 2, 3, 4, 20);
  append_tokens(full, 1, 0, 20);
  append_tokens(compacted, 1, 0, 20);
  const KeepPlan keep = {{19, 3, 7}, {0}, {5, 6, 7, 8, 1}};
  copied.copy_kept(1, full, keep, 4);
  compacted.compact(1, keep, 4);
  EXPECT_EQ(copied.lengths(), compacted.lengths());
  EXPECT_EQ(copied.allocated_bytes(), compacted.allocated_bytes());
  for (int h = 0; h < 3; ++h) {
    for (size_t i = 0; i < keep[h].size(); ++i) {
      EXPECT_EQ(k_at(copied, 1, h, static_cast<int64_t>(i), 1), value(keep[h][i], h, 1, false));
      EXPECT_EQ(copied.positions(1, h)[i], keep[h][i]);
    }
    EXPECT_EQ(full.length(1, h), 20);
  }
  EXPECT_THROW(copied.copy_kept(1, full, keep, 4), Error);              // layer not empty
  EXPECT_THROW(copied.copy_kept(0, full, {{0}, {0}, {20}}, 0), Error);  // row out of range
  KVCache other_shape(test::cpu_backend(), 2, 2, 4, 20);
  EXPECT_THROW(other_shape.copy_kept(0, full, {{0}, {0}}, 0), Error);
}

TEST(KVCache, AppendWithinReserveAllocatesNothing) {
  KVCache cache(test::cpu_backend(), 2, 3, 4, 16);
  append_tokens(cache, 0, 0, 16);
  append_tokens(cache, 1, 0, 16);
  cache.compact(0, {{0, 1}, {2}, {3, 4, 5}}, 8);
  cache.compact(1, {{0}, {1}, {2}}, 8);
  const auto lens = cache.lengths();
  const uint64_t allocations = KVCache::allocation_count();
  for (int step = 0; step < 8; ++step) {
    append_tokens(cache, 0, 100 + step, 1);
    append_tokens(cache, 1, 100 + step, 1);
  }
  EXPECT_EQ(KVCache::allocation_count(), allocations);
  EXPECT_EQ(cache.length(0, 2), 3 + 8);
  cache.truncate(lens);
  EXPECT_EQ(cache.lengths(), lens);
  EXPECT_EQ(KVCache::allocation_count(), allocations);
}

TEST(KVCache, RejectsBadRequests) {
  KVCache cache(test::cpu_backend(), 1, 2, 4, 4);
  append_tokens(cache, 0, 0, 4);
  EXPECT_THROW(cache.compact(0, {{1, 1}, {0}}, 0), Error);  // repeated
  EXPECT_THROW(cache.compact(0, {{0, 9}, {0}}, 0), Error);  // out of range
  EXPECT_THROW(cache.compact(0, {{0}}, 0), Error);          // wrong segment count
  EXPECT_THROW(cache.truncate({{5, 1}}), Error);            // cannot grow
  EXPECT_THROW(cache.append(3, Tensor(), Tensor(), nullptr), Error);
}

}  // namespace kvp
