#pragma once
// Paths of test inputs, relative to the source tree (KVP_SOURCE_DIR is set by CMake).
#include <cstdlib>
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

// scripts/test.sh (and so CI) fetches the model and sets KVP_REQUIRE_MODEL=1: there a test
// that would skip for want of the model fails instead.
inline bool model_required() {
  const char* v = std::getenv("KVP_REQUIRE_MODEL");
  return v != nullptr && std::string(v) == "1";
}

}  // namespace kvp::test

// Skips (loudly) a test that needs the default model when it has not been fetched; fails
// instead under KVP_REQUIRE_MODEL=1 (scripts/test.sh, CI).
#define KVP_REQUIRE_DEFAULT_MODEL()                                                      \
  do {                                                                                   \
    if (!::kvp::test::default_model_present()) {                                         \
      if (::kvp::test::model_required())                                                 \
        GTEST_FAIL() << "default model missing under KVP_REQUIRE_MODEL=1: " +            \
                            ::kvp::test::default_model_path();                           \
      GTEST_SKIP() << "default model not fetched: run scripts/fetch-model.sh (CI does)"; \
    }                                                                                    \
  } while (0)
