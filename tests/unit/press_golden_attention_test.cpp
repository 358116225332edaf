// observed_attention against kvpress's goldens (kvpress reads eager attention; we recompute
// the causal probabilities through Backend::attention_column_sums).
#include "support/press_golden.h"

namespace kvp {

TEST(PressGolden, ObservedAttention) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* r : {"0.25", "0.5"}) {
    auto press = test::make_golden_press("observed_attention", std::stod(r));
    test::check_press_cell(std::string("observed_attention_") + r, *press,
                           test::NearTieRule::top_k("observed_attention_0.5"));
  }
}

}  // namespace kvp
