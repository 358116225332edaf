// Models at their real sizes without weight files: the shipped configs (configs/) parse to
// the public shapes and parameter counts, and random_weights fills the Hugging Face layout
// deterministically with values a forward pass can run on. Only tiny configs make weights
// here (an 8B model would take 16 GB), so the test is quick under the sanitizers too.
#include "model/random_weights.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/factory.h"
#include "core/error.h"
#include "core/half.h"
#include "model/config.h"
#include "model/model.h"
#include "support/test_paths.h"

namespace kvp {
namespace {

using test::source_path;

const std::string kTinyConfig = "tests/models/tiny-random/config.json";

ModelConfig tiny_config() {
  return config_from_hf_json(source_path(kTinyConfig));
}

// The tiny config as each architecture the weights take a different layout for.
std::vector<ModelConfig> tiny_variants() {
  ModelConfig tied = tiny_config();
  ModelConfig untied = tied;
  untied.tied_embeddings = false;
  ModelConfig qwen2 = untied;
  qwen2.arch = Architecture::QWEN2;
  qwen2.qkv_bias = true;
  ModelConfig qwen3 = untied;
  qwen3.arch = Architecture::QWEN3;
  qwen3.qk_norm = true;
  return {tied, untied, qwen2, qwen3};
}

float value_at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::BF16 ? bf16_to_f32(t.ptr<uint16_t>()[i]) : t.ptr<float>()[i];
}

void expect_matrix(const Tensor& t, int64_t rows, int64_t cols) {
  ASSERT_EQ(t.dtype(), DType::BF16);
  ASSERT_EQ(t.shape_string(), "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  const float bound = std::sqrt(3.0f / static_cast<float>(cols));
  double sum_sq = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = value_at(t, i);
    ASSERT_LE(std::fabs(v), bound * 1.01f) << "element " << i;  // 1%: bf16 rounding
    sum_sq += static_cast<double>(v) * v;
  }
  // A uniform in [-a, a] has RMS a / sqrt(3).
  EXPECT_NEAR(std::sqrt(sum_sq / static_cast<double>(t.numel())), bound / std::sqrt(3.0),
              0.05 * bound);
}

void expect_ones(const Tensor& t, int64_t n) {
  ASSERT_EQ(t.dtype(), DType::F32);
  ASSERT_EQ(t.shape_string(), "[" + std::to_string(n) + "]");
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(value_at(t, i), 1.0f);
}

void expect_bias(const Tensor& t, int64_t n) {
  ASSERT_EQ(t.dtype(), DType::F32);
  ASSERT_EQ(t.shape_string(), "[" + std::to_string(n) + "]");
  for (int64_t i = 0; i < n; ++i) ASSERT_LE(std::fabs(value_at(t, i)), 0.02f);
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// ---- the shipped configs --------------------------------------------------------------

TEST(ShippedConfigs, Llama31_8BInstruct) {
  const ModelConfig c = config_from_hf_json(source_path("configs/llama-3.1-8b-instruct.json"));
  EXPECT_EQ(c.arch, Architecture::LLAMA);
  EXPECT_EQ(c.n_layers, 32);
  EXPECT_EQ(c.hidden, 4096);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.ffn_hidden, 14336);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_positions, 131072);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope.theta, 500000.0f);
  EXPECT_FLOAT_EQ(c.rope.llama3_factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope.llama3_low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope.llama3_high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope.llama3_original_max_positions, 8192);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.n_params(), 8'030'261'248);
  EXPECT_EQ(c.kv_bytes_per_token(), 2 * 32 * 8 * 128 * 4);
}

// 28 x (2 x 3584 x 3584 + 2 x 3584 x 512 + 3584 + 2 x 512 + 3 x 3584 x 18944 + 2 x 3584)
// + 2 x 152064 x 3584 + 3584 = 28 x 233,057,792 + 1,089,994,752 + 3584.
TEST(ShippedConfigs, Qwen25_7BInstruct) {
  const ModelConfig c = config_from_hf_json(source_path("configs/qwen2.5-7b-instruct.json"));
  EXPECT_EQ(c.arch, Architecture::QWEN2);
  EXPECT_EQ(c.n_layers, 28);
  EXPECT_EQ(c.hidden, 3584);
  EXPECT_EQ(c.n_heads, 28);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.ffn_hidden, 18944);
  EXPECT_EQ(c.vocab_size, 152064);
  EXPECT_EQ(c.max_positions, 32768);  // its sliding_window (131072) is off
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope.theta, 1000000.0f);
  EXPECT_EQ(c.rope.llama3_factor, 0.0f);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.n_params(), 7'615'616'512);
}

// 32 x 218,112,000 (as Llama-3.1-8B's layers) + 2 x 32768 x 4096 + 4096.
TEST(ShippedConfigs, Mistral7BInstructV03) {
  const ModelConfig c = config_from_hf_json(source_path("configs/mistral-7b-instruct-v0.3.json"));
  EXPECT_EQ(c.arch, Architecture::LLAMA);
  EXPECT_EQ(c.arch_name, "mistral");
  EXPECT_EQ(c.n_layers, 32);
  EXPECT_EQ(c.hidden, 4096);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.ffn_hidden, 14336);
  EXPECT_EQ(c.vocab_size, 32768);
  EXPECT_EQ(c.max_positions, 32768);  // sliding_window null: no cap
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope.theta, 1000000.0f);
  EXPECT_EQ(c.rope.llama3_factor, 0.0f);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.n_params(), 7'248'023'552);
}

// ---- random_weights ---------------------------------------------------------------------

TEST(RandomWeights, ParamCountMatchesTheConfig) {
  for (const ModelConfig& c : tiny_variants()) {
    const ModelWeights w = random_weights(c, 0);
    EXPECT_EQ(w.n_params(), c.n_params());
    int64_t vector_params = 0;  // norms and biases, F32; the rest is BF16
    for (const LayerWeights& l : w.layers)
      for (const Tensor* t : {&l.attn_norm, &l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm, &l.ffn_norm})
        vector_params += t->numel();
    vector_params += w.output_norm.numel();
    EXPECT_EQ(static_cast<int64_t>(w.nbytes()), 2 * c.n_params() + 2 * vector_params);
  }
}

// The layout weights_from_safetensors gives: shapes, dtypes, which tensors exist.
TEST(RandomWeights, HuggingFaceLayout) {
  for (const ModelConfig& c : tiny_variants()) {
    SCOPED_TRACE(c.arch_name + (c.qkv_bias ? " +qkv bias" : "") + (c.qk_norm ? " +qk norm" : "") +
                 (c.tied_embeddings ? " tied" : ""));
    const ModelWeights w = random_weights(c, 1);
    const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    expect_matrix(w.token_embedding, c.vocab_size, c.hidden);
    expect_ones(w.output_norm, c.hidden);
    expect_matrix(w.output, c.vocab_size, c.hidden);
    EXPECT_EQ(w.output.data() == w.token_embedding.data(), c.tied_embeddings);
    ASSERT_EQ(w.layers.size(), static_cast<size_t>(c.n_layers));
    for (const LayerWeights& l : w.layers) {
      expect_ones(l.attn_norm, c.hidden);
      expect_matrix(l.wq, q_dim, c.hidden);
      expect_matrix(l.wk, kv_dim, c.hidden);
      expect_matrix(l.wv, kv_dim, c.hidden);
      expect_matrix(l.wo, c.hidden, q_dim);
      expect_ones(l.ffn_norm, c.hidden);
      expect_matrix(l.w_gate, c.ffn_hidden, c.hidden);
      expect_matrix(l.w_up, c.ffn_hidden, c.hidden);
      expect_matrix(l.w_down, c.hidden, c.ffn_hidden);
      EXPECT_EQ(l.bq.defined(), c.qkv_bias);
      EXPECT_EQ(l.q_norm.defined(), c.qk_norm);
      if (c.qkv_bias) {
        expect_bias(l.bq, q_dim);
        expect_bias(l.bk, kv_dim);
        expect_bias(l.bv, kv_dim);
      }
      if (c.qk_norm) {
        expect_ones(l.q_norm, c.head_dim);
        expect_ones(l.k_norm, c.head_dim);
      }
    }
  }
}

// Every tensor that holds random values (all but the norms, which are ones).
std::vector<const Tensor*> random_tensors(const ModelWeights& w) {
  std::vector<const Tensor*> out = {&w.token_embedding, &w.output};
  for (const LayerWeights& l : w.layers)
    out.insert(out.end(),
               {&l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.w_gate, &l.w_up, &l.w_down});
  return out;
}

TEST(RandomWeights, SameSeedSameValuesOtherSeedOtherValues) {
  const ModelConfig c = tiny_variants()[2];  // qwen2: biases too
  const ModelWeights a = random_weights(c, 7), b = random_weights(c, 7), d = random_weights(c, 8);
  const auto ta = random_tensors(a), tb = random_tensors(b), td = random_tensors(d);
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_TRUE(same_bytes(*ta[i], *tb[i])) << "tensor " << i;
    EXPECT_FALSE(same_bytes(*ta[i], *td[i])) << "tensor " << i;
  }
  // Tensors of one model are not copies of each other (each has its own stream).
  EXPECT_FALSE(same_bytes(a.layers[0].w_gate, a.layers[0].w_up));
  EXPECT_FALSE(same_bytes(a.layers[0].wk, a.layers[0].wv));
  EXPECT_FALSE(same_bytes(a.layers[0].wq, a.layers[1].wq));
}

// The generator is pinned: benchmarks made with one seed stay comparable across versions.
// The values were worked out apart from this code, in Python, from the definition: layer 0's
// wq is tensor 3 + 1; key = mix64(mix64(seed) + 4); element i is the low (even i) or high
// (odd i) signed 32-bit half of mix64(key + (i / 2) * 0x9E3779B97F4A7C15), times
// sqrt(3 / 64) / 2^31, rounded to bf16.
TEST(RandomWeights, ValuesArePinned) {
  const ModelWeights w = random_weights(tiny_config(), 0);
  const uint16_t want[4] = {48535, 48206, 48701, 15603};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(w.layers[0].wq.ptr<uint16_t>()[i], want[i]) << i;
}

TEST(RandomWeights, RefusesAnInvalidConfig) {
  ModelConfig c = tiny_config();
  c.n_kv_heads = 3;  // 4 heads are not a multiple of 3
  EXPECT_THROW(random_weights(c, 0), Error);
}

// ---- a forward pass on them --------------------------------------------------------------

// Finite, and spread the way unit-scale logits are: a degenerate model gives one value for
// every token, or values that blow up with depth.
void expect_sane_logits(const Tensor& logits, int vocab) {
  ASSERT_EQ(logits.numel(), vocab);
  const float* p = logits.ptr<float>();
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < vocab; ++i) {
    ASSERT_TRUE(std::isfinite(p[i])) << "logit " << i << " = " << p[i];
    sum += p[i];
    sum_sq += static_cast<double>(p[i]) * p[i];
  }
  const double mean = sum / vocab, sd = std::sqrt(std::max(0.0, sum_sq / vocab - mean * mean));
  EXPECT_GT(sd, 0.1);
  EXPECT_LT(sd, 10.0);
}

// The logits of a 16-token prompt (ids from `salt`), checked, then those of one decode step
// after it, checked; returns the prompt's.
std::vector<float> prompt_and_step(Model& model, int salt) {
  const int vocab = model.config().vocab_size;
  std::vector<int32_t> ids, pos;
  for (int t = 0; t < 16; ++t) {
    ids.push_back((37 * t + salt) % vocab);
    pos.push_back(t);
  }
  KVCache cache = model.make_cache(32);
  const Tensor& logits = model.forward(ids.data(), pos.data(), 16, cache);
  expect_sane_logits(logits, vocab);
  const std::vector<float> out(logits.ptr<float>(), logits.ptr<float>() + vocab);
  const int32_t next = 7, next_pos = 16;
  expect_sane_logits(model.forward(&next, &next_pos, 1, cache), vocab);
  return out;
}

TEST(RandomModel, TinyForwardGivesFiniteVariedLogits) {
  auto backend = make_backend("cpu", 2);
  auto model = random_model(source_path(kTinyConfig), *backend, 3);
  EXPECT_EQ(model->config().vocab_size, 300);
  const std::vector<float> a = prompt_and_step(*model, 5);
  const std::vector<float> b = prompt_and_step(*model, 6);
  EXPECT_NE(a, b);  // the tokens reach the logits
  EXPECT_EQ(a, prompt_and_step(*model, 5));
}

// The scale is chosen for real depths: 32 layers (Llama-3.1-8B's count) of every layout still
// give finite, varied logits.
TEST(RandomModel, ThirtyTwoLayersStayFinite) {
  auto backend = make_backend("cpu", 2);
  for (ModelConfig c : tiny_variants()) {
    SCOPED_TRACE(c.arch_name + (c.qkv_bias ? " +qkv bias" : "") + (c.qk_norm ? " +qk norm" : ""));
    c.n_layers = 32;
    Model model(c, random_weights(c, 11), *backend);
    prompt_and_step(model, 1);
  }
}

}  // namespace
}  // namespace kvp
