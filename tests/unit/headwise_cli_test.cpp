// Head-wise compression end to end: `kvpress generate --press ada_snapkv` from the command
// line (in process) gives kv heads their own lengths, frees the bytes, answers; decoding on
// the head-wise cache allocates nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "presses/registry.h"
#include "support/cli_runner.h"
#include "support/press_golden.h"
#include "support/test_paths.h"

namespace kvp {

TEST(HeadwiseCli, AdaSnapKvGenerate) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const test::CliRun r = test::run_kvpress(
      {"generate", "--press", "ada_snapkv", "--ratio", "0.5", "--press-arg", "window_size=2",
       "--context",
       "In this step-by-step guide, you will learn how to create a new press in kvpress !",
       "--question", "What is the purpose of this guide?", "--json"});
  const std::string& out = r.out;
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(out);
  const int64_t T = j.at("context_tokens").get<int64_t>();
  const auto& c = j.at("compression");
  const auto lens = c.at("head_lens").get<std::vector<std::vector<int64_t>>>();
  ASSERT_EQ(lens.size(), 30u);
  int uneven = 0;
  for (const auto& layer : lens) {
    ASSERT_EQ(layer.size(), 3u);
    int64_t total = 0;
    for (int64_t len : layer) total += len;
    EXPECT_EQ(total, 3 * static_cast<int64_t>(static_cast<double>(T) * 0.5));
    uneven += *std::min_element(layer.begin(), layer.end()) !=
              *std::max_element(layer.begin(), layer.end());
  }
  EXPECT_GT(uneven, 15) << "kv heads should get different lengths in most layers";
  const auto answer = j.at("answers")[0].at("answer").get<std::string>();
  EXPECT_FALSE(answer.empty());
  const double before = c.at("context_kv_bytes_before").get<double>(),
               after = c.at("context_kv_bytes_after").get<double>();
  const double reserve = c.at("reserve_kv_bytes").get<double>();
  // The context's own bytes fall by the achieved ratio; the reserve is reported apart, and
  // the allocation holds both.
  EXPECT_NEAR(after / before, 1.0 - c.at("achieved_ratio").get<double>(), 1e-12);
  const double allocated = c.at("allocated_kv_bytes").get<double>();
  EXPECT_GE(allocated, after + reserve);
  EXPECT_LE(allocated, 1.01 * (after + reserve));
  std::printf(
      "[ info ] T = %lld, %d of 30 layers uneven, kv bytes %.0f -> %.0f (reserve %.0f), layer 0 "
      "%s\n",
      static_cast<long long>(T), uneven, before, after, reserve,
      nlohmann::json(lens[0]).dump().c_str());
  std::printf("[ info ] answer: %s\n", answer.c_str());
}

TEST(HeadwiseCli, DecodeOnAHeadwiseCacheAllocatesNothing) {
  KVP_REQUIRE_DEFAULT_MODEL();
  test::PressGoldenModel& g = test::press_golden_model();
  const auto ids = g.context.at("context_ids").get<std::vector<int32_t>>();
  const auto questions = g.context.at("question_ids").get<std::vector<std::vector<int32_t>>>();
  const int64_t T = static_cast<int64_t>(ids.size());
  const int max_new = 16;
  const int64_t reserve = static_cast<int64_t>(questions[0].size()) + max_new;
  auto press = make_press("ada_snapkv", 0.5, {"window_size=2"});
  PressHook hook(*press, reserve);
  KVCache cache = g.model->make_cache(T + reserve);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  g.model->forward(ids.data(), pos.data(), T, cache, &hook);
  const auto lens = cache.lengths();
  ASSERT_NE(lens[0][0], lens[0][1]);  // head-wise
  const uint64_t allocations = KVCache::allocation_count();
  const auto answer =
      greedy_answer(*g.model, cache, questions[0], T, max_new, [](int32_t) { return false; });
  EXPECT_EQ(KVCache::allocation_count(), allocations) << "decoding re-allocated the cache";
  EXPECT_EQ(static_cast<int>(answer.size()), max_new);
  for (size_t h = 0; h < lens[0].size(); ++h)
    EXPECT_EQ(cache.length(0, static_cast<int>(h)),
              lens[0][h] + static_cast<int64_t>(questions[0].size()) + max_new - 1);
}

}  // namespace kvp
