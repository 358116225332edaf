// The near-tie rules of the press golden tests (tests/support/press_golden.h) on small made-up
// cells: what they excuse and what they do not, and that a missing or ill-sized golden score
// file fails.
#include <cmath>

#include "support/press_golden.h"

namespace kvp {

namespace {

// A one-layer cell: kept[head] = kept token positions.
test::GoldenKept cell(int64_t T, const std::vector<std::vector<int32_t>>& kept) {
  nlohmann::json j;
  j["n_tokens"] = T;
  std::vector<int64_t> lens;
  for (const auto& k : kept) lens.push_back(static_cast<int64_t>(k.size()));
  j["kept_lengths"] = std::vector<std::vector<int64_t>>{lens};
  j["kept"] = std::vector<std::vector<std::vector<int32_t>>>{kept};
  return test::GoldenKept(j);
}

test::GoldenScores scores(const std::vector<std::vector<float>>& heads) {
  test::GoldenScores s;
  s.file = "made-up";
  s.n_layers = 1;
  s.n_heads = static_cast<int>(heads.size());
  s.n_tokens = static_cast<int64_t>(heads[0].size());
  for (const auto& h : heads) s.values.insert(s.values.end(), h.begin(), h.end());
  return s;
}

bool excused(const test::NearTies& rule, const std::vector<test::Disagreement>& d,
             const std::vector<int64_t>& ours = {}) {
  const auto gaps = rule.gaps(0, d, ours);
  EXPECT_EQ(gaps.size(), d.size());
  for (const auto& g : gaps)
    if (!g.excused()) return false;
  return true;
}

}  // namespace

TEST(PressGoldenNearTies, Tolerance) {
  // About two float16 steps at the boundary's magnitude: one step at 17.4 is 2^-6.
  EXPECT_NEAR(test::near_tie_tolerance(17.4375, 17.4531), 0x1p-10 * 34.8906 + 0x1p-23, 1e-12);
  EXPECT_TRUE(test::tie_gap(17.4375, 17.4375 + 0x1p-6, false).excused());
  EXPECT_TRUE(test::tie_gap(17.4375, 17.4375 + 0x1p-5, false).excused());
  EXPECT_FALSE(test::tie_gap(17.4375, 17.4375 + 3 * 0x1p-6, false).excused());
  // Subnormal float16 scores (SnapKV deep in the model): the absolute part.
  EXPECT_TRUE(test::tie_gap(1e-6, 1e-6 + 1e-7, false).excused());
  EXPECT_FALSE(test::tie_gap(1e-6, 1e-6 + 3e-7, false).excused());
  // Never across an infinity (CriticalKV's stage-1 markers).
  EXPECT_FALSE(test::tie_gap(INFINITY, INFINITY, true).excused());
  EXPECT_FALSE(test::tie_gap(1.0, INFINITY, false).excused());
}

TEST(PressGoldenNearTies, TopKPerHead) {
  // kvpress keeps the top 3: rows 0, 1, 2; row 3 ties row 2.
  const auto k = cell(5, {{0, 1, 2}});
  const test::TopKNearTies rule(k, scores({{5, 4, 3, 3, 1}}), 0);
  EXPECT_TRUE(excused(rule, {{0, 3, false}, {0, 2, true}}));  // the tie swapped
  EXPECT_FALSE(excused(rule, {{0, 4, false}}));               // 1 is far below 3
  EXPECT_FALSE(excused(rule, {{0, 0, true}}));                // 5 is far above 3
}

TEST(PressGoldenNearTies, TopKPerChunk) {
  // Two chunks of 3: kvpress keeps the top 2 of each. A row is compared with its own chunk.
  const auto k = cell(6, {{0, 1, 4, 5}});
  const test::TopKNearTies rule(k, scores({{9, 8, 7, 1, 2, 3}}), 3);
  EXPECT_FALSE(excused(rule, {{0, 2, false}}));  // 7 vs its chunk's 8 (not chunk 2's 2)
  EXPECT_FALSE(excused(rule, {{0, 3, false}}));  // 1 vs its chunk's 2
  const test::TopKNearTies tie(k, scores({{9, 8, 8, 1, 2, 3}}), 3);
  EXPECT_TRUE(excused(tie, {{0, 2, false}}));
}

TEST(PressGoldenNearTies, AdaKvLayerWide) {
  // n_kept 2 per head, n_safe = max(1, int(2 * 0.2)) = 1: head 0 protects row 0, head 1 row
  // 1; the two other places go to the best unprotected rows of the layer: 0.5 (head 0, row
  // 2) and 0.45 (head 1, row 2). Highest dropped: 0.3 (head 1, row 0).
  const auto k = cell(5, {{0, 2}, {1, 2}});
  const std::vector<std::vector<float>> s = {{0.9f, 0.1f, 0.5f, 0.2f, 0.05f},
                                             {0.3f, 0.5f, 0.45f, 0.01f, 0.02f}};
  const test::AdaKvNearTies rule(k, scores(s), 0.2);
  EXPECT_FALSE(excused(rule, {{1, 0, false}}));  // 0.3 is far below 0.45
  EXPECT_FALSE(excused(rule, {{1, 2, true}}));   // 0.45 is far above 0.3
  EXPECT_FALSE(excused(rule, {{0, 0, true}}));   // protected and far above everything
  auto near = s;
  near[1][0] = 0.4499f;  // now a near tie with 0.45, across heads
  const test::AdaKvNearTies tie(k, scores(near), 0.2);
  EXPECT_TRUE(excused(tie, {{1, 0, false}, {1, 2, true}}));
  EXPECT_FALSE(excused(tie, {{1, 0, false}, {0, 2, true}}));  // 0.5 is not near 0.4499
}

TEST(PressGoldenNearTies, ComposedRanks) {
  // First stage keeps n1 = 6 rows in score order (row t has rank t); the second keeps the
  // first n_sink = 1 and the last 2 of those: ranks 0, 4, 5 (rows 0, 4, 5).
  const auto k = cell(10, {{0, 4, 5}});
  std::vector<float> s = {10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
  const test::ComposedRankNearTies rule(k, scores({s}), 6, 1);
  EXPECT_FALSE(excused(rule, {{0, 3, false}}));  // rank 3 is a whole point from rank 4
  EXPECT_FALSE(excused(rule, {{0, 5, true}}));   // rank 5 is a whole point from rank 6
  s[3] = 6.001f;                                 // rank 3 now ties rank 4
  s[6] = 4.999f;                                 // rank 6 now ties rank 5
  const test::ComposedRankNearTies tie(k, scores({s}), 6, 1);
  EXPECT_TRUE(excused(tie, {{0, 3, false}, {0, 4, true}}));
  EXPECT_TRUE(excused(tie, {{0, 6, false}, {0, 5, true}}));
  EXPECT_FALSE(excused(tie, {{0, 1, false}}));
}

TEST(PressGoldenNearTies, ChunkKvMeans) {
  // Chunks of 2 with head-summed means 1, 3, 2: kvpress keeps chunks 1 and 2.
  const auto k = cell(6, {{2, 3, 4, 5}});
  const test::ChunkKvNearTies rule(k, scores({{1, 1, 3, 3, 2, 2}}), 2);
  EXPECT_FALSE(excused(rule, {{0, 0, false}, {0, 1, false}}));
  const test::ChunkKvNearTies tie(k, scores({{1, 1, 3, 3, 1, 1.001f}}), 2);
  EXPECT_TRUE(excused(tie, {{0, 0, false}, {0, 1, false}, {0, 4, true}, {0, 5, true}}));
}

TEST(PressGoldenNearTies, CriticalAdaKvAllocation) {
  // n_kept 2 per head, n_safe 1. Head 0's third-best 0.4 against head 1's second-best: a tie
  // moves one place from head 1 to head 0 (we keep 3 and 1 rows, kvpress 2 and 2).
  const auto k = cell(4, {{0, 1}, {0, 1}});
  const test::CriticalAdaKvNearTies tie(
      k, scores({{0.9f, 0.5f, 0.4f, 0.1f}, {0.8f, 0.4f, 0.2f, 0.1f}}), 0.2);
  EXPECT_TRUE(excused(tie, {{0, 3, false}, {1, 0, true}}, {3, 1}));
  EXPECT_FALSE(excused(tie, {{0, 3, false}, {1, 0, false}}, {3, 1}));  // the wrong side
  EXPECT_FALSE(excused(tie, {{0, 3, false}, {1, 2, true}}, {2, 2}));   // equal lengths
  const test::CriticalAdaKvNearTies apart(
      k, scores({{0.9f, 0.5f, 0.1f, 0.05f}, {0.8f, 0.4f, 0.2f, 0.1f}}), 0.2);
  EXPECT_FALSE(excused(apart, {{0, 3, false}, {1, 0, true}}, {3, 1}));
}

TEST(PressGoldenNearTies, CriticalKvStages) {
  // Stage 1 keeps the top b1 = 2 inner scores (rows 0, 1); stage 2 keeps 2 more of the rest by
  // the final scores (rows 3, 4); row 2's final score 0.3 is far below row 4's 0.5.
  const auto k = cell(6, {{0, 1, 3, 4}});
  const auto inner = scores({{0.9f, 0.8f, 0.7f, 0.1f, 0.2f, 0.3f}});
  const auto fin = scores({{INFINITY, INFINITY, 0.3f, 0.9f, 0.5f, 0.1f}});
  const test::CriticalKvNearTies rule(k, inner, fin, 2);
  EXPECT_FALSE(excused(rule, {{0, 2, false}, {0, 4, true}}));
  const auto fin_tie = scores({{INFINITY, INFINITY, 0.5f, 0.9f, 0.5f, 0.1f}});
  const test::CriticalKvNearTies tie(k, inner, fin_tie, 2);
  EXPECT_TRUE(excused(tie, {{0, 2, false}, {0, 4, true}}));
}

// A missing or truncated golden score file fails the test that reads it (it throws), and
// every score file of the manifest is there with the manifest's shape.
TEST(PressGoldenNearTies, ScoreFiles) {
  EXPECT_THROW(test::read_golden_scores("no_such.scores.f16"), Error);
  EXPECT_THROW(test::golden_scores_of("knorm_0.25"), Error);  // scores at 0.5 only
  const nlohmann::json manifest =
      read_json_file(test::source_path("tests/golden/presses/manifest.json"));
  for (const auto& [file, meta] : manifest.at("score_files").items()) {
    const test::GoldenScores s = test::read_golden_scores(file);
    EXPECT_EQ(s.n_layers, 30) << file;
    EXPECT_EQ(s.n_heads, 3) << file;
    EXPECT_EQ(s.n_tokens, 1071) << file;
  }
  EXPECT_EQ(manifest.at("score_files").size(), 11u);
}

}  // namespace kvp
