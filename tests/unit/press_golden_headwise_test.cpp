// Head-wise presses (adakv over snapkv and expected_attention, critical_adakv over snapkv)
// against kvpress's goldens: kvpress masks the pruned rows, we drop them (per-head lengths).
// check_press_cell runs them under kvpress's budget rounding: at 0.75 the golden context
// (T = 1071) keeps int(267.75) = 267 rows per head there, one fewer than our default nearest
// count. The inner scores (SnapKV's, ExpectedAttention's) do not depend on the ratio, so the
// 0.5 cells' score files serve 0.25 and 0.75 too.
#include "support/press_golden.h"

namespace kvp {

namespace {

void check_cells(const std::string& cell, const std::string& press,
                 const std::vector<std::string>& args, const test::NearTieRule& rule,
                 const std::vector<const char*>& ratios = {"0.25", "0.5", "0.75"}) {
  for (const char* r : ratios) {
    auto p = test::make_golden_press(press, std::stod(r), args);
    ASSERT_TRUE(p->is_headwise());
    // Every head length is compared with kvpress's there (a near tie may move a row between
    // the heads of a layer, never change the layer's total).
    const auto result = test::check_press_cell(cell + "_" + r, *p, rule);
    const auto want = test::press_golden_cell(cell + "_" + r)
                          .at("kept_lengths")
                          .get<std::vector<std::vector<int64_t>>>();
    int64_t same = 0, heads = 0;
    for (size_t l = 0; l < result.head_lens.size(); ++l) {
      for (size_t h = 0; h < result.head_lens[l].size(); ++h) {
        same += result.head_lens[l][h] == want[l][h];
        ++heads;
      }
    }
    std::printf("[ info ] %s_%s: %lld of %lld head lengths equal kvpress's\n", cell.c_str(), r,
                static_cast<long long>(same), static_cast<long long>(heads));
  }
}

}  // namespace

TEST(PressGoldenHeadwise, AdaKvSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  check_cells("adakv_snapkv", "adakv", {"press=snapkv"},
              test::NearTieRule::adakv("adakv_snapkv_0.5"));
}

TEST(PressGoldenHeadwise, AdaSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  check_cells("adakv_snapkv", "ada_snapkv", {}, test::NearTieRule::adakv("adakv_snapkv_0.5"),
              {"0.5"});  // the same press under its own name
}

TEST(PressGoldenHeadwise, AdaKvExpectedAttention) {
  KVP_REQUIRE_DEFAULT_MODEL();
  check_cells("adakv_expected_attention", "ada_expected_attention", {},
              test::NearTieRule::adakv("adakv_expected_attention_0.5"));
}

// The goldens hold the inner SnapKV scores (the allocation between heads) but not the
// rescaled scores each head then ranks by; see CriticalAdaKvNearTies.
TEST(PressGoldenHeadwise, CriticalAdaKvSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  check_cells("critical_adakv_snapkv", "critical_adakv", {"press=snapkv"},
              test::NearTieRule::critical_adakv("critical_adakv_snapkv_0.5"));
}

}  // namespace kvp
