// knorm, random, streaming_llm and the press framework against kvpress's goldens.
#include "core/error.h"
#include "support/press_golden.h"

namespace kvp {

// Key norms do not depend on the ratio: the 0.5 cell's scores serve both cells.
TEST(PressGolden, Knorm) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* r : {"0.25", "0.5"}) {
    auto press = test::make_golden_press("knorm", std::stod(r));
    test::check_press_cell(std::string("knorm_") + r, *press,
                           test::NearTieRule::top_k("knorm_0.5"));
  }
}

TEST(PressGolden, StreamingLlm) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* r : {"0.25", "0.5"}) {
    auto press = test::make_golden_press("streaming_llm", std::stod(r));
    test::check_press_cell(
        std::string("streaming_llm_") + r, *press,
        test::NearTieRule::strict("the kept rows are fixed by position: sinks and window"));
  }
}

TEST(PressFramework, UniformBudgetAndRealBytes) {
  KVP_REQUIRE_DEFAULT_MODEL();
  auto press = test::make_golden_press("knorm", 0.5);
  const auto r =
      test::check_press_cell("knorm_0.5", *press, test::NearTieRule::top_k("knorm_0.5"), false);
  // n_kept = int(1071 * 0.5) = 535 in every layer and head.
  for (const auto& layer : r.head_lens)
    for (int64_t len : layer) EXPECT_EQ(len, 535);
}

TEST(PressFramework, RegistryErrors) {
  EXPECT_THROW(make_press("snapk", 0.5), Error);
  try {
    make_press("knrm", 0.5);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("knorm"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_press("knorm", 1.0), Error);
  EXPECT_THROW(make_press("knorm", -0.1), Error);
  EXPECT_THROW(make_press("knorm", 0.5, {"window_size=3"}), Error);        // unknown parameter
  EXPECT_THROW(make_press("streaming_llm", 0.5, {"n_sink=four"}), Error);  // ill-typed
  EXPECT_THROW(make_press("streaming_llm", 0.5, {"n_sink"}), Error);       // not key=value
  EXPECT_NO_THROW(make_press("streaming_llm", 0.5, {"n_sink=8"}));
}

}  // namespace kvp
