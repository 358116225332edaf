// Parity of `kvpress eval` with kvpress's own pipeline: for the 20 rows of
// tests/golden/eval_parity/rows.jsonl, the grid's per-row answers and scores for
// snapkv 0.5 and ada_snapkv 0.5 equal those of KVPressTextGenerationPipeline with
// SnapKVPress(0.5) and AdaKVPress(SnapKVPress(0.5)) (greedy, max_new_tokens 64), recorded by
// tools/reference/eval_parity/make_eval_parity.py in kvpress_answers.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/cli.h"
#include "support/temp_dir.h"
#include "support/test_paths.h"

namespace kvp {

namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(static_cast<bool>(in)) << "cannot read " << path;
  return nlohmann::json::parse(in);
}

TEST(EvalParity, GridAnswersAndScoresEqualKvpressPipeline) {
  KVP_REQUIRE_DEFAULT_MODEL();
  namespace fs = std::filesystem;
  const std::string golden_dir = test::source_path("tests/golden/eval_parity");
  if (!fs::exists(golden_dir + "/kvpress_answers.json"))
    GTEST_FAIL() << "tests/golden/eval_parity/kvpress_answers.json missing (committed golden): run "
                    "tools/reference/eval_parity/make_eval_parity.py";
  const nlohmann::json golden = read_json(golden_dir + "/kvpress_answers.json");
  // A fresh folder of this process's own (no resumed cells: every row is run here; and no
  // other checkout's run of this test, at the same time, shares it).
  const fs::path out = test::make_test_dir("kvp_eval_parity_");

  std::vector<std::string> args = {"kvpress",
                                   "eval",
                                   "--dataset",
                                   golden_dir + "/rows.jsonl",
                                   "--press",
                                   "snapkv,ada_snapkv",
                                   "--ratio",
                                   "0.5",
                                   "--max-new-tokens",
                                   std::to_string(golden["max_new_tokens"].get<int>()),
                                   "--model",
                                   test::default_model_path(),
                                   "--no-progress",
                                   "--json",
                                   "--out",
                                   out.string()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int code = run_cli(static_cast<int>(argv.size()), argv.data());
  const std::string stdout_text = testing::internal::GetCapturedStdout();
  const std::string stderr_text = testing::internal::GetCapturedStderr();
  ASSERT_EQ(code, 0) << stderr_text;

  // Our per-row results: press -> row -> record.
  std::map<std::string, std::map<int, nlohmann::json>> ours;
  {
    std::ifstream in(out / "cells.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line);
      ours[j["press"].get<std::string>()][j["row"].get<int>()] = j;
    }
  }
  const nlohmann::json results = nlohmann::json::parse(stdout_text);

  for (const auto& [press, cell] : golden["cells"].items()) {
    SCOPED_TRACE("cell " + press);
    ASSERT_TRUE(ours.count(press)) << "no results for " << press;
    int identical = 0, n = 0;
    double score_sum = 0;
    for (const auto& want : cell["rows"]) {
      const int row = want["row"].get<int>();
      ++n;
      ASSERT_TRUE(ours[press].count(row)) << press << " row " << row << " missing";
      const auto& got = ours[press][row];
      const std::string a_got = got["answer"].get<std::string>();
      const std::string a_want = want["answer"].get<std::string>();
      EXPECT_EQ(a_got, a_want) << press << " row " << row;
      EXPECT_DOUBLE_EQ(got["score"].get<double>(), want["score"].get<double>())
          << press << " row " << row;
      identical += a_got == a_want ? 1 : 0;
      score_sum += got["score"].get<double>();
    }
    std::printf("eval parity %-10s %d/%d answers identical\n", press.c_str(), identical, n);
    EXPECT_NEAR(100.0 * score_sum / n, cell["mean_score"].get<double>(), 1e-9);
    // The reported average over tasks (one row set, several tasks) matches the golden rows'
    // per-task means.
    std::map<std::string, std::pair<double, int>> per_task;
    std::ifstream rows_in(golden_dir + "/rows.jsonl");
    std::vector<std::string> tasks;
    for (std::string line; std::getline(rows_in, line);) {
      if (!line.empty()) tasks.push_back(nlohmann::json::parse(line)["task"].get<std::string>());
    }
    for (const auto& want : cell["rows"]) {
      auto& t = per_task[tasks.at(want["row"].get<size_t>())];
      t.first += want["score"].get<double>();
      t.second += 1;
    }
    for (const auto& r : results["results"]) {
      if (r["press"].get<std::string>() != press) continue;
      const auto& t = per_task.at(r["task"].get<std::string>());
      EXPECT_NEAR(r["score"].get<double>(), 100.0 * t.first / t.second, 1e-9)
          << press << " task " << r["task"];
    }
  }
  fs::remove_all(out);
}

}  // namespace

}  // namespace kvp
