// Backend::top_k, the ranking every scorer press keeps its rows by, against a plain stable
// sort, on every backend of the build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backend/factory.h"
#include "presses/scores.h"

namespace kvp {

namespace {

// The rule written out: indices by descending score, equal scores by ascending index.
std::vector<int32_t> ranked_by_sort(const std::vector<float>& s, int64_t k) {
  std::vector<int32_t> idx(s.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
  idx.resize(static_cast<size_t>(std::clamp<int64_t>(k, 0, static_cast<int64_t>(s.size()))));
  return idx;
}

// The backend's top k of one row of scores (k clamped to [0, n] as a plan would).
std::vector<int32_t> top_k(Backend& be, const std::vector<float>& s, int64_t k) {
  const auto n = static_cast<int64_t>(s.size());
  const Scores row = upload_scores(be, 1, n, s);
  return top_k_row(row.values, std::clamp<int64_t>(k, 0, n));
}

}  // namespace

TEST(TopK, RanksByScoreThenLowerIndex) {
  for (const std::string& device : usable_backend_names()) {
    const auto be = make_backend(device, 2);
    std::mt19937 rng(7);
    for (int trial = 0; trial < 400; ++trial) {
      const int n = 1 + static_cast<int>(rng() % 700);
      std::vector<float> s(static_cast<size_t>(n));
      for (float& x : s) {
        switch (trial % 3) {
          case 0:
            x = std::normal_distribution<float>()(rng);
            break;
          case 1:
            x = static_cast<float>(static_cast<int>(rng() % 5) - 2);
            break;  // many ties
          default:
            x = rng() % 4 == 0 ? -INFINITY : rng() % 3 == 0 ? INFINITY : 1.f;
            break;
        }
      }
      for (int64_t k :
           {int64_t{0}, int64_t{1}, int64_t{n / 3}, int64_t{n - 1}, int64_t{n}, int64_t{n + 3}}) {
        ASSERT_EQ(top_k(*be, s, k), ranked_by_sort(s, k))
            << device << " trial " << trial << " k " << k;
      }
    }
  }
}

TEST(TopK, NegativeZeroTiesWithZeroAndNaNRanksLast) {
  const float nan = std::nanf("");
  const std::vector<float> s = {nan, -0.f, -INFINITY, 0.f, 2.f, nan, -0.f};
  for (const std::string& device : usable_backend_names()) {
    const auto be = make_backend(device, 2);
    EXPECT_EQ(top_k(*be, s, 7), (std::vector<int32_t>{4, 1, 3, 6, 2, 0, 5})) << device;
    EXPECT_EQ(top_k(*be, s, 2), (std::vector<int32_t>{4, 1})) << device;
    EXPECT_TRUE(top_k(*be, s, -1).empty()) << device;
  }
}

}  // namespace kvp
