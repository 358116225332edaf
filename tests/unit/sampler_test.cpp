// The sampler on hand-made logits: greedy at temperature 0, the same tokens for the same
// seed, draws whose frequencies follow softmax(logits / T), and top-k / top-p supports.
#include "pipeline/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "core/error.h"

namespace kvp {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 3.0f, 0.5f, -2.0f, 2.0f};

std::vector<int32_t> draws(const SamplingParams& p, int n) {
  Sampler s(p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.next(kLogits));
  return out;
}

TEST(Sampler, TemperatureZeroIsTheFirstArgmax) {
  SamplingParams p;
  for (int32_t t : draws(p, 20)) EXPECT_EQ(t, 1);  // 3.0 twice: the lower index
  EXPECT_EQ(argmax_token(std::vector<float>{NAN, -1.f, 2.f, 2.f}), 2);
}

TEST(Sampler, TopKOneIsGreedy) {
  SamplingParams p{0.9, 1, 1, 5};
  for (int32_t t : draws(p, 50)) EXPECT_EQ(t, 1);
}

TEST(Sampler, SameSeedSameTokensOtherSeedOthers) {
  SamplingParams p{1.0, 1, 0, 42};
  const auto a = draws(p, 200), b = draws(p, 200);
  EXPECT_EQ(a, b);
  p.seed = 43;
  EXPECT_NE(draws(p, 200), a);
}

// 200,000 draws at T = 0.7: each token's frequency within 5 standard deviations of
// softmax(logits / T); a wrong temperature (or none) would move the top tokens' shares by
// several percent.
TEST(Sampler, FrequenciesFollowTheTemperedSoftmax) {
  const double T = 0.7;
  const int n = 200000;
  std::vector<double> prob(kLogits.size());
  double total = 0;
  for (size_t i = 0; i < kLogits.size(); ++i) total += prob[i] = std::exp(kLogits[i] / T);
  std::vector<int> count(kLogits.size());
  for (int32_t t : draws({T, 1, 0, 7}, n)) ++count[static_cast<size_t>(t)];
  for (size_t i = 0; i < kLogits.size(); ++i) {
    const double p = prob[i] / total, sd = std::sqrt(n * p * (1 - p));
    EXPECT_NEAR(count[i], n * p, 5 * sd + 1) << "token " << i;
  }
}

// Probabilities at T = 1: 0.32, 0.32, 0.12, 0.04 (tokens 1, 2, 5, 0, ...). top_p = 0.6
// keeps tokens 1 and 2 (0.64 >= 0.6), each half the time; top_k = 3 keeps 1, 2 and 5.
TEST(Sampler, TopPAndTopKLimitTheSupport) {
  std::map<int32_t, int> seen;
  for (int32_t t : draws({1.0, 0.6, 0, 3}, 4000)) ++seen[t];
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 1800);
  EXPECT_GT(seen[2], 1800);
  seen.clear();
  for (int32_t t : draws({1.0, 1, 3, 3}, 4000)) ++seen[t];
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_GT(seen[5], 400);  // 0.12 / 0.76 of the draws
  seen.clear();
  for (int32_t t : draws({1.0, 1e-9, 0, 3}, 100)) ++seen[t];
  EXPECT_EQ(seen.size(), 1u);  // the nucleus never empties: the top token alone
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(Sampler({-0.1, 1, 0, 0}), Error);
  EXPECT_THROW(Sampler({NAN, 1, 0, 0}), Error);
  EXPECT_THROW(Sampler({1.0, 0, 0, 0}), Error);
  EXPECT_THROW(Sampler({1.0, 1.5, 0, 0}), Error);
  EXPECT_THROW(Sampler({1.0, 1, -1, 0}), Error);
  Sampler s({1.0, 1, 0, 0});
  EXPECT_THROW(s.next(std::vector<float>{}), Error);
  EXPECT_THROW(s.next(std::vector<float>{NAN, NAN}), Error);
  EXPECT_EQ(s.next(std::vector<float>{-INFINITY, -INFINITY, NAN}), 0);  // nothing weighs: greedy
}

}  // namespace
}  // namespace kvp
