// The forward pass and the pipeline on the GPU against the CPU and transformers: logits of
// the default model and the tiny goldens, greedy continuations, and generate's answers with
// presses. Skipped, with a message, where this build has no CUDA backend or there is no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "backend/factory.h"
#include "io/json_file.h"
#include "model/model.h"
#include "support/backend_ops.h"
#include "support/cli_runner.h"
#include "support/test_paths.h"

namespace kvp {
namespace {

#define KVP_REQUIRE_GPU()                                                                 \
  do {                                                                                    \
    if (!cuda_built()) GTEST_SKIP() << "this build has no CUDA backend (-DKVP_CUDA=OFF)"; \
    KVP_SKIP_WITHOUT_DEVICE(std::string("cuda"));                                         \
  } while (0)

std::vector<float> read_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  EXPECT_TRUE(in) << path;
  std::vector<float> out(static_cast<size_t>(in.tellg()) / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(out.data()),
          static_cast<std::streamsize>(out.size() * sizeof(float)));
  return out;
}

std::vector<float> host_logits(Model& model, const Tensor& logits) {
  std::vector<float> out(static_cast<size_t>(logits.numel()));
  model.backend().download(logits, 0, out.data(), logits.nbytes());
  return out;
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Prefill `ids`, compare the last logits with `want` (max |diff| <= bound), then 32 greedy
// steps must give `greedy`.
void check_prompt(Model& model, const std::vector<int32_t>& ids, const std::vector<float>& want,
                  const std::vector<int32_t>& greedy, float bound, const std::string& what) {
  const int64_t T = static_cast<int64_t>(ids.size());
  KVCache cache = model.make_cache(T + static_cast<int64_t>(greedy.size()));
  std::vector<int32_t> pos(ids.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  std::vector<float> logits = host_logits(model, model.forward(ids.data(), pos.data(), T, cache));
  ASSERT_EQ(logits.size(), want.size()) << what;
  const float diff = max_diff(logits, want);
  EXPECT_LE(diff, bound) << what;
  std::printf("[ info ] %s on cuda: max |logit - reference| = %.3g (bound %.3g)\n", what.c_str(),
              diff, bound);
  std::vector<int32_t> got;
  int32_t next = argmax(logits), p = static_cast<int32_t>(T);
  for (size_t step = 0; step < greedy.size(); ++step) {
    got.push_back(next);
    if (step + 1 == greedy.size()) break;
    next = argmax(host_logits(model, model.forward(&next, &p, 1, cache)));
    ++p;
  }
  EXPECT_EQ(got, greedy) << what << ": greedy continuation";
}

// The tiny models keep their stored type on the GPU (F32, F16, BF16 matrices); prefill rows
// beyond 8 go through cuBLAS with x rounded to the weight type (2^-11 relative for F16,
// 2^-8 for BF16, per product, through every layer): BF16 activations, as transformers runs
// a BF16 model. Bounds: F32 1e-3 (the CPU's), F16 1e-2, BF16 0.1 (measured on the H200:
// 2e-6, 6e-3 and 4.9e-2 at most).
void run_tiny(const std::string& arch, float bound) {
  const auto golden = read_json_file(test::source_path("tests/golden/tiny_" + arch + ".json"));
  auto backend = make_backend("cuda", 1);
  auto model = load_model(test::source_path(golden.at("model_dir").get<std::string>()), *backend);
  int i = 0;
  for (const auto& prompt : golden.at("prompts"))
    check_prompt(*model, prompt.at("ids").get<std::vector<int32_t>>(),
                 prompt.at("logits").get<std::vector<float>>(),
                 prompt.at("greedy").get<std::vector<int32_t>>(), bound,
                 "tiny-" + arch + " prompt " + std::to_string(i++));
}

TEST(CudaModel, TinyLlamaF32MatchesTransformers) {
  KVP_REQUIRE_GPU();
  run_tiny("llama", 1e-3f);
}
TEST(CudaModel, TinyQwen2F16MatchesTransformers) {
  KVP_REQUIRE_GPU();
  run_tiny("qwen2", 1e-2f);
}
TEST(CudaModel, TinyQwen3BF16MatchesTransformers) {
  KVP_REQUIRE_GPU();
  run_tiny("qwen3", 0.1f);
}

// SmolLM2 Q4_1: the GPU holds the dequantised weights as BF16 (each rounded by at most 2^-9
// relative) and rounds activations to BF16 for prefill products; the CPU computes on the Q4_1
// weights exactly. Bound on the last logits, against the CPU and against transformers: 0.25
// (logits reach |20|: about 1% of their range); the greedy tokens must equal the reference's.
TEST(CudaModel, SmolLM2LogitsMatchCpuAndTransformers) {
  KVP_REQUIRE_GPU();
  KVP_REQUIRE_DEFAULT_MODEL();
  const auto golden = read_json_file(test::source_path("tests/golden/smollm2_logits.json"));
  auto gpu = make_backend("cuda", 1);
  auto cpu = make_backend("cpu", 4);
  auto gmodel = load_model(test::default_model_path(), *gpu);
  auto cmodel = load_model(test::default_model_path(), *cpu);
  int i = 0;
  for (const auto& prompt : golden.at("prompts")) {
    const auto ids = prompt.at("ids").get<std::vector<int32_t>>();
    const auto want =
        read_f32(test::source_path("tests/golden/" + prompt.at("logits_file").get<std::string>()));
    const std::string what = "smollm2 prompt " + std::to_string(i++);
    check_prompt(*gmodel, ids, want, prompt.at("greedy").get<std::vector<int32_t>>(), 0.25f, what);
    KVCache gc = gmodel->make_cache(static_cast<int64_t>(ids.size()));
    KVCache cc = cmodel->make_cache(static_cast<int64_t>(ids.size()));
    std::vector<int32_t> pos(ids.size());
    for (size_t p = 0; p < pos.size(); ++p) pos[p] = static_cast<int32_t>(p);
    const auto g = host_logits(
        *gmodel, gmodel->forward(ids.data(), pos.data(), static_cast<int64_t>(ids.size()), gc));
    const auto c = host_logits(
        *cmodel, cmodel->forward(ids.data(), pos.data(), static_cast<int64_t>(ids.size()), cc));
    const float diff = max_diff(g, c);
    EXPECT_LE(diff, 0.25f) << what << " against the CPU";
    std::printf("[ info ] %s: max |cuda - cpu logit| = %.3g (bound 0.25)\n", what.c_str(), diff);
  }
}

// generate on the GPU gives the CPU's answers with presses (the pipeline: one prefill,
// compression, questions from the shared cache). With KVP_CUDA_WEIGHTS=f32 the GPU computes
// on the CPU's weights (dequantised to f32) and the answers must be identical; with the
// default BF16 weights an answer may part from the CPU's only where two tokens are nearer
// than BF16 rounding moves logits (up to 0.19 on the prompts above): the test prints both.
void generate_on_both(const char* weights, bool must_match) {
  setenv("KVP_CUDA_WEIGHTS", weights, 1);
  const std::string context =
      "The lighthouse keeper of Port Elna was a woman named Ysolde Marrak. Every evening she "
      "climbed the 214 steps of the tower and lit the lamp, which could be seen 19 nautical "
      "miles away. Her brother Teodor ran the harbour's only bakery, famous for its rye bread "
      "with caraway seeds. In 1911 a storm destroyed the pier, and the town rebuilt it in "
      "stone the following spring. The secret passphrase of the harbour guild is "
      "'amber-heron-42'. Ysolde kept a logbook of every ship that passed.";
  for (const char* press : {"knorm", "snapkv", "ada_snapkv"}) {
    std::string answers[2];
    int d = 0;
    for (const char* device : {"cpu", "cuda"}) {
      const test::CliRun r = test::run_kvpress(
          {"generate", "--context", context, "--question", "What is the secret passphrase?",
           "--question", "How many steps does the tower have?", "--press", press, "--ratio", "0.5",
           "--device", device, "--max-new-tokens", "24", "--json"});
      ASSERT_EQ(r.code, 0) << press << " on " << device << ": " << r.err;
      answers[d++] = nlohmann::json::parse(r.out).at("answers").dump();
    }
    if (must_match) {
      EXPECT_EQ(answers[0], answers[1]) << press << " with " << weights << " weights";
    }
    std::printf("[ info ] %s, %s weights: %s\n[ info ]   cpu  %s\n[ info ]   cuda %s\n", press,
                weights, answers[0] == answers[1] ? "same answers" : "answers differ",
                answers[0].c_str(), answers[1].c_str());
  }
  unsetenv("KVP_CUDA_WEIGHTS");
}

TEST(CudaModel, GenerateAnswersEqualTheCpusWithF32Weights) {
  KVP_REQUIRE_GPU();
  KVP_REQUIRE_DEFAULT_MODEL();
  generate_on_both("f32", true);
}

TEST(CudaModel, GenerateAnswersWithBF16Weights) {
  KVP_REQUIRE_GPU();
  KVP_REQUIRE_DEFAULT_MODEL();
  generate_on_both("bf16", false);
}

}  // namespace
}  // namespace kvp
