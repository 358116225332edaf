// Head-wise presses (adakv over snapkv and expected_attention, critical_adakv over snapkv)
// against kvpress's goldens: kvpress masks the pruned rows, we drop them (per-head lengths).
// Checked under kvpress's budget rounding: at 0.75 the golden context (T = 1071) keeps
// int(267.75) = 267 rows per head there, one fewer than our default nearest count.
#include "support/press_golden.h"

namespace kvp {

namespace {

void check_cells(const std::string& cell, const std::string& press,
                 const std::vector<std::string>& args,
                 const std::vector<const char*>& ratios = {"0.25", "0.5", "0.75"}) {
  ScopedBudgetRounding kvpress_rounding(BudgetRounding::Kvpress);
  for (const char* r : ratios) {
    auto p = make_press(press, std::stod(r), args);
    ASSERT_TRUE(p->is_headwise());
    const auto result = test::check_press_cell(cell + "_" + r, *p);
    // The layer total is exactly H * n_kept, whatever the split between heads.
    const nlohmann::json golden = test::press_golden_cell(cell + "_" + r);
    const int64_t T = golden.at("n_tokens").get<int64_t>();
    const auto want = golden.at("kept_lengths").get<std::vector<std::vector<int64_t>>>();
    int64_t same = 0, heads = 0;
    for (size_t l = 0; l < result.head_lens.size(); ++l) {
      int64_t total = 0;
      for (size_t h = 0; h < result.head_lens[l].size(); ++h) {
        total += result.head_lens[l][h];
        same += result.head_lens[l][h] == want[l][h];
        ++heads;
      }
      EXPECT_EQ(total,
                static_cast<int64_t>(result.head_lens[l].size()) * n_kept_for(T, std::stod(r)))
          << cell << "_" << r << " layer " << l;
    }
    std::printf("[ info ] %s_%s: %lld of %lld head lengths equal kvpress's\n", cell.c_str(), r,
                static_cast<long long>(same), static_cast<long long>(heads));
  }
}

}  // namespace

TEST(PressGoldenHeadwise, AdaKvSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  check_cells("adakv_snapkv", "adakv", {"press=snapkv"});
}

TEST(PressGoldenHeadwise, AdaSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  check_cells("adakv_snapkv", "ada_snapkv", {}, {"0.5"});  // the same press under its own name
}

TEST(PressGoldenHeadwise, AdaKvExpectedAttention) {
  KVP_REQUIRE_DEFAULT_MODEL();
  check_cells("adakv_expected_attention", "ada_expected_attention", {});
}

TEST(PressGoldenHeadwise, CriticalAdaKvSnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  check_cells("critical_adakv_snapkv", "critical_adakv", {"press=snapkv"});
}

}  // namespace kvp
