#include "model/config.h"

#include "core/error.h"
#include "io/gguf.h"
#include "io/json_file.h"

namespace kvp {

int64_t ModelConfig::kv_bytes_per_token() const {
  return 2LL * n_layers * n_kv_heads * head_dim * static_cast<int64_t>(sizeof(float));
}

void ModelConfig::validate() const {
  auto positive = [](int v, const char* name, int limit) {
    check(v > 0 && v <= limit, std::string("model config: ") + name + " = " + std::to_string(v) +
                                   " is out of range (1.." + std::to_string(limit) + ")");
  };
  positive(n_layers, "n_layers", 1024);
  positive(hidden, "hidden size", 1 << 16);
  positive(n_heads, "attention heads", 1024);
  positive(n_kv_heads, "kv heads", 1024);
  positive(head_dim, "head_dim", 1024);
  positive(ffn_hidden, "feed-forward size", 1 << 20);
  positive(vocab_size, "vocab size", 1 << 22);
  positive(max_positions, "context length", 1 << 24);
  check(n_heads % n_kv_heads == 0, "model config: attention heads (" + std::to_string(n_heads) +
                                       ") is not a multiple of kv heads (" +
                                       std::to_string(n_kv_heads) + ")");
  check(head_dim % 2 == 0, "model config: head_dim must be even for rotary embeddings");
  check(rope.head_dim == head_dim, "model config: partial rotary embeddings are not supported");
  check(rope.theta > 0, "model config: rope theta must be positive");
  check(rms_eps > 0 && rms_eps < 1, "model config: rms_norm_eps out of range");
}

namespace {

Architecture parse_arch(const std::string& name) {
  if (name == "llama" || name == "mistral") return Architecture::LLAMA;
  if (name == "qwen2") return Architecture::QWEN2;
  if (name == "qwen3") return Architecture::QWEN3;
  throw Error("unsupported architecture '" + name + "' (supported: llama, mistral, qwen2, qwen3)");
}

int to_int(int64_t v, const std::string& what) {
  check(v >= 0 && v <= (1LL << 30), "model config: " + what + " = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

}  // namespace

ModelConfig config_from_gguf(const GgufFile& g) {
  ModelConfig c;
  c.arch_name = g.get_string("general.architecture");
  c.arch = parse_arch(c.arch_name);
  const std::string a = c.arch_name + ".";
  c.n_layers = to_int(g.get_int(a + "block_count"), "block_count");
  c.hidden = to_int(g.get_int(a + "embedding_length"), "embedding_length");
  c.n_heads = to_int(g.get_int(a + "attention.head_count"), "head_count");
  c.n_kv_heads = to_int(g.get_int_or(a + "attention.head_count_kv", c.n_heads), "head_count_kv");
  c.ffn_hidden = to_int(g.get_int(a + "feed_forward_length"), "feed_forward_length");
  c.max_positions = to_int(g.get_int(a + "context_length"), "context_length");
  c.rms_eps = static_cast<float>(g.get_float(a + "attention.layer_norm_rms_epsilon"));
  check(c.n_heads > 0, "model config: head_count must be positive");
  c.head_dim = to_int(g.get_int_or(a + "attention.key_length", c.hidden / c.n_heads), "key_length");
  if (g.has(a + "vocab_size")) {
    c.vocab_size = to_int(g.get_int(a + "vocab_size"), "vocab_size");
  } else {
    c.vocab_size = static_cast<int>(g.get_string_array("tokenizer.ggml.tokens").size());
  }
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;
  c.qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = g.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
  c.rope.head_dim = to_int(g.get_int_or(a + "rope.dimension_count", c.head_dim), "rope.dimension_count");
  c.rope.theta = static_cast<float>(g.get_float_or(a + "rope.freq_base", 10000.0));
  const std::string scaling = g.get_string_or(a + "rope.scaling.type", "none");
  check(scaling == "none", g.path() + ": unsupported rope scaling '" + scaling + "'");
  // llama3-style scaling is stored by llama.cpp as a rope_freqs tensor, which we do not read yet.
  check(g.find_tensor("rope_freqs.weight") == nullptr,
        g.path() + ": llama3 rope frequency factors (rope_freqs.weight) are not supported yet");
  c.validate();
  return c;
}

namespace {

template <typename T>
T json_get(const nlohmann::json& j, const char* key, const std::string& path) {
  check(j.contains(key), path + ": missing '" + key + "'");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(path + ": '" + key + "' has the wrong type");
  }
}

template <typename T>
T json_get_or(const nlohmann::json& j, const char* key, T fallback, const std::string& path) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return json_get<T>(j, key, path);
}

}  // namespace

ModelConfig config_from_hf_json(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  check(j.is_object(), path + ": not a JSON object");
  ModelConfig c;
  c.arch_name = json_get_or<std::string>(j, "model_type", "", path);
  check(!c.arch_name.empty(), path + ": missing 'model_type'");
  c.arch = parse_arch(c.arch_name);
  c.n_layers = json_get<int>(j, "num_hidden_layers", path);
  c.hidden = json_get<int>(j, "hidden_size", path);
  c.n_heads = json_get<int>(j, "num_attention_heads", path);
  c.n_kv_heads = json_get_or<int>(j, "num_key_value_heads", c.n_heads, path);
  check(c.n_heads > 0, path + ": num_attention_heads must be positive");
  c.head_dim = json_get_or<int>(j, "head_dim", c.hidden / c.n_heads, path);
  c.ffn_hidden = json_get<int>(j, "intermediate_size", path);
  c.vocab_size = json_get<int>(j, "vocab_size", path);
  c.max_positions = json_get_or<int>(j, "max_position_embeddings", 4096, path);
  c.rms_eps = json_get_or<float>(j, "rms_norm_eps", 1e-6f, path);
  c.tied_embeddings = json_get_or<bool>(j, "tie_word_embeddings", false, path);
  c.qkv_bias = c.arch == Architecture::QWEN2 || json_get_or<bool>(j, "attention_bias", false, path);
  c.qk_norm = c.arch == Architecture::QWEN3;
  c.rope.head_dim = c.head_dim;
  // transformers 5 nests rope settings in rope_parameters; older files use rope_theta and
  // rope_scaling at the top level.
  nlohmann::json rope = nlohmann::json::object();
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) rope = j["rope_parameters"];
  else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) rope = j["rope_scaling"];
  c.rope.theta = json_get_or<float>(rope, "rope_theta", json_get_or<float>(j, "rope_theta", 10000.f, path), path);
  std::string rope_type = json_get_or<std::string>(rope, "rope_type", json_get_or<std::string>(rope, "type", "default", path), path);
  if (rope_type == "llama3") {
    c.rope.llama3_factor = json_get<float>(rope, "factor", path);
    c.rope.llama3_low_freq_factor = json_get<float>(rope, "low_freq_factor", path);
    c.rope.llama3_high_freq_factor = json_get<float>(rope, "high_freq_factor", path);
    c.rope.llama3_original_max_positions = json_get<int>(rope, "original_max_position_embeddings", path);
    check(c.rope.llama3_factor > 0 && c.rope.llama3_low_freq_factor > 0 &&
              c.rope.llama3_high_freq_factor > c.rope.llama3_low_freq_factor &&
              c.rope.llama3_original_max_positions > 0,
          path + ": inconsistent llama3 rope_scaling parameters");
  } else {
    check(rope_type == "default", path + ": unsupported rope type '" + rope_type + "'");
  }
  c.validate();
  return c;
}

}  // namespace kvp
