// The CPU backend's per-weight cache (backend/cpu/weight_cache.h), which keeps the argmax
// screen's repacked tables: one entry per live weight, never confused with new memory at a
// freed address, and handles that stay valid while the cache drops entries, from any thread.
#include "backend/cpu/weight_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "core/tensor.h"

namespace kvp::cpu {
namespace {

// A weight whose bytes all equal `fill`.
Tensor weight(uint8_t fill) {
  Tensor w = Tensor::empty(DType::F32, {64, 16});
  std::memset(w.data(), fill, w.nbytes());
  return w;
}

// The entry a test derives from a weight: its first byte, so a handle shows whose it is.
struct Derived {
  uint8_t first;
  std::vector<uint8_t> padding = std::vector<uint8_t>(1 << 16, 0xAB);  // a real allocation
};

std::shared_ptr<const Derived> get(WeightCache& cache, const Tensor& w, int* made = nullptr) {
  return cache.get<Derived>(w, [&] {
    if (made) ++*made;
    return std::make_shared<Derived>(Derived{*static_cast<const uint8_t*>(w.data())});
  });
}

TEST(WeightCache, MakesOneEntryPerWeight) {
  WeightCache cache;
  int made = 0;
  const Tensor a = weight(1), b = weight(2);
  const auto a1 = get(cache, a, &made), b1 = get(cache, b, &made);
  const auto a2 = get(cache, a, &made);
  EXPECT_EQ(made, 2);
  EXPECT_EQ(a1.get(), a2.get());
  EXPECT_EQ(a1->first, 1);
  EXPECT_EQ(b1->first, 2);
  EXPECT_EQ(cache.size(), 2u);
  // A copy of the handle, a reshaped view: the same storage, data and shape -> the same entry;
  // another shape over the same bytes is another weight.
  const Tensor copy = a;
  EXPECT_EQ(get(cache, copy, &made).get(), a1.get());
  EXPECT_NE(get(cache, a.reshaped({32, 32}), &made).get(), a1.get());
  EXPECT_EQ(made, 3);
}

TEST(WeightCache, NewStorageAtAnOldAddressIsANewWeight) {
  WeightCache cache;
  int made = 0;
  // Two owners of the same bytes: what a freed and reused address looks like.
  auto bytes = std::make_shared<std::vector<uint8_t>>(64 * 64, 7);
  std::shared_ptr<const void> first = bytes, second(new int(0), [](const int*p) { delete p; });
  const Tensor w1 = Tensor::view(DType::F32, {64, 16, 0, 0}, 2, bytes->data(), first);
  const Tensor w2 = Tensor::view(DType::F32, {64, 16, 0, 0}, 2, bytes->data(), second);
  const auto e1 = get(cache, w1, &made);
  const auto e2 = get(cache, w2, &made);
  EXPECT_EQ(made, 2);
  EXPECT_NE(e1.get(), e2.get());
  // And freed storage whose address the allocator hands out again (it usually does).
  made = 0;
  const void* old_address = nullptr;
  {
    const Tensor gone = weight(3);
    old_address = gone.data();
    EXPECT_EQ(get(cache, gone, &made)->first, 3);
  }
  const Tensor fresh = weight(4);
  EXPECT_EQ(get(cache, fresh, &made)->first, 4)
      << "reused address: " << (fresh.data() == old_address);
  EXPECT_EQ(made, 2);
}

TEST(WeightCache, ForgetsAWeightThatIsGoneButNotAHandleInUse) {
  WeightCache cache;
  std::shared_ptr<const Derived> held;
  {
    const Tensor w = weight(5);
    held = get(cache, w);
    EXPECT_EQ(cache.size(), 1u);
  }
  const Tensor other = weight(6);
  get(cache, other);  // the next get drops the entry of the weight that is gone
  EXPECT_EQ(cache.size(), 1u);
  ASSERT_TRUE(held);  // its holder still reads it
  EXPECT_EQ(held->first, 5);
  EXPECT_EQ(held->padding.back(), 0xAB);
}

TEST(WeightCache, AViewWithoutOwnerIsNotKept) {
  WeightCache cache;
  int made = 0;
  std::vector<uint8_t> bytes(64 * 64, 9);
  const Tensor w = Tensor::view(DType::F32, {64, 16}, bytes.data());
  EXPECT_EQ(get(cache, w, &made)->first, 9);
  EXPECT_EQ(get(cache, w, &made)->first, 9);
  EXPECT_EQ(made, 2);
  EXPECT_EQ(cache.size(), 0u);
}

// One thread keeps reading the entry of a weight it holds while others bring weights in and
// let them go (the old process-global table was cleared every few weights, invalidating the
// reference the first thread still held).
TEST(WeightCache, HandlesStayValidWhileOtherThreadsComeAndGo) {
  WeightCache cache;
  const Tensor kept = weight(42);
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::thread reader([&] {
    while (!stop.load()) {
      const auto e = get(cache, kept);
      for (int i = 0; i < 50; ++i)
        if (e->first != 42 || e->padding[static_cast<size_t>(i) * 1000] != 0xAB) ++wrong;
    }
  });
  std::vector<std::thread> churn;
  for (int t = 0; t < 3; ++t)
    churn.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const Tensor w = weight(static_cast<uint8_t>(t * 50 + i % 50));
        if (get(cache, w)->first != static_cast<uint8_t>(t * 50 + i % 50)) ++wrong;
      }
    });
  for (auto& c : churn) c.join();
  stop = true;
  reader.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(get(cache, kept)->first, 42);
  EXPECT_EQ(cache.size(), 1u);  // the weights that are gone have left
}

}  // namespace
}  // namespace kvp::cpu
