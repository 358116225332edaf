// The command line end to end, in process: answers, JSON shape, and clear errors with a
// non-zero exit for bad input.
#include "cli/cli.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "support/cli_runner.h"
#include "support/test_paths.h"

namespace kvp {

namespace {

using test::CliRun;

CliRun run(std::vector<std::string> args) {
  return test::run_kvpress(std::move(args));
}

std::string temp_file(const std::string& name, const std::string& bytes) {
  const auto path = std::filesystem::temp_directory_path() / ("kvp_cli_test_" + name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path.string();
}

std::string read_prefix(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string s(n, '\0');
  in.read(s.data(), static_cast<std::streamsize>(n));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

void expect_error(const CliRun& r, const std::string& fragment) {
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(fragment), std::string::npos) << "stderr was: " << r.err;
}

const std::string kSecret = "The secret code is 4719. Remember it.";

}  // namespace

TEST(Cli, HelpAndUnknownCommand) {
  CliRun r = run({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("generate"), std::string::npos);
  r = run({"generate", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--question"), std::string::npos);
  expect_error(run({"generat"}), "did you mean 'generate'");
  expect_error(run({"generate", "--contxt", "x"}), "did you mean --context");
}

TEST(Cli, MissingArguments) {
  expect_error(run({"generate", "--question", "q"}), "--context is required");
  expect_error(run({"generate", "--context", "c"}), "--question is required");
  expect_error(run({"generate", "--context", "c", "--question", "q", "--max-new-tokens", "ten"}),
               "expects an integer");
  expect_error(run({"generate", "--context", "@/nonexistent/ctx.txt", "--question", "q"}),
               "cannot read context file");
}

TEST(Cli, MissingAndCorruptModels) {
  expect_error(
      run({"generate", "--model", "/nonexistent/model.gguf", "--context", "c", "--question", "q"}),
      "/nonexistent/model.gguf");
  expect_error(run({"generate", "--model", temp_file("garbage.gguf", "this is not a model"),
                    "--context", "c", "--question", "q"}),
               "garbage.gguf");
  // A directory without config.json.
  const auto dir = std::filesystem::temp_directory_path() / "kvp_cli_test_empty_dir";
  std::filesystem::create_directories(dir);
  expect_error(run({"generate", "--model", dir.string(), "--context", "c", "--question", "q"}),
               "config.json");
}

TEST(Cli, TruncatedDefaultModel) {
  KVP_REQUIRE_DEFAULT_MODEL();
  // The header and part of the tensor data: every tensor must be found out of bounds.
  const std::string path =
      temp_file("truncated.gguf", read_prefix(test::default_model_path(), 4 << 20));
  expect_error(run({"generate", "--model", path, "--context", "c", "--question", "q"}),
               "truncated.gguf");
}

TEST(Cli, UnsupportedArchitecture) {
  const auto dir = std::filesystem::temp_directory_path() / "kvp_cli_test_gpt2";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"model_type": "gpt2", "n_layer": 2})";
  expect_error(run({"generate", "--model", dir.string(), "--context", "c", "--question", "q"}),
               "unsupported architecture 'gpt2'");
}

TEST(Cli, EmptyAndOverlongContext) {
  KVP_REQUIRE_DEFAULT_MODEL();
  expect_error(run({"generate", "--context", "", "--question", "q"}), "context is empty");
  expect_error(run({"generate", "--context", "@" + temp_file("empty.txt", ""), "--question", "q"}),
               "context is empty");
  std::string long_text;
  for (int i = 0; i < 3500; ++i) long_text += "word and more ";  // ~10500 tokens > 8192
  expect_error(run({"generate", "--context", "@" + temp_file("long.txt", long_text), "--question",
                    "q", "--threads", "2"}),
               "exceeds the model's maximum of 8192 positions");
}

TEST(Cli, AnswersTheSecretCodeQuestionAsJson) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const CliRun r = run({"generate", "--context", kSecret, "--question", "What is the secret code?",
                        "--json", "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.at("answers").size(), 1u);
  EXPECT_NE(j["answers"][0].at("answer").get<std::string>().find("4719"), std::string::npos)
      << r.out;
  EXPECT_GT(j["answers"][0].at("tokens").get<int>(), 0);
  EXPECT_GT(j.at("context_tokens").get<int>(), 10);
  EXPECT_GT(j.at("timing").at("prefill_s").get<double>(), 0);
  EXPECT_GT(j.at("timing").at("decode_tokens_per_s").get<double>(), 0);
}

// Sampling: temperature 0 is the greedy answer; a seed gives the same answer twice; the
// sampler's parameters are checked.
TEST(Cli, SamplingIsSeededAndGreedyAtZero) {
  KVP_REQUIRE_DEFAULT_MODEL();
  auto answer = [](std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "generate", "--context",        kSecret, "--question", "Write a short poem about the code.",
        "--json",   "--max-new-tokens", "16",    "--threads",  "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    const CliRun r = run(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return nlohmann::json::parse(r.out).at("answers")[0].at("answer").get<std::string>();
  };
  const std::string greedy = answer({});
  EXPECT_EQ(answer({"--temperature", "0"}), greedy);
  const std::string hot = answer({"--temperature", "1.5", "--seed", "11"});
  EXPECT_EQ(answer({"--temperature", "1.5", "--seed", "11"}), hot);
  std::set<std::string> seen;
  for (const char* seed : {"1", "2", "3"})
    seen.insert(answer({"--temperature", "1.5", "--top-k", "50", "--seed", seed}));
  EXPECT_GT(seen.size(), 1u) << "three seeds at temperature 1.5 gave one answer";
  EXPECT_EQ(answer({"--temperature", "1.5", "--top-k", "1", "--seed", "4"}), greedy);
  expect_error(run({"generate", "--context", kSecret, "--question", "q", "--temperature", "1",
                    "--top-p", "0"}),
               "top_p must be in (0, 1]");
  expect_error(run({"generate", "--context", kSecret, "--question", "q", "--seed", "3"}),
               "need --temperature above 0");
}

TEST(Cli, SeveralQuestionsShareOneContext) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const CliRun r =
      run({"generate", "--context", kSecret, "--question", "What is the secret code?", "--question",
           "Repeat the secret code.", "--json", "--max-new-tokens", "24"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.at("answers").size(), 2u);
  // The first answer must not depend on the second question having been asked after it:
  // the cache is truncated back between questions.
  const CliRun single = run({"generate", "--context", kSecret, "--question",
                             "Repeat the secret code.", "--json", "--max-new-tokens", "24"});
  ASSERT_EQ(single.code, 0);
  EXPECT_EQ(j["answers"][1]["answer"], nlohmann::json::parse(single.out)["answers"][0]["answer"]);
}

}  // namespace kvp
