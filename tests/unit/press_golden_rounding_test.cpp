// Our default budget rounding (nearest) on the golden context, where it differs from
// kvpress's truncation, under which every golden cell runs (tests/support/press_golden.h).
#include "support/press_golden.h"

namespace kvp {

// per_layer's 0.25 ratios have T r_l with a fraction below one half in
// 18 of 30 layers, which then keep one row more than kvpress (whose lengths the golden
// holds); and at 0.75, 1071 * 0.75 = 803.25 drops 803 rows, keeping 268 (kvpress: 267).
TEST(PressRounding, NearestDefaultOnTheGoldenContext) {
  KVP_REQUIRE_DEFAULT_MODEL();
  test::PressGoldenModel& g = test::press_golden_model();
  const int64_t T = test::golden_context_tokens();
  auto prefill = [&](Press& press) {
    PressHook hook(press, 0);
    KVCache cache = g.model->make_cache(T);
    test::prefill_golden_context(cache, &hook);
    return cache.lengths();
  };

  const nlohmann::json golden = test::press_golden_cell("per_layer_snapkv_0.25");
  const auto ratios = golden.at("params").at("compression_ratios").get<std::vector<double>>();
  std::string list;
  for (double x : ratios) list += (list.empty() ? "" : ",") + nlohmann::json(x).dump();
  auto per_layer = make_press("per_layer", 0.25, {"press=snapkv", "compression_ratios=" + list});
  // T - floor(T r_l + 0.5), layer by layer.
  const int64_t nearest[30] = {1017, 1003, 988, 973, 958, 944, 929, 914, 899, 885,
                               870,  855,  840, 825, 811, 796, 781, 766, 752, 737,
                               722,  707,  693, 678, 663, 648, 633, 619, 604, 589};
  const auto lens = prefill(*per_layer);
  ASSERT_EQ(lens.size(), 30u);
  int more = 0;
  for (size_t l = 0; l < lens.size(); ++l) {
    const int64_t kvpress = golden.at("kept_lengths")[l][0].get<int64_t>();
    EXPECT_TRUE(nearest[l] == kvpress || nearest[l] == kvpress + 1) << l;
    more += nearest[l] == kvpress + 1;
    for (int64_t len : lens[l]) EXPECT_EQ(len, nearest[l]) << "layer " << l;
  }
  EXPECT_EQ(more, 18);

  for (const char* name : {"snapkv", "adakv"}) {
    auto press = make_press(name, 0.75,
                            name == std::string("adakv") ? std::vector<std::string>{"press=snapkv"}
                                                         : std::vector<std::string>{});
    for (const auto& layer : prefill(*press)) {
      int64_t total = 0;
      for (int64_t len : layer) {
        total += len;
        if (!press->is_headwise()) {
          EXPECT_EQ(len, 268) << name;
        }
      }
      EXPECT_EQ(total, 3 * 268) << name;  // kvpress: 3 * 267 (adakv_snapkv_0.75.json)
    }
  }
}

}  // namespace kvp
