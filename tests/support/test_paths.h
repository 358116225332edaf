#pragma once
// Paths of test inputs, relative to the source tree (KVP_SOURCE_DIR is set by CMake).
#include <filesystem>
#include <string>

namespace kvp::test {

inline std::string source_path(const std::string& relative) {
  return std::string(KVP_SOURCE_DIR) + "/" + relative;
}

inline std::string default_model_path() {
  return source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

inline bool default_model_present() {
  return std::filesystem::exists(default_model_path());
}

}  // namespace kvp::test

// Skips (loudly) a test that needs the default model when it has not been fetched.
#define KVP_REQUIRE_DEFAULT_MODEL()                                                      \
  do {                                                                                   \
    if (!::kvp::test::default_model_present())                                           \
      GTEST_SKIP() << "default model not fetched: run scripts/fetch-model.sh (CI does)"; \
  } while (0)
