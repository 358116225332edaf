// Hostile and careless use of the command line and the press catalog (issue 16): every case
// ends in a one-line error and a non-zero exit, never a crash, a hang or an unbounded read.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "presses/registry.h"
#include "support/cli_runner.h"

namespace kvp {

namespace {

void expect_error(const test::CliRun& r, const std::string& fragment) {
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("error: " + fragment), std::string::npos) << "stderr was: " << r.err;
  EXPECT_LT(r.err.size(), 400u) << "an error is one short line";
}

// Presses are built before the model loads, so a missing model file is never reached.
test::CliRun generate_with(const std::vector<std::string>& press_args) {
  std::vector<std::string> a = {"generate",   "--model", "/nonexistent.gguf", "--context", "x",
                                "--question", "y"};
  a.insert(a.end(), press_args.begin(), press_args.end());
  return test::run_kvpress(a);
}

std::vector<std::string> wrappers() {
  std::vector<std::string> out;
  for (const auto& p : press_catalog())
    if (is_wrapper_press(p.name)) out.push_back(p.name);
  return out;
}

}  // namespace

TEST(HostilePresses, NoWrapperNestsAnother) {
  const auto all = wrappers();
  ASSERT_GE(all.size(), 6u);  // adakv, critical_adakv, chunk, chunkkv, criticalkv, composed, ...
  for (const auto& outer : all) {
    if (outer == "composed") continue;  // its stages have their own key: below
    for (const auto& inner : all)
      EXPECT_THROW(make_press(outer, 0.5, {"press=" + inner}), Error) << outer << " on " << inner;
  }
  // composed's stages come from presses=, so a stage may be a press= wrapper (bounded: that
  // wrapper's own inner press cannot be a wrapper), but not another composed press.
  EXPECT_NO_THROW(make_press("composed", 0.5, {"presses=chunk,knorm"}));
  EXPECT_THROW(make_press("composed", 0.5, {"presses=composed"}), Error);
  EXPECT_THROW(make_press("composed", 0.5, {"presses=chunk", "press=adakv"}), Error);
  EXPECT_THROW(make_press("chunk", 0.5, {"press=composed", "presses=chunk"}), Error);
}

TEST(HostilePresses, TheIssueCasesOnTheCommandLine) {
  expect_error(generate_with({"--press", "adakv", "--press-arg", "press=adakv"}),
               "adakv: cannot wrap itself");
  expect_error(generate_with({"--press", "adakv", "--press-arg", "press=critical_adakv"}),
               "adakv: the inner press 'critical_adakv' is itself a wrapper");
  expect_error(generate_with({"--press", "critical_adakv", "--press-arg", "press=adakv"}),
               "critical_adakv: the inner press 'adakv' is itself a wrapper");
  expect_error(generate_with({"--press", "chunk", "--press-arg", "press=adakv"}),
               "chunk: the inner press 'adakv' is itself a wrapper");
  // Used to blame chunk ("chunk: cannot wrap itself").
  expect_error(generate_with({"--press", "adakv", "--press-arg", "press=chunk"}),
               "adakv: the inner press 'chunk' is itself a wrapper");
  expect_error(
      test::run_kvpress({"eval", "--model", "/nonexistent.gguf", "--dataset", "builtin:ruler",
                         "--press", "adakv", "--ratio", "0.5", "--press-arg", "press=adakv"}),
      "adakv: cannot wrap itself");
}

TEST(HostilePresses, WorkParametersAreBounded) {
  const auto t0 = std::chrono::steady_clock::now();
  expect_error(generate_with({"--press", "expected_attention", "--press-arg",
                              "n_future_positions=2147483647"}),
               "press parameter n_future_positions must be between 1 and 65536");
  expect_error(generate_with({"--press", "ada_expected_attention", "--press-arg",
                              "n_future_positions=1000000"}),
               "press parameter n_future_positions must be between 1 and 65536");
  expect_error(generate_with({"--press", "snapkv", "--press-arg", "kernel_size=99999999"}),
               "press parameter kernel_size must be between 1 and 4095");
  expect_error(generate_with({"--press", "pyramidkv", "--press-arg", "window_size=9999999999"}),
               "press parameter window_size must be between 1 and 1048576");
  expect_error(generate_with({"--press", "ada_snapkv", "--press-arg", "kernel_size=9999"}),
               "press parameter kernel_size must be between 1 and 4095");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(HostilePresses, NonFiniteEpsilonIsRefused) {
  for (const char* press : {"expected_attention", "ada_expected_attention"})
    for (const char* v : {"nan", "inf", "-inf"})
      expect_error(generate_with({"--press", press, "--press-arg", std::string("epsilon=") + v}),
                   "press parameter epsilon must be a finite number");
}

TEST(HostilePresses, AdaSnapKvNamesItself) {
  EXPECT_EQ(make_press("ada_snapkv", 0.5)->name(), "ada_snapkv");
  EXPECT_EQ(make_press("ada_expected_attention", 0.5)->name(), "ada_expected_attention");
  EXPECT_EQ(make_press("adakv", 0.5, {"press=knorm"})->name(), "adakv");
  EXPECT_EQ(make_press("critical_adakv", 0.5)->name(), "critical_adakv");
}

TEST(HostileFiles, ContextFromADeviceStopsAtTheCap) {
  expect_error(test::run_kvpress({"generate", "--model", "/nonexistent.gguf", "--context",
                                  "@/dev/zero", "--question", "y"}),
               "context file '/dev/zero' is larger than the 16 MiB cap");
}

TEST(HostileFiles, ContextFromADirectoryOrNothing) {
  const auto dir = std::filesystem::temp_directory_path().string();
  expect_error(test::run_kvpress({"generate", "--context", "@" + dir, "--question", "y"}),
               "context file '" + dir + "' is a directory, not a file");
  expect_error(
      test::run_kvpress({"generate", "--context", "@/nonexistent/file.txt", "--question", "y"}),
      "cannot read context file '/nonexistent/file.txt': no such file");
}

TEST(HostileFiles, QFilterFiltersFromADevice) {
  expect_error(generate_with({"--press", "qfilter", "--press-arg", "filters=/dev/zero"}),
               "qfilter filters file '/dev/zero' is not a regular file");
  expect_error(generate_with({"--press", "qfilter", "--press-arg", "filters=/nonexistent"}),
               "cannot read qfilter filters file '/nonexistent': no such file");
}

TEST(Newcomer, ShortHelpVersionAndHelpCommand) {
  test::CliRun r = test::run_kvpress({"generate", "-h"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("usage: kvpress generate"), std::string::npos);
  r = test::run_kvpress({"help", "eval"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("usage: kvpress eval"), std::string::npos);
  r = test::run_kvpress({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out.rfind("kvpress ", 0), 0u) << r.out;
  r = test::run_kvpress({"presses", "-h"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("usage: kvpress presses"), std::string::npos);
}

TEST(Newcomer, StrayPositionalArgumentsAreErrors) {
  expect_error(test::run_kvpress({"presses", "snapkv"}), "unexpected argument 'snapkv'");
  expect_error(test::run_kvpress({"generate", "--context", "x", "what", "--question", "y"}),
               "unexpected argument 'what'");
  expect_error(test::run_kvpress({"help", "generate", "extra"}), "unexpected argument 'extra'");
}

}  // namespace kvp
