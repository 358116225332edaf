#pragma once
// Runs the kvpress command line in process and captures its exit code and output.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli/cli.h"

namespace kvp::test {

struct CliRun {
  int code;
  std::string out, err;
};

// args exclude the program name.
inline CliRun run_kvpress(std::vector<std::string> args) {
  args.insert(args.begin(), "kvpress");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int code = run_cli(static_cast<int>(argv.size()), argv.data());
  CliRun r{code, testing::internal::GetCapturedStdout(), testing::internal::GetCapturedStderr()};
  return r;
}

}  // namespace kvp::test
