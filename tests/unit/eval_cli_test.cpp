// `kvpress eval` end to end, in process: clear errors for bad input, and a tiny real run that
// writes every report and resumes from its own results.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/cli_runner.h"
#include "support/test_paths.h"

namespace kvp {

namespace {

using test::CliRun;

CliRun run(std::vector<std::string> args) {
  return test::run_kvpress(std::move(args));
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("kvp_eval_cli_test_" + name)).string();
}

std::string temp_file(const std::string& name, const std::string& bytes) {
  const std::string path = temp_path(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void expect_error(const CliRun& r, const std::string& fragment) {
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(fragment), std::string::npos) << "stderr was: " << r.err;
}

const std::string kRow =
    R"({"context": "The secret code is 4719. Remember it.", "question": "What is the secret code?", "answers": ["4719"]})";

}  // namespace

TEST(EvalCli, HelpAndArgumentErrors) {
  CliRun r = run({"eval", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--dataset"), std::string::npos);
  expect_error(run({"eval", "--press", "knorm", "--ratio", "0.5"}), "--dataset is required");
  expect_error(run({"eval", "--dataset", "builtin:ruler", "--ratio", "0.5"}),
               "--press is required");
  expect_error(run({"eval", "--dataset", "builtin:ruler", "--press", "knorm"}),
               "--ratio is required");
  expect_error(run({"eval", "--dataset", "builtin:ruler", "--press", "knrom", "--ratio", "0.5"}),
               "knrom");
  expect_error(
      run({"eval", "--dataset", "builtin:ruler", "--press", "knorm", "--ratio", "0.5,1.5"}),
      "--ratio 1.5 is outside [0, 1)");
  expect_error(run({"eval", "--dataset", "builtin:ruler", "--press", "knorm", "--ratio", "half"}),
               "--ratio expects numbers, got 'half'");
  expect_error(run({"eval", "--dataset", "builtin:ruler", "--press", "knorm,", "--ratio", "0.5"}),
               "empty item");
  expect_error(run({"eval", "--dataset", "builtin:ruler", "--press", "knorm", "--ratio", "0.5",
                    "--tasks", "niah_single_1,niah_singel_2"}),
               "unknown task 'niah_singel_2'");
  expect_error(run({"eval", "--dataset", "builtin:rulr", "--press", "knorm", "--ratio", "0.5"}),
               "unknown built-in dataset 'builtin:rulr'");
  expect_error(run({"eval", "--dataset", "builtin:ruler", "--press", "knorm", "--ratio", "0.5",
                    "--press-arg", "window_size=8"}),
               "no press in the grid has a parameter 'window_size'");
  expect_error(run({"eval", "--dataset", "builtin:ruler", "--press", "knorm", "--ratio", "0.5",
                    "--press-arg", "snapkv:window_size=8"}),
               "'snapkv', which is not in --press");
}

TEST(EvalCli, JsonlErrors) {
  const std::string bad = temp_file(
      "bad.jsonl", kRow + "\n\n" + R"({"context": "c", "question": "q", "answers": []})" + "\n");
  expect_error(run({"eval", "--dataset", bad, "--press", "knorm", "--ratio", "0.5"}),
               bad + " line 3: \"answers\" must be a non-empty list of strings");
  const std::string broken = temp_file("broken.jsonl", kRow + "\n{\"context\": \n");
  expect_error(run({"eval", "--dataset", broken, "--press", "knorm", "--ratio", "0.5"}),
               "line 2: not valid JSON");
  expect_error(
      run({"eval", "--dataset", "/nonexistent/x.jsonl", "--press", "knorm", "--ratio", "0.5"}),
      "cannot read dataset file");
  const std::string good = temp_file("good.jsonl", kRow + "\n");
  expect_error(
      run({"eval", "--dataset", good, "--press", "knorm", "--ratio", "0.5", "--tasks", "qa"}),
      "unknown task 'qa': " + good + " has the tasks jsonl");
  expect_error(run({"eval", "--dataset", good, "--press", "knorm", "--ratio", "0.5",
                    "--context-length", "100"}),
               "--context-length applies to builtin:ruler only");
}

TEST(EvalCli, ContextLengthTheModelCannotHold) {
  KVP_REQUIRE_DEFAULT_MODEL();
  expect_error(
      run({"eval", "--model", test::default_model_path(), "--dataset", "builtin:ruler", "--press",
           "knorm", "--ratio", "0.5", "--context-length", "100000", "--threads", "2"}),
      "--context-length 100000 does not fit the model: it holds 8192 positions");
  const std::string huge = temp_file(
      "huge.jsonl", kRow + "\n" + R"({"context": ")" + std::string(60000, 'a') + std::string(" b") +
                        R"(", "question": "q", "answers": ["a"]})" + "\n");
  expect_error(run({"eval", "--model", test::default_model_path(), "--dataset", huge, "--press",
                    "knorm", "--ratio", "0.5", "--threads", "2"}),
               "line 2: context, question and answer need");
}

TEST(EvalCli, TinyRunWritesReportsAndResumes) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const std::string data = temp_file(
      "tiny.jsonl",
      kRow + "\n" +
          R"({"context": "The secret code is 4719. Remember it.", "question": "Repeat the secret code.", "answers": ["4719"], "task": "re|peat"})" +
          "\n");
  const std::string out = temp_path("out");
  std::filesystem::remove_all(out);
  const std::vector<std::string> args = {"eval",
                                         "--model",
                                         test::default_model_path(),
                                         "--dataset",
                                         data,
                                         "--press",
                                         "knorm,streaming_llm",
                                         "--ratio",
                                         "0.25,0.5",
                                         "--out",
                                         out,
                                         "--max-new-tokens",
                                         "10",
                                         "--threads",
                                         "2"};
  CliRun r = run(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("| baseline |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| knorm |"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("1 contexts (1 run, 0 already"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("contexts"), std::string::npos);  // the progress bar
  for (const char* f :
       {"results.csv", "results.json", "results.md", "results.svg", "cells.jsonl"}) {
    EXPECT_TRUE(std::filesystem::exists(out + "/" + f)) << f;
  }
  const auto j = nlohmann::json::parse(read(out + "/results.json"));
  EXPECT_EQ(j["results"].size(), 10u);  // (baseline + 2 presses x 2 ratios) x 2 tasks
  EXPECT_NE(read(out + "/results.csv").find("knorm,0.25,re|peat,"), std::string::npos);
  EXPECT_NE(read(out + "/results.csv").find("baseline,0.0,jsonl,100.00,1"), std::string::npos)
      << read(out + "/cells.jsonl");
  EXPECT_EQ(read(out + "/results.svg").rfind("<svg", 0), 0u);
  // The reports read alone: a title, the model, the dataset and the metric; a '|' in a task
  // name stays inside its cell; one row per task is "1 row", not "1 rows".
  const std::string md = read(out + "/results.md");
  EXPECT_EQ(md.rfind("# kvpress eval", 0), 0u) << md;
  EXPECT_NE(md.find("- model: `" + test::default_model_path() + "`"), std::string::npos) << md;
  EXPECT_NE(md.find("- dataset: `" + data + "`"), std::string::npos) << md;
  EXPECT_NE(md.find("string_match_all"), std::string::npos) << md;
  EXPECT_NE(md.find("| re\\|peat |"), std::string::npos) << md;
  EXPECT_EQ(j["dataset"], data);
  EXPECT_EQ(j["metrics"]["re|peat"], "all");
  EXPECT_TRUE(j.contains("samples_per_task") && j.contains("seed") && j.contains("score"));
  const std::string svg = read(out + "/results.svg");
  EXPECT_NE(svg.find("2 tasks, 1 row each"), std::string::npos);
  EXPECT_EQ(svg.find("1 rows"), std::string::npos);

  // Everything is already there: nothing runs again, same results.
  const std::string before = read(out + "/results.csv");
  r = run(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("1 contexts (0 run, 1 already"), std::string::npos) << r.err;
  EXPECT_EQ(read(out + "/results.csv"), before);
  // A new ratio runs only its own cells.
  std::vector<std::string> more = args;
  more[8] = "0.25,0.5,0.75";
  r = run(more);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("1 contexts (1 run, 0 already"), std::string::npos) << r.err;
  EXPECT_EQ(nlohmann::json::parse(read(out + "/results.json"))["results"].size(), 14u);
  std::filesystem::remove_all(out);
}

}  // namespace kvp
