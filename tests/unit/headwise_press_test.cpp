// Head-wise presses (HeadwisePress, AdaKV's allocation): per-head lengths, the layer budget,
// the safeguard, real bytes freed, and the example press my_ada_press (examples/), on a
// synthetic cache and on the default model from the command line.
#include "presses/headwise_press.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "cache/kv_cache.h"
#include "cli/cli.h"
#include "core/error.h"
#include "presses/registry.h"
#include "support/cli_runner.h"
#include "support/host_tensors.h"
#include "support/test_paths.h"

namespace kvp {

namespace {

// One layer, n_heads kv heads, T tokens at positions 0..T-1 with random keys and values.
struct SyntheticLayer {
  KVCache cache;
  LayerView view;
  SyntheticLayer(int n_heads, int64_t T, int head_dim = 8, uint32_t seed = 1)
      : cache(test::cpu_backend(), 1, n_heads, head_dim, T) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    std::vector<float> k(static_cast<size_t>(T * n_heads * head_dim)), v(k.size());
    for (auto& x : k) x = normal(rng);
    for (auto& x : v) x = normal(rng);
    std::vector<int32_t> pos(static_cast<size_t>(T));
    std::iota(pos.begin(), pos.end(), 0);
    cache.append(0, test::heads_view(k, T, n_heads, head_dim),
                 test::heads_view(v, T, n_heads, head_dim), pos.data());
    view.layer = 0;
    view.n_tokens = T;
    view.positions = pos.data();  // not read by the presses below
    view.cache = &cache;
    view.backend = &test::cpu_backend();
  }
  std::vector<int64_t> lengths() { return cache.lengths()[0]; }
};

int64_t sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

// Forwards another head-wise press's scores but keeps int(H * T * (1 - r)) rows over the
// layer, the budget the seed notebook's base class used (kvpress: H * int(T * (1 - r))).
class LayerFractionBudget : public HeadwisePress {
 public:
  explicit LayerFractionBudget(std::unique_ptr<Press> p)
      : HeadwisePress(p->compression_ratio(), 0.2), inner_(std::move(p)) {}
  std::string name() const override { return "layer_fraction_budget"; }
  Scores score(LayerView& view) override {
    return dynamic_cast<HeadwisePress&>(*inner_).score(view);
  }
  int64_t layer_budget(int64_t n_rows, int n_heads) const override {
    return static_cast<int64_t>(static_cast<double>(n_heads * n_rows) * (1.0 - ratio_));
  }

 private:
  std::unique_ptr<Press> inner_;
};

}  // namespace

TEST(HeadwisePress, MyAdaPressEightHeads) {
  // PRESSES.md, the seed's custom press: 8 kv heads, r = 0.5. Heads 0 and 1 score the maximum
  // everywhere; heads 2..7 keep their 4 sinks (maximum), then the most recent tokens.
  auto press = make_press("my_ada_press", 0.5);
  EXPECT_TRUE(press->is_headwise());
  {
    // T = 24: n_kept = 12, budget 8 * 12 = 96 = 2 * 24 + 6 * 8: heads 0 and 1 keep all 24,
    // the 6 others share the remaining 48 equally (4 sinks + the 4 most recent tokens).
    SyntheticLayer L(8, 24);
    press->compress(L.view, 0);
    EXPECT_EQ(L.lengths(), (std::vector<int64_t>{24, 24, 8, 8, 8, 8, 8, 8}));
    for (int h = 2; h < 8; ++h) {
      std::vector<int32_t> pos(L.cache.positions(0, h), L.cache.positions(0, h) + 8);
      std::sort(pos.begin(), pos.end());
      EXPECT_EQ(pos, (std::vector<int32_t>{0, 1, 2, 3, 20, 21, 22, 23})) << "head " << h;
    }
  }
  {
    // T = 21 (the seed's example). kvpress's budget is H * n_kept = 8 * int(10.5) = 80 rows:
    // heads 0, 1 keep 21 each (42), the 6 others hold 24 sinks and 14 more rows. Those go to
    // the most recent positions, 20 and 19 in all 6 heads, then position 18 in the 2 lowest
    // heads (equal scores: lower position first, then lower head).
    SyntheticLayer L(8, 21);
    press->compress(L.view, 0);
    EXPECT_EQ(L.lengths(), (std::vector<int64_t>{21, 21, 7, 7, 6, 6, 6, 6}));
    EXPECT_EQ(sum(L.lengths()), 80);
  }
  {
    // PRESSES.md's [21, 21, 7, 7, 7, 7, 7, 7] totals 84 = int(8 * 21 * 0.5), not kvpress's
    // 8 * int(21 * 0.5) = 80: the seed's base class budgeted the layer as a whole. With that
    // budget (layer_budget() is the override point) the same scores give exactly its lengths.
    SyntheticLayer L(8, 21);
    LayerFractionBudget seed_budget(make_press("my_ada_press", 0.5));
    seed_budget.compress(L.view, 0);
    EXPECT_EQ(L.lengths(), (std::vector<int64_t>{21, 21, 7, 7, 7, 7, 7, 7}));
  }
}

TEST(HeadwisePress, AdaKvOverKnormBudgetAndSafeguard) {
  for (double r : {0.25, 0.5, 0.75, 0.9}) {
    for (double alpha : {0.0, 0.2, 0.5, 1.0}) {
      SyntheticLayer L(4, 37, 8, static_cast<uint32_t>(r * 100 + alpha * 10));
      const size_t before = L.cache.allocated_bytes();
      auto press =
          make_press("adakv", r, {"press=knorm", "alpha_safeguard=" + std::to_string(alpha)});
      ASSERT_TRUE(press->is_headwise());
      press->compress(L.view, 2);
      const int64_t n_kept = n_kept_for(37, r);
      const int64_t n_safe = n_safe_for(n_kept, alpha);
      const auto lens = L.lengths();
      EXPECT_EQ(sum(lens), 4 * n_kept) << r << " " << alpha;
      for (int64_t len : lens) EXPECT_GE(len, n_safe) << r << " " << alpha;
      if (alpha == 1.0) {  // every head protects its whole n_kept: AdaKV degenerates to knorm
        for (int64_t len : lens) EXPECT_EQ(len, n_kept);
      }
      // Real bytes: K and V buffers now hold sum(lens) + 4 * reserve rows.
      EXPECT_LT(L.cache.allocated_bytes(), before);
      EXPECT_EQ(L.cache.allocated_bytes(),
                static_cast<size_t>(sum(lens) + 4 * 2) * 2 * 8 * sizeof(float));
    }
  }
}

TEST(HeadwisePress, AdaKvKeepsTheBestScoresOfTheLayer) {
  // The kept rows are exactly the layer's top H * n_kept knorm scores once each head's top
  // n_safe are protected: no dropped row outscores a kept unprotected row.
  SyntheticLayer L(3, 50, 8, 7);
  const KvSegments kv = L.cache.view(0);
  std::vector<std::vector<float>> norm(3, std::vector<float>(50));
  for (int h = 0; h < 3; ++h)
    for (int j = 0; j < 50; ++j) {
      double s = 0;
      for (int d = 0; d < 8; ++d) s += std::pow(kv.k.ptr<float>()[(kv.offset[h] + j) * 8 + d], 2);
      norm[static_cast<size_t>(h)][static_cast<size_t>(j)] = -static_cast<float>(std::sqrt(s));
    }
  auto press = make_press("adakv", 0.5, {"press=knorm"});
  press->compress(L.view, 0);
  const int64_t n_safe = n_safe_for(25, 0.2);  // 5
  float worst_kept = std::numeric_limits<float>::infinity(), best_dropped = -worst_kept;
  for (int h = 0; h < 3; ++h) {
    std::vector<float> sorted = norm[static_cast<size_t>(h)];
    std::sort(sorted.rbegin(), sorted.rend());
    const float protect_at = sorted[static_cast<size_t>(n_safe - 1)];
    std::vector<bool> kept(50, false);
    for (int64_t i = 0; i < L.cache.length(0, h); ++i)
      kept[static_cast<size_t>(L.cache.positions(0, h)[i])] = true;
    for (int j = 0; j < 50; ++j) {
      const float s = norm[static_cast<size_t>(h)][static_cast<size_t>(j)];
      if (s >= protect_at) {
        EXPECT_TRUE(kept[static_cast<size_t>(j)]) << "protected row dropped";
        continue;
      }
      if (kept[static_cast<size_t>(j)])
        worst_kept = std::min(worst_kept, s);
      else
        best_dropped = std::max(best_dropped, s);
    }
  }
  EXPECT_GT(worst_kept, best_dropped);
  EXPECT_EQ(sum(L.lengths()), 75);
}

TEST(HeadwisePress, AllocationTiesAndProtection) {
  // Protected rows win over equal (float max) scores of other heads; remaining ties are
  // shared across heads by position, not all given to head 0.
  constexpr float kMax = std::numeric_limits<float>::max();
  std::vector<float> v(18, kMax);
  for (int j = 0; j < 6; ++j) v[static_cast<size_t>(12 + j)] = static_cast<float>(j);  // head 2
  Scores s = upload_scores(test::cpu_backend(), 3, 6, v);
  const KeepPlan keep = headwise_allocate(s, /*n_safe=*/1, /*budget=*/9);
  // Protected: row 0 of heads 0 and 1 (ties -> lower position), row 5 of head 2. The other
  // 6 slots go to heads 0, 1 at positions 1, 2, 3.
  EXPECT_EQ(keep[0], (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(keep[1], (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(keep[2], (std::vector<int32_t>{5}));
  // The protected rows now hold float max, as kvpress's select() sees them.
  EXPECT_EQ(download_f32(s.values)[12 + 5], kMax);
}

TEST(HeadwisePress, RatioZeroIsANoOp) {
  SyntheticLayer L(4, 10);
  make_press("my_ada_press", 0.0)->compress(L.view, 0);
  EXPECT_EQ(L.lengths(), (std::vector<int64_t>{10, 10, 10, 10}));
}

TEST(HeadwisePress, ParameterErrors) {
  for (const char* alpha : {"alpha_safeguard=1.5", "alpha_safeguard=-0.1", "alpha_safeguard=nan"}) {
    EXPECT_THROW(make_press("adakv", 0.5, {"press=knorm", alpha}), Error) << alpha;
    EXPECT_THROW(make_press("my_ada_press", 0.5, {alpha}), Error) << alpha;
  }
  try {
    make_press("adakv", 0.5, {"press=knorm", "alpha_safeguard=2"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("alpha_safeguard must be in [0, 1]"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(make_press("adakv", 0.5, {"press=knrm"}), Error);               // unknown inner
  EXPECT_THROW(make_press("adakv", 0.5, {"press=my_ada_press"}), Error);       // not a scorer
  EXPECT_THROW(make_press("adakv", 1.0, {"press=knorm"}), Error);              // bad ratio
  EXPECT_THROW(make_press("adakv", 0.5, {"press=knorm", "window=3"}), Error);  // unknown key
  EXPECT_THROW(make_press("critical_adakv", 0.5, {"press=knorm", "first_stage_ratio=2"}), Error);
  EXPECT_NO_THROW(
      make_press("adakv", 0.5, {"press=streaming_llm", "n_sink=2"}));  // inner params pass through
  auto p = make_press("adakv", 0.5, {"press=knorm", "alpha_safeguard=0.3"});
  EXPECT_EQ(p->params().at("press"), "knorm");
  EXPECT_DOUBLE_EQ(p->params().at("alpha_safeguard").get<double>(), 0.3);
  EXPECT_DOUBLE_EQ(p->compression_ratio(), 0.5);
}

TEST(HeadwisePress, RefusesUnevenHeads) {
  SyntheticLayer L(2, 10);
  L.cache.compact(0, {{0, 1, 2}, {0, 1, 2, 3}}, 0);
  EXPECT_THROW(make_press("adakv", 0.5, {"press=knorm"})->compress(L.view, 0), Error);
}

TEST(HeadwisePress, MyAdaPressOnTheDefaultModel) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const test::CliRun r = test::run_kvpress(
      {"generate", "--press", "my_ada_press", "--ratio", "0.5", "--context",
       "In this step-by-step guide, you will learn how to create a new press in kvpress !",
       "--question", "What is the purpose of this guide?", "--json", "--no-chat-template",
       "--max-new-tokens", "8"});
  const std::string& out = r.out;
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(out);
  const int64_t T = j.at("context_tokens").get<int64_t>();
  const auto lens = j.at("compression").at("head_lens").get<std::vector<std::vector<int64_t>>>();
  ASSERT_GT(T, 8);
  // SmolLM2 has 3 kv heads, so heads 0 and 1 cannot keep everything: they would need 2T rows
  // but the layer budget is 3 * n_kept = 3 * int(T / 2) ~ 1.5T. What the semantics give:
  //  - every head first protects its top n_safe = int(n_kept * 0.2) (>= 1) rows: positions
  //    0..n_safe-1 (all at the maximum in heads 0 and 1, the sinks in head 2; ties go to
  //    lower positions);
  //  - the other 3 * (n_kept - n_safe) slots go to the highest remaining scores, all of them
  //    at the maximum: every position of heads 0 and 1 and head 2's sinks 0..3. Equal scores
  //    are taken by position, then head: position n_safe in heads 0, 1, 2, then n_safe + 1,
  //    ... (head 2 only while position < 4).
  // So heads 0 and 1 keep the same number of rows, head 2 keeps only its 4 sinks (or n_safe
  // if larger), and the total is exactly 3 * n_kept in every layer.
  const int64_t n_kept = T / 2;
  const int64_t n_safe =
      std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(n_kept) * 0.2));
  std::vector<int64_t> want = {n_safe, n_safe, n_safe};
  int64_t left = 3 * (n_kept - n_safe);
  for (int64_t pos = n_safe; left > 0; ++pos)
    for (int h = 0; h < 3 && left > 0; ++h)
      if (h < 2 || pos < 4) ++want[static_cast<size_t>(h)], --left;
  ASSERT_EQ(lens.size(), 30u);
  for (const auto& layer : lens) EXPECT_EQ(layer, want) << "T = " << T;
  EXPECT_EQ(want[0] + want[1] + want[2], 3 * n_kept);
  EXPECT_FALSE(j.at("answers")[0].at("answer").get<std::string>().empty());
}

}  // namespace kvp
