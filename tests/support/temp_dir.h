#pragma once
// A fresh, empty temporary folder named after the running test, removed afterwards.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace kvp::test {

inline std::filesystem::path make_test_dir(const std::string& prefix) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string leaf =
      prefix + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name();
  for (char& c : leaf)
    if (c == '/') c = '_';
  const auto dir = std::filesystem::temp_directory_path() / leaf;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace kvp::test
