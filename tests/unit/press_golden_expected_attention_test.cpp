// expected_attention against kvpress's goldens.
#include "core/error.h"
#include "support/press_golden.h"

namespace kvp {

TEST(PressGolden, ExpectedAttention) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* r : {"0.25", "0.5"}) {
    auto press = test::make_golden_press("expected_attention", std::stod(r));
    test::check_press_cell(std::string("expected_attention_") + r, *press,
                           test::NearTieRule::top_k("expected_attention_0.5"));
  }
}

TEST(PressGolden, ExpectedAttentionParams) {
  auto press =
      make_press("expected_attention", 0.5, {"n_sink=2", "use_covariance=false", "epsilon=0.01"});
  EXPECT_EQ(press->params().at("n_sink"), 2);
  EXPECT_EQ(press->params().at("use_covariance"), false);
  EXPECT_THROW(make_press("expected_attention", 0.5, {"n_future_positions=0"}), Error);
  EXPECT_THROW(make_press("expected_attention", 0.5, {"use_vnorm=maybe"}), Error);
}

}  // namespace kvp
