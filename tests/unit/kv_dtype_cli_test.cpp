// --kv-dtype and --device from the command line: a half-precision cache halves the context's
// bytes in --json (and the reserve's), says its type, and still answers; bad values are
// one-line errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "backend/factory.h"
#include "support/cli_runner.h"
#include "support/test_paths.h"

namespace kvp {
namespace {

nlohmann::json generate(const std::string& dtype) {
  const test::CliRun r = test::run_kvpress(
      {"generate", "--press", "snapkv", "--ratio", "0.5", "--press-arg", "window_size=4",
       "--kv-dtype", dtype, "--context",
       "The secret code is 4719. The meeting is on Tuesday in the blue room. Remember both.",
       "--question", "What is the secret code?", "--max-new-tokens", "8", "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

TEST(KvDtypeCli, HalfTypesHalveTheReportedBytes) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const nlohmann::json f32 = generate("f32");
  EXPECT_EQ(f32.at("compression").at("kv_dtype"), "f32");
  EXPECT_EQ(f32.at("timing").at("device"), "cpu");
  for (const char* half : {"f16", "bf16"}) {
    const nlohmann::json j = generate(half);
    const auto& c = j.at("compression");
    const auto& c32 = f32.at("compression");
    EXPECT_EQ(c.at("kv_dtype"), half);
    for (const char* field : {"context_kv_bytes_before", "context_kv_bytes_after",
                              "reserve_kv_bytes", "allocated_kv_bytes"})
      EXPECT_EQ(2 * c.at(field).get<int64_t>(), c32.at(field).get<int64_t>())
          << half << " " << field;
    EXPECT_EQ(c.at("head_lens"), c32.at("head_lens")) << half;
    EXPECT_FALSE(j.at("answers")[0].at("answer").get<std::string>().empty()) << half;
  }
}

TEST(KvDtypeCli, BadValuesAreOneLineErrors) {
  test::CliRun r =
      test::run_kvpress({"generate", "--context", "x", "--question", "y", "--kv-dtype", "q8_0"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--kv-dtype must be f32, f16 or bf16, not 'q8_0'"), std::string::npos)
      << r.err;
  if (cuda_gpus() == 0) {  // with a GPU, --device cuda runs (the GPU tests cover it)
    r = test::run_kvpress({"generate", "--context", "x", "--question", "y", "--device", "cuda"});
    EXPECT_NE(r.code, 0);
    const char* want = cuda_built() ? "no CUDA GPU is visible" : "no CUDA backend";
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
  }
  r = test::run_kvpress({"eval", "--dataset", "builtin:ruler", "--press", "knorm", "--ratio", "0.5",
                         "--device", "tpu"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("unknown device 'tpu'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kvp
