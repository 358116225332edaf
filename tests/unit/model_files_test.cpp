// Model files that disagree with themselves: config.json and GGUF hyper-parameters out of
// range or of the wrong kind, and checkpoints holding more layers than their config declares.
// Each must be refused with a one-line error that quotes the file's own value.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"
#include "support/gguf_builder.h"
#include "support/temp_dir.h"
#include "support/test_paths.h"

namespace kvp {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace test;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

class ModelFilesTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = make_test_dir("kvp_model_files_test_"); }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  std::string write(const std::string& name, const Bytes& bytes) {
    return write(name, std::string(bytes.begin(), bytes.end()));
  }

  // tests/models/tiny-llama/config.json with `key` set to the raw JSON text `value`.
  std::string hf_config_with(const std::string& key, const std::string& value) {
    json c = json::parse(std::ifstream(source_path("tests/models/tiny-llama/config.json")));
    if (key.rfind("rope_scaling.", 0) == 0)
      c["rope_scaling"][key.substr(13)] = "@@";
    else
      c[key] = "@@";
    std::string text = c.dump();
    const std::string marker = "\"@@\"";
    text.replace(text.find(marker), marker.size(), value);
    return write("config" + std::to_string(counter_++) + ".json", text);
  }
  // tests/models/tiny-llama/config.json as `edit` leaves it.
  std::string hf_config_edited(const std::function<void(json&)>& edit) {
    json c = json::parse(std::ifstream(source_path("tests/models/tiny-llama/config.json")));
    edit(c);
    return write("config" + std::to_string(counter_++) + ".json", c.dump());
  }
  void expect_hf_error(const std::string& key, const std::string& value,
                       const std::string& needle) {
    const std::string path = hf_config_with(key, value);
    const std::string msg = error_of([&] { config_from_hf_json(path); });
    EXPECT_NE(msg.find(needle), std::string::npos)
        << key << " = " << value << "\nmessage: " << msg << "\nexpected: " << needle;
  }

  fs::path dir_;
  int counter_ = 0;
};

// ---- config.json ------------------------------------------------------------------------

TEST_F(ModelFilesTest, HfConfigTinyLlamaIsValid) {
  const ModelConfig c = config_from_hf_json(source_path("tests/models/tiny-llama/config.json"));
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.n_layers, 2);
}

// A fractional or boolean value is not silently truncated to an integer.
TEST_F(ModelFilesTest, HfConfigIntegerFieldsMustBeIntegers) {
  expect_hf_error("hidden_size", "64.5", "hidden_size must be an integer, got 64.5");
  expect_hf_error("hidden_size", "64.0", "hidden_size must be an integer, got 64.0");
  expect_hf_error("hidden_size", "true", "hidden_size must be an integer, got true");
  expect_hf_error("num_hidden_layers", "\"2\"", "num_hidden_layers must be an integer, got \"2\"");
  expect_hf_error("vocab_size", "1e300", "vocab_size must be an integer, got 1e+300");
  expect_hf_error("max_position_embeddings", "256.5", "max_position_embeddings must be an integer");
  expect_hf_error("rope_scaling.original_max_position_embeddings", "32.5",
                  "original_max_position_embeddings must be an integer, got 32.5");
}

// The range is checked on the file's value, before it is narrowed to int, and the message
// prints that value (2^40 used to read "= 0", and 2^32 + 2 passed as 2).
TEST_F(ModelFilesTest, HfConfigRangesAreCheckedOnTheFileValue) {
  expect_hf_error("vocab_size", "1099511627776",
                  "vocab_size = 1099511627776 is out of range (1..4194304)");
  expect_hf_error("vocab_size", "18446744073709551615", "vocab_size = 18446744073709551615 is out");
  expect_hf_error("vocab_size", "-5", "vocab_size = -5 is out of range");
  expect_hf_error("num_key_value_heads", "4294967298", "num_key_value_heads = 4294967298 is out");
  expect_hf_error("head_dim", "4294967312", "head_dim = 4294967312 is out of range");
  expect_hf_error("intermediate_size", "4294967424", "intermediate_size = 4294967424 is out");
  expect_hf_error("max_position_embeddings", "4294967552", "max_position_embeddings = 4294967552");
  expect_hf_error("num_hidden_layers", "-3", "num_hidden_layers = -3 is out of range (1..1024)");
  expect_hf_error("num_attention_heads", "0", "num_attention_heads = 0 is out of range");
  expect_hf_error("rope_scaling.original_max_position_embeddings", "4294967328",
                  "original_max_position_embeddings = 4294967328 is out of range");
}

// JSON has no infinity (nlohmann refuses 1e999), but 1e300 overflows the float a rope base is
// kept in: it used to become an infinite base without a word.
TEST_F(ModelFilesTest, HfConfigFloatsMustBeFiniteAndPositive) {
  expect_hf_error("rope_theta", "1e300", "rope_theta = 1e+300 is too large for a 32-bit float");
  expect_hf_error("rope_theta", "-10000", "rope_theta = -10000 must be finite and positive");
  expect_hf_error("rope_theta", "0", "rope_theta = 0 must be finite and positive");
  expect_hf_error("rope_theta", "\"10000\"", "rope_theta must be a number, got \"10000\"");
  expect_hf_error("rms_norm_eps", "1e300", "rms_norm_eps = 1e+300 is too large");
  expect_hf_error("rms_norm_eps", "1e-300",
                  "rms_norm_eps = 1e-300 is too small for a 32-bit float");
  expect_hf_error("rms_norm_eps", "2", "rms_norm_eps = 2 is out of range");
  expect_hf_error("rope_scaling.factor", "1e300", "factor = 1e+300 is too large");
  expect_hf_error("rope_scaling.high_freq_factor", "1e300",
                  "high_freq_factor = 1e+300 is too large");
  expect_hf_error("rope_scaling.low_freq_factor", "-1", "low_freq_factor = -1 must be");
  expect_hf_error("rope_scaling.low_freq_factor", "8", "inconsistent llama3 rope_scaling");
}

TEST_F(ModelFilesTest, HfConfigQuotesFileTextEscaped) {
  const std::string path = hf_config_with("model_type", "\"llama\\u001b[2J\"");
  const std::string msg = error_of([&] { config_from_hf_json(path); });
  EXPECT_NE(msg.find("unsupported architecture 'llama\\x1b[2J'"), std::string::npos) << msg;
}

// A file without model_type names its class in "architectures" (Mistral runs as Llama).
TEST_F(ModelFilesTest, HfConfigModelTypeFromArchitectures) {
  const ModelConfig c = config_from_hf_json(hf_config_edited([](json& j) {
    j.erase("model_type");
    j["architectures"] = {"MistralForCausalLM"};
  }));
  EXPECT_EQ(c.arch, Architecture::LLAMA);
  EXPECT_EQ(c.arch_name, "mistral");
  std::string msg = error_of([&] {
    config_from_hf_json(hf_config_edited([](json& j) {
      j.erase("model_type");
      j["architectures"] = {"GPT2LMHeadModel"};
    }));
  });
  EXPECT_NE(msg.find("unsupported architecture 'GPT2LMHeadModel'"), std::string::npos) << msg;
  msg = error_of([&] {
    config_from_hf_json(hf_config_edited([](json& j) {
      j.erase("model_type");
      j.erase("architectures");
    }));
  });
  EXPECT_NE(msg.find("missing 'model_type'"), std::string::npos) << msg;
}

// What the forward pass does not compute is refused, not run as a different model.
TEST_F(ModelFilesTest, HfConfigUnsupportedFeaturesAreRefused) {
  expect_hf_error("mlp_bias", "true", "mlp_bias is not supported");
  expect_hf_error("attention_bias", "true", "attention_bias is not supported for llama");
  expect_hf_error("hidden_act", "\"gelu\"", "hidden_act 'gelu' is not supported (only silu)");
  EXPECT_EQ(config_from_hf_json(hf_config_with("mlp_bias", "false")).hidden, 64);
}

// Full attention equals a sliding window's up to the window's length: an active window caps
// the context length there; an inactive one (Llama has none, Qwen's is off by default) does not.
TEST_F(ModelFilesTest, HfConfigSlidingWindowCapsTheContext) {
  auto context = [&](const std::string& type, const json& window, const json& use) {
    return config_from_hf_json(hf_config_edited([&](json& j) {
             j["model_type"] = type;
             j["sliding_window"] = window;
             if (!use.is_null()) j["use_sliding_window"] = use;
           }))
        .max_positions;
  };
  EXPECT_EQ(context("mistral", 64, nullptr), 64);
  EXPECT_EQ(context("mistral", nullptr, nullptr), 256);
  EXPECT_EQ(context("mistral", 4096, nullptr), 256);  // wider than the context: no cap
  EXPECT_EQ(context("llama", 64, nullptr), 256);
  EXPECT_EQ(context("qwen2", 64, false), 256);
  EXPECT_EQ(context("qwen2", 64, true), 64);
  const std::string msg = error_of([&] { context("mistral", 64.5, nullptr); });
  EXPECT_NE(msg.find("sliding_window must be an integer, got 64.5"), std::string::npos) << msg;
}

// ---- GGUF metadata ----------------------------------------------------------------------

// The hyper-parameters of a tiny llama (no tensors): hidden 32, 2 heads of 16, 1 kv head.
GgufBuilder tiny_gguf_config() {
  GgufBuilder g;
  g.kv("general.architecture", VT::STRING, enc_str("llama"));
  g.kv("llama.block_count", VT::U32, enc<uint32_t>(1));
  g.kv("llama.embedding_length", VT::U32, enc<uint32_t>(32));
  g.kv("llama.attention.head_count", VT::U32, enc<uint32_t>(2));
  g.kv("llama.attention.head_count_kv", VT::U32, enc<uint32_t>(1));
  g.kv("llama.feed_forward_length", VT::U32, enc<uint32_t>(64));
  g.kv("llama.context_length", VT::U32, enc<uint32_t>(128));
  g.kv("llama.attention.layer_norm_rms_epsilon", VT::F32, enc<float>(1e-5f));
  g.kv("llama.vocab_size", VT::U32, enc<uint32_t>(16));
  return g;
}

// The same with one entry replaced.
GgufBuilder tiny_gguf_config_with(const std::string& key, VT type, const Bytes& value) {
  GgufBuilder g = tiny_gguf_config();
  std::erase_if(g.kvs, [&](const auto& kv) { return kv.first == key; });
  g.kv(key, type, value);
  return g;
}

TEST_F(ModelFilesTest, GgufConfigChecks) {
  auto error = [&](const GgufBuilder& b) {
    GgufBuilder copy = b;
    const std::string path = write("c" + std::to_string(counter_++) + ".gguf", copy.build());
    return error_of([&] { config_from_gguf(GgufFile::open(path)); });
  };
  EXPECT_EQ(error(tiny_gguf_config()), "(no error)");
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    std::string key;
    VT type;
    Bytes value;
    std::string needle;
  };
  const Case cases[] = {
      {"llama.rope.freq_base", VT::F32, enc<float>(inf), "rope.freq_base = inf must be finite"},
      {"llama.rope.freq_base", VT::F32, enc<float>(-inf), "rope.freq_base = -inf must be finite"},
      {"llama.rope.freq_base", VT::F64, enc<double>(1e300), "rope.freq_base = 1e+300 is too large"},
      {"llama.rope.freq_base", VT::F32, enc<float>(0), "rope.freq_base = 0 must be finite"},
      {"llama.attention.layer_norm_rms_epsilon", VT::F32, enc<float>(nan),
       "layer_norm_rms_epsilon = nan must be finite and positive"},
      {"llama.attention.layer_norm_rms_epsilon", VT::F64, enc<double>(1e-300),
       "layer_norm_rms_epsilon = 1e-300 is too small"},
      {"llama.block_count", VT::U64, enc<uint64_t>(uint64_t{1} << 40),
       "block_count = 1099511627776 is out of range (1..1024)"},
      {"llama.block_count", VT::I32, enc<int32_t>(-1), "block_count = -1 is out of range"},
      {"llama.vocab_size", VT::U64, enc<uint64_t>(uint64_t{1} << 40),
       "vocab_size = 1099511627776 is out of range (1..4194304)"},
      {"llama.attention.head_count", VT::U32, enc<uint32_t>(0), "head_count = 0 is out of range"},
      {"llama.attention.key_length", VT::U64, enc<uint64_t>((uint64_t{1} << 32) + 16),
       "key_length = 4294967312 is out of range"},
  };
  for (const Case& c : cases) {
    const std::string msg = error(tiny_gguf_config_with(c.key, c.type, c.value));
    EXPECT_NE(msg.find(c.needle), std::string::npos)
        << "message: " << msg << "\nexpected: " << c.needle;
  }
}

// ---- layers beyond the declared count ----------------------------------------------------

// A complete tiny llama GGUF (F32) holding `layers_held` layers and declaring `declared`.
GgufBuilder tiny_gguf_model(int declared, int layers_held) {
  GgufBuilder g = tiny_gguf_config_with("llama.block_count", VT::U32, enc<uint32_t>(declared));
  g.tensor("token_embd.weight", {32, 16}, kF32).tensor("output_norm.weight", {32}, kF32);
  for (int l = 0; l < layers_held; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    g.tensor(p + "attn_norm.weight", {32}, kF32).tensor(p + "ffn_norm.weight", {32}, kF32);
    g.tensor(p + "attn_q.weight", {32, 32}, kF32).tensor(p + "attn_output.weight", {32, 32}, kF32);
    g.tensor(p + "attn_k.weight", {32, 16}, kF32).tensor(p + "attn_v.weight", {32, 16}, kF32);
    g.tensor(p + "ffn_gate.weight", {32, 64}, kF32).tensor(p + "ffn_up.weight", {32, 64}, kF32);
    g.tensor(p + "ffn_down.weight", {64, 32}, kF32);
  }
  return g;
}

TEST_F(ModelFilesTest, GgufWithMoreLayersThanBlockCount) {
  auto load = [&](GgufBuilder b) {
    const std::string path = write("m" + std::to_string(counter_++) + ".gguf", b.build());
    return error_of([&] {
      const GgufFile g = GgufFile::open(path);
      weights_from_gguf(g, config_from_gguf(g));
    });
  };
  EXPECT_EQ(load(tiny_gguf_model(2, 2)), "(no error)");
  EXPECT_NE(load(tiny_gguf_model(3, 2)).find("blk.2.attn_norm.weight"), std::string::npos);
  const std::string msg = load(tiny_gguf_model(1, 3));
  EXPECT_NE(msg.find("holds layer 1 (tensor blk.1."), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama.block_count declares 1 layer"), std::string::npos) << msg;
  // A stray layer far away is found too.
  GgufBuilder far = tiny_gguf_model(1, 1);
  far.tensor("blk.99999999999999999999.attn_norm.weight", {32}, kF32);
  const std::string far_msg = load(far);
  EXPECT_NE(far_msg.find("holds layer 99999999999999999999"), std::string::npos) << far_msg;
}

TEST_F(ModelFilesTest, SafetensorsWithMoreLayersThanConfig) {
  const fs::path model = dir_ / "tiny-llama";
  fs::copy(source_path("tests/models/tiny-llama"), model);
  json c = json::parse(std::ifstream(model / "config.json"));
  c["num_hidden_layers"] = 1;
  std::ofstream(model / "config.json") << c.dump();
  const std::string msg = error_of([&] {
    const ModelConfig config = config_from_hf_json((model / "config.json").string());
    weights_from_safetensors(SafetensorsModel::open_dir(model.string()), config);
  });
  EXPECT_NE(msg.find("holds layer 1 (tensor model.layers.1."), std::string::npos) << msg;
  EXPECT_NE(msg.find("num_hidden_layers declares 1 layer"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kvp
