// The example press in examples/ (linked into this test, not into the command line's catalog)
// is registered, listed with its parameters, and runs through the pipeline like a built-in
// press.
#include <gtest/gtest.h>

#include "core/error.h"
#include "pipeline/pipeline.h"
#include "presses/registry.h"
#include "support/press_golden.h"

namespace kvp {

TEST(ExamplePress, RegisteredWithParameters) {
  const PressInfo* info = nullptr;
  for (const auto& p : press_catalog())
    if (p.name == "recent_norm") info = &p;
  ASSERT_NE(info, nullptr);
  ASSERT_EQ(info->params.size(), 1u);
  EXPECT_EQ(info->params[0].name, "recency");
  EXPECT_EQ(info->params[0].type, "float");
  auto press = make_press("recent_norm", 0.5, {"recency=2"});
  EXPECT_EQ(press->name(), "recent_norm");
  EXPECT_DOUBLE_EQ(press->params().at("recency").get<double>(), 2.0);
  EXPECT_THROW(make_press("recent_norm", 0.5, {"recent=2"}), Error);
}

TEST(ExamplePress, RunsThroughThePipeline) {
  KVP_REQUIRE_DEFAULT_MODEL();
  test::PressGoldenModel& g = test::press_golden_model();
  const int64_t T = test::golden_context_tokens();
  // A huge recency weight turns it into a recent window: the last n_kept tokens.
  auto press = make_press("recent_norm", 0.5, {"recency=1000"});
  PressHook hook(*press, 64);
  KVCache cache = g.model->make_cache(T + 64);
  test::prefill_golden_context(cache, &hook);
  const int64_t n = n_kept_for(T, 0.5);
  for (int h = 0; h < cache.n_segments(); ++h) {
    ASSERT_EQ(cache.length(3, h), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_GE(cache.positions(3, h)[i], T - n);
  }
  const auto q = g.context.at("question_ids").get<std::vector<std::vector<int32_t>>>()[0];
  const auto answer = greedy_answer(*g.model, cache, q, T, 8, [](int32_t) { return false; });
  EXPECT_EQ(answer.size(), 8u);
}

}  // namespace kvp
