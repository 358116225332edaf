// Wrapper presses (composed, per_layer, chunk, chunkkv, key_rerotation, criticalkv) against
// kvpress's goldens, and their error cases.
#include <cmath>

#include "backend/cpu/reference.h"
#include "core/error.h"
#include "support/press_golden.h"

namespace kvp {

namespace {

bool has_press(const std::string& name) {
  for (const auto& p : press_catalog())
    if (p.name == name) return true;
  return false;
}

#define KVP_REQUIRE_SNAPKV() \
  if (!has_press("snapkv")) GTEST_FAIL() << "snapkv is not registered"

const char* const kRatios[] = {"0.25", "0.5"};

// A stand-in head-wise press (kv heads keep different lengths), registered for these tests.
class TestHeadwisePress : public Press {
 public:
  std::string name() const override { return "test_headwise"; }
  double compression_ratio() const override { return 0.5; }
  nlohmann::json params() const override { return nlohmann::json::object(); }
  bool is_headwise() const override { return true; }
  KeepPlan plan(LayerView&) override { return {}; }
};

const PressRegistration test_headwise({"test_headwise", "test only", {}, [](double, PressArgs&) {
                                         return std::make_unique<TestHeadwisePress>();
                                       }});

}  // namespace

// The second stage keeps rows by their rank in the first stage's (knorm's) order, so the near
// ties are in knorm's scores at the ranks where a row's fate changes. Knorm's scores do not
// depend on the ratio: the 0.5 cell's serve both.
namespace {
test::NearTieRule composed_near_ties(double r) {
  return test::NearTieRule::composed("composed_knorm_streaming_llm_0.5",
                                     test::kvpress_n_kept(1071, r), 4);
}
}  // namespace

TEST(PressGolden, ComposedKnormStreamingLlm) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* r : kRatios) {
    auto press = test::make_golden_press("composed", std::stod(r), {"presses=knorm,streaming_llm"});
    const double want = 1.0 - (1.0 - std::stod(r)) * (1.0 - std::stod(r));
    EXPECT_DOUBLE_EQ(press->compression_ratio(), want);
    const auto res = test::check_press_cell(std::string("composed_knorm_streaming_llm_") + r,
                                            *press, composed_near_ties(std::stod(r)));
    // int(int(T (1 - r)) (1 - r)) in every head (check_press_cell compares with the golden).
    const int64_t n = test::kvpress_n_kept(test::kvpress_n_kept(1071, std::stod(r)), std::stod(r));
    for (const auto& layer : res.head_lens)
      for (int64_t len : layer) EXPECT_EQ(len, n);
  }
}

TEST(PressGolden, ComposedPerStageRatios) {
  KVP_REQUIRE_DEFAULT_MODEL();
  // ratios= overrides --ratio per stage: the 0.5 cell with a meaningless --ratio.
  auto press =
      test::make_golden_press("composed", 0.9, {"presses=knorm,streaming_llm", "ratios=0.5,0.5"});
  EXPECT_DOUBLE_EQ(press->compression_ratio(), 0.75);
  test::check_press_cell("composed_knorm_streaming_llm_0.5", *press, composed_near_ties(0.5),
                         false);
}

// Stage 1 from SnapKV's scores, stage 2 from the 0.5 cell's final scores (see
// CriticalKvNearTies for why they serve 0.25 too). Stage 1 keeps int((1 - r) T / 2).
TEST(PressGolden, CriticalKvSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  KVP_REQUIRE_SNAPKV();
  for (const char* r : kRatios) {
    auto press = test::make_golden_press("criticalkv", std::stod(r), {"press=snapkv"});
    const auto b1 = static_cast<int64_t>((1.0 - std::stod(r)) * 1071.0 * 0.5);
    test::check_press_cell(
        std::string("criticalkv_snapkv_") + r, *press,
        test::NearTieRule::criticalkv("snapkv_0.5", "criticalkv_snapkv_0.5", b1));
  }
}

// Ratios rising from r - 0.2 to r + 0.2 over the layers. Under kvpress's rounding every
// layer's length is int(T (1 - r_l)), the golden's (press_golden_rounding_test: ours).
TEST(PressGolden, PerLayerSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  KVP_REQUIRE_SNAPKV();
  for (const char* r : kRatios) {
    const std::string cell = std::string("per_layer_snapkv_") + r;
    const nlohmann::json golden = test::press_golden_cell(cell);
    const auto ratios = golden.at("params").at("compression_ratios").get<std::vector<double>>();
    std::string list;
    for (double x : ratios) list += (list.empty() ? "" : ",") + nlohmann::json(x).dump();
    auto press = test::make_golden_press("per_layer", std::stod(r),
                                         {"press=snapkv", "compression_ratios=" + list});
    test::check_press_cell(cell, *press, test::NearTieRule::top_k("per_layer_snapkv_0.5"));
    const auto want = golden.at("kept_lengths");
    for (size_t l = 0; l < ratios.size(); ++l)  // the golden is kvpress's formula
      EXPECT_EQ(want[l][0].get<int64_t>(), test::kvpress_n_kept(1071, ratios[l])) << l;
  }
}

// ChunkPress ranks within each chunk of 300 (300, 300, 300, 171 tokens), so its near ties are
// per chunk, in the per-chunk SnapKV scores (ratio-independent).
TEST(PressGolden, ChunkSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  KVP_REQUIRE_SNAPKV();
  for (const char* r : kRatios) {
    auto press =
        test::make_golden_press("chunk", std::stod(r), {"press=snapkv", "chunk_length=300"});
    const auto res = test::check_press_cell(std::string("chunk_snapkv_") + r, *press,
                                            test::NearTieRule::top_k("chunk_snapkv_0.5", 300));
    // Per-chunk rounding.
    int64_t want = 0;
    for (int64_t len : {300, 300, 300, 171}) want += test::kvpress_n_kept(len, std::stod(r));
    EXPECT_EQ(res.head_lens[0][0], want);
  }
}

TEST(PressGolden, ChunkKvSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  KVP_REQUIRE_SNAPKV();
  for (const char* r : kRatios) {
    auto press = test::make_golden_press("chunkkv", std::stod(r), {"press=snapkv"});
    const auto res = test::check_press_cell(std::string("chunkkv_snapkv_") + r, *press,
                                            test::NearTieRule::chunkkv("chunkkv_snapkv_0.5", 20));
    EXPECT_EQ(res.head_lens[0][0], std::string(r) == "0.5" ? 531 : 791);  // spec 3.11
  }
}

TEST(PressGolden, KeyRerotationSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  KVP_REQUIRE_SNAPKV();
  for (const char* r : kRatios) {
    auto press = test::make_golden_press("key_rerotation", std::stod(r), {"press=snapkv"});
    EXPECT_TRUE(press->rerotates_keys());
    test::check_press_cell(std::string("key_rerotation_snapkv_") + r, *press,
                           test::NearTieRule::top_k("key_rerotation_snapkv_0.5"));
  }
}

// key_rerotation over knorm: kept rows sorted by position, each key rotated by
// (rank - position), which is what RoPE at the rank would have given.
TEST(PressWrappers, KeyRerotationRotatesKeysToRanks) {
  KVP_REQUIRE_DEFAULT_MODEL();
  test::PressGoldenModel& g = test::press_golden_model();
  const int64_t T = test::golden_context_tokens();
  KVCache plain = g.model->make_cache(T);
  test::prefill_golden_context(plain);

  auto press = make_press("key_rerotation", 0.5, {"press=knorm"});
  PressHook hook(*press, 8);
  KVCache cache = g.model->make_cache(T + 8);
  test::prefill_golden_context(cache, &hook);
  const int D = cache.head_dim();
  const int64_t n = n_kept_for(T, 0.5);
  for (int l : {0, 15, 29}) {
    const KvSegments a = plain.view(l), b = cache.view(l);
    const auto* ak = a.k.ptr<float>();
    const auto* bk = b.k.ptr<float>();
    for (int h = 0; h < cache.n_segments(); ++h) {
      ASSERT_EQ(cache.length(l, h), n);
      const int32_t* p = cache.positions(l, h);
      for (int64_t i = 1; i < n; ++i) ASSERT_LT(p[i - 1], p[i]);
      for (int64_t i : {int64_t{0}, n / 2, n - 1}) {
        std::vector<float> want(ak + (a.offset[h] + p[i]) * D, ak + (a.offset[h] + p[i] + 1) * D);
        Tensor w = Tensor::view(DType::F32, {1, 1, D}, want.data());
        const int32_t delta = static_cast<int32_t>(i) - p[i];
        ref::rope(w, &delta, g.model->config().rope);
        for (int d = 0; d < D; ++d)
          EXPECT_NEAR(bk[(b.offset[h] + i) * D + d], want[static_cast<size_t>(d)], 1e-4);
      }
    }
  }
}

TEST(PressWrappers, Errors) {
  // Unknown inner press, with a suggestion.
  try {
    make_press("chunk", 0.5, {"press=knrm"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("knorm"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_press("composed", 0.5, {"presses=knorm,nope"}), Error);
  EXPECT_THROW(make_press("composed", 0.5), Error);                            // no presses=
  EXPECT_THROW(make_press("composed", 0.5, {"presses=knorm,,knorm"}), Error);  // empty name
  EXPECT_THROW(make_press("composed", 0.5, {"presses=knorm,knorm", "ratios=0.5"}), Error);  // count
  EXPECT_THROW(make_press("composed", 0.5, {"presses=knorm,knorm", "ratios=0.5,1.5"}), Error);
  EXPECT_THROW(make_press("composed", 0.5, {"presses=knorm", "window=3"}),
               Error);  // unknown parameter
  EXPECT_NO_THROW(make_press("composed", 0.5, {"presses=knorm,streaming_llm", "n_sink=8"}));
  // Wrappers need a scorer inner press.
  EXPECT_THROW(
      make_press("per_layer", 0.5, {"press=chunkkv", "compression_ratios=0.5", "chunk_length=4"}),
      Error);
  EXPECT_THROW(make_press("criticalkv", 0.5, {"press=composed", "presses=knorm"}), Error);
  EXPECT_THROW(make_press("key_rerotation", 0.5, {"press=key_rerotation"}), Error);
  EXPECT_THROW(make_press("per_layer", 0.5, {"press=knorm"}), Error);  // no compression_ratios
  EXPECT_THROW(make_press("per_layer", 0.5, {"press=knorm", "compression_ratios=0.5,x"}), Error);
  EXPECT_THROW(make_press("per_layer", 0.5, {"press=knorm", "compression_ratios=0.5,1.0"}), Error);
  EXPECT_THROW(make_press("chunk", 0.5, {"press=knorm", "chunk_length=0"}), Error);
  EXPECT_THROW(make_press("chunkkv", 0.5, {"press=knorm", "chunk_length=-1"}), Error);
  EXPECT_THROW(make_press("criticalkv", 0.5, {"press=knorm", "first_stage_ratio=2"}), Error);
  // Head-wise inner presses are refused by every wrapper that needs one length per layer.
  for (const char* w : {"chunk", "chunkkv", "criticalkv", "key_rerotation", "per_layer"}) {
    try {
      make_press(w, 0.5, {"press=test_headwise", "compression_ratios=0.5"});
      ADD_FAILURE() << w;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("head-wise"), std::string::npos) << e.what();
    }
  }
  try {
    make_press("composed", 0.5, {"presses=knorm,test_headwise"});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head-wise"), std::string::npos) << e.what();
  }
}

TEST(PressWrappers, PerLayerCountMismatch) {
  KVP_REQUIRE_DEFAULT_MODEL();
  test::PressGoldenModel& g = test::press_golden_model();
  auto press = make_press("per_layer", 0.5, {"press=knorm", "compression_ratios=0.5,0.5,0.5"});
  EXPECT_DOUBLE_EQ(press->compression_ratio(), 0.5);
  PressHook hook(*press, 0);
  KVCache cache = g.model->make_cache(64);
  std::vector<int32_t> ids(32, 1), pos(32);
  for (int i = 0; i < 32; ++i) pos[static_cast<size_t>(i)] = i;
  try {
    g.model->forward(ids.data(), pos.data(), 32, cache, &hook);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("30 layers"), std::string::npos) << e.what();
  }
}

}  // namespace kvp
