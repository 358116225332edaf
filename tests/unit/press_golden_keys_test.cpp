// keydiff and qfilter (scores from the cached keys alone) against kvpress's goldens, and
// qfilter's errors for missing or ill-sized filter files.
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "support/press_golden.h"

namespace kvp {

TEST(PressGolden, KeyDiff) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* r : {"0.25", "0.5"}) {
    auto press = test::make_golden_press("keydiff", std::stod(r));
    test::check_press_cell(std::string("keydiff_") + r, *press,
                           test::NearTieRule::top_k("keydiff_0.5"));
  }
}

// kvpress's QFilterPress with synthetic filters (randn, seed 1234, [30, 3, 64] f32). Its
// answers are gibberish, but they must be kvpress's gibberish.
TEST(PressGolden, QFilterSynthetic) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const std::string filters =
      "filters=" + test::source_path("tests/golden/presses/qfilter_synthetic.filters.f32");
  for (const char* r : {"0.25", "0.5"}) {
    auto press = test::make_golden_press("qfilter", std::stod(r), {filters});
    test::check_press_cell(std::string("qfilter_synthetic_") + r, *press,
                           test::NearTieRule::top_k("qfilter_synthetic_0.5"));
  }
}

TEST(PressParams, QFilterFileErrors) {
  auto expect_error = [](const std::vector<std::string>& args, const std::string& fragment) {
    try {
      make_press("qfilter", 0.5, args);
      FAIL() << "no error for " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error({}, "needs filters=PATH");
  expect_error({"filters=/nonexistent/qfilt.f32"},
               "cannot read qfilter filters file '/nonexistent/qfilt.f32': no such file");
  const auto odd = std::filesystem::temp_directory_path() / "kvp_qfilter_odd.f32";
  std::ofstream(odd, std::ios::binary) << "12345";
  expect_error({"filters=" + odd.string()}, "not a non-empty whole number of float32");
}

TEST(PressParams, QFilterWrongShapeForTheModel) {
  KVP_REQUIRE_DEFAULT_MODEL();
  // 30 x 3 x 64 floats are needed; give one layer's worth.
  const auto path = std::filesystem::temp_directory_path() / "kvp_qfilter_short.f32";
  {
    std::ofstream out(path, std::ios::binary);
    const std::vector<float> f(3 * 64, 0.5f);
    out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size() * 4));
  }
  auto press = make_press("qfilter", 0.5, {"filters=" + path.string()});
  test::PressGoldenModel& g = test::press_golden_model();
  KVCache cache = g.model->make_cache(8);
  const std::vector<int32_t> ids = {1, 2, 3, 4}, pos = {0, 1, 2, 3};
  PressHook hook(*press, 0);
  try {
    g.model->forward(ids.data(), pos.data(), 4, cache, &hook);
    FAIL() << "no error for a filters file of the wrong size";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("30 x 3 x 64 = 5760"), std::string::npos) << e.what();
  }
}

}  // namespace kvp
