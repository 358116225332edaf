// snapkv, pyramidkv and tova against kvpress's goldens, and snapkv on a context shorter than
// its window (kvpress.cpp extension) through the command line.
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/error.h"
#include "support/cli_runner.h"
#include "support/press_golden.h"

namespace kvp {

TEST(PressGolden, SnapKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* r : {"0.25", "0.5"}) {
    auto press = make_press("snapkv", std::stod(r));
    test::check_press_cell(std::string("snapkv_") + r, *press);
  }
}

TEST(PressGolden, Tova) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* r : {"0.25", "0.5"}) {
    auto press = make_press("tova", std::stod(r));
    test::check_press_cell(std::string("tova_") + r, *press);
  }
}

TEST(PressGolden, PyramidKv) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const int64_t T = 1071;
  for (const char* r : {"0.25", "0.5"}) {
    auto press = make_press("pyramidkv", std::stod(r));
    const auto res = test::check_press_cell(std::string("pyramidkv_") + r, *press);
    // Clamped branch: 1007 rows at layer 0 (T - W + ... = max), down to the last layer.
    const auto want = test::press_golden_cell(std::string("pyramidkv_") + r).at("kept_lengths");
    for (size_t l = 0; l < res.head_lens.size(); ++l)
      for (size_t h = 0; h < res.head_lens[l].size(); ++h)
        EXPECT_EQ(res.head_lens[l][h], want[l][h].get<int64_t>()) << "layer " << l << " head " << h;
    EXPECT_EQ(res.head_lens.front().front(), T - 64);
  }
  for (const char* r : {"0.25", "0.5"}) {
    auto press = make_press("pyramidkv", std::stod(r), {"beta=4"});
    const auto res = test::check_press_cell(std::string("pyramidkv_beta4_") + r, *press);
    const auto want =
        test::press_golden_cell(std::string("pyramidkv_beta4_") + r).at("kept_lengths");
    for (size_t l = 0; l < res.head_lens.size(); ++l)
      for (size_t h = 0; h < res.head_lens[l].size(); ++h)
        EXPECT_EQ(res.head_lens[l][h], want[l][h].get<int64_t>()) << "layer " << l << " head " << h;
  }
}

TEST(PressParams, SnapKvFamily) {
  EXPECT_THROW(make_press("snapkv", 0.5, {"kernel_size=4"}), Error);
  EXPECT_THROW(make_press("snapkv", 0.5, {"window_size=0"}), Error);
  EXPECT_THROW(make_press("pyramidkv", 0.5, {"beta=0"}), Error);
  EXPECT_THROW(make_press("tova", 0.5, {"window_size=3"}), Error);
  auto p = make_press("pyramidkv", 0.5);
  EXPECT_EQ(p->params().at("beta").get<int64_t>(), 20);
  EXPECT_EQ(p->params().at("window_size").get<int64_t>(), 64);
  EXPECT_EQ(p->params().at("kernel_size").get<int64_t>(), 5);
}

// kvpress asserts T > window_size; we use an effective window of
// max(1, min(window_size, n_kept / 2)) instead: the 37-token secret prompt must still answer.
TEST(PressShortContext, SnapKvOnTheSecretCodePrompt) {
  KVP_REQUIRE_DEFAULT_MODEL();
  for (const char* press : {"snapkv", "pyramidkv"}) {
    const test::CliRun r =
        test::run_kvpress({"generate", "--context", "The secret code is 4719. Remember it.",
                           "--question", "What is the secret code?", "--press", press, "--ratio",
                           "0.25", "--json", "--threads", "2"});
    const std::string& out = r.out;
    ASSERT_EQ(r.code, 0) << press << ": " << r.err;
    const auto j = nlohmann::json::parse(out);
    const int64_t T = j.at("context_tokens").get<int64_t>();
    EXPECT_LE(T, 64) << "the test needs a context shorter than the window";
    EXPECT_NE(j["answers"][0].at("answer").get<std::string>().find("4719"), std::string::npos)
        << press << ": " << out;
    // Compressed as asked: int(T * 0.75) rows per head (pyramidkv: its uniform fallback).
    for (const auto& layer : j.at("compression").at("head_lens"))
      for (const auto& len : layer) EXPECT_LT(len.get<int64_t>(), T) << press;
  }
}

}  // namespace kvp
