// How a compression ratio becomes a kept-row count (BudgetRounding), without a model.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "presses/registry.h"

namespace kvp {

TEST(BudgetRounding, NearestGivesTheClosestAchievableRatio) {
  EXPECT_EQ(n_kept_for(37, 0.25), 28);     // drops round(9.25) = 9 rows: 0.243
  EXPECT_EQ(n_kept_for(1071, 0.75), 268);  // drops round(803.25) = 803
  EXPECT_EQ(n_kept_for(1071, 0.5), 535);   // halves drop the extra row, as kvpress
  EXPECT_EQ(n_kept_for(4, 0.9), 1);        // never an empty head
  for (int64_t T = 10; T <= 400; ++T) {
    for (double r : {0.1, 0.25, 0.3, 0.5, 0.75, 0.9}) {
      const double achieved = 1.0 - static_cast<double>(n_kept_for(T, r)) / static_cast<double>(T);
      EXPECT_LE(std::abs(achieved - r), 0.5 / static_cast<double>(T) + 1e-12) << T << " " << r;
    }
  }
}

TEST(BudgetRounding, KvpressTruncatesTheKeptCount) {
  constexpr BudgetRounding kKvpress = BudgetRounding::Kvpress;
  EXPECT_EQ(n_kept_for(37, 0.25, kKvpress), 27);  // int(27.75)
  EXPECT_EQ(n_kept_for(1071, 0.75, kKvpress), 267);
  EXPECT_EQ(n_kept_for(1071, 0.5, kKvpress), 535);
  EXPECT_EQ(n_kept_for(10, 0.3, kKvpress), 7);  // 10 * 0.7 = 7.000000000000001 in doubles
}

TEST(BudgetRounding, TheRulesAgreeWhenTheFractionIsAtLeastOneHalf) {
  for (int64_t T = 1; T <= 2000; ++T) {
    for (double r : {0.25, 0.5, 0.75}) {
      const double dropped = static_cast<double>(T) * r;
      const double frac = dropped - std::floor(dropped);
      const int64_t nearest = n_kept_for(T, r, BudgetRounding::Nearest);
      const int64_t kvpress = n_kept_for(T, r, BudgetRounding::Kvpress);
      if (frac == 0 || frac >= 0.5) {
        EXPECT_EQ(nearest, kvpress) << T << " " << r;
      } else if (static_cast<int64_t>(static_cast<double>(T) * (1 - r)) >= 1) {
        EXPECT_EQ(nearest, kvpress + 1) << T << " " << r;
      } else {  // both clamp to one row
        EXPECT_EQ(nearest, 1) << T << " " << r;
        EXPECT_EQ(kvpress, 1) << T << " " << r;
      }
    }
  }
}

TEST(BudgetRounding, ParsesItsNamesAndRejectsOthers) {
  EXPECT_EQ(parse_budget_rounding("nearest"), BudgetRounding::Nearest);
  EXPECT_EQ(parse_budget_rounding("kvpress"), BudgetRounding::Kvpress);
  EXPECT_THROW(parse_budget_rounding("floor"), Error);
}

// The rounding is each press's parameter, given by make_press; the default is nearest. (That
// a wrapper's inner press gets it too is what the per_layer golden cells check: their head
// lengths are kvpress's only under its rule.)
TEST(BudgetRounding, IsAPressParameter) {
  EXPECT_EQ(make_press("knorm", 0.25)->budget_rounding(), BudgetRounding::Nearest);
  EXPECT_EQ(make_press("knorm", 0.25, {}, BudgetRounding::Kvpress)->budget_rounding(),
            BudgetRounding::Kvpress);
  // Two presses with different rules coexist in one process.
  auto a = make_press("snapkv", 0.25, {}, BudgetRounding::Kvpress);
  auto b = make_press("snapkv", 0.25, {}, BudgetRounding::Nearest);
  EXPECT_NE(a->budget_rounding(), b->budget_rounding());
}

}  // namespace kvp
