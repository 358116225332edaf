#include "model/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "core/error.h"
#include "core/text.h"
#include "io/gguf.h"
#include "io/json_file.h"

namespace kvp {

namespace {

// Bounds of each integer hyper-parameter. A file's value is checked against them as the file
// holds it (int64, uint64), before it is narrowed to int: narrowing first turned 2^40 into 0
// and 2^32 + 2 into a valid-looking 2.
struct Range {
  int64_t lo, hi;
};
constexpr Range kLayers{1, 1024};
constexpr Range kHidden{1, 1 << 16};
constexpr Range kHeads{1, 1024};
constexpr Range kHeadDim{1, 1024};
constexpr Range kFfn{1, 1 << 20};
constexpr Range kVocab{1, 1 << 22};
constexpr Range kPositions{1, 1 << 24};

std::string range_text(Range r) {
  return "(" + std::to_string(r.lo) + ".." + std::to_string(r.hi) + ")";
}

template <typename T>  // int64_t or uint64_t: the file's own value, printed as it is
int narrow(T v, Range r, const std::string& what) {
  bool ok = false;
  if constexpr (std::is_signed_v<T>)
    ok = v >= r.lo && v <= r.hi;
  else
    ok = v >= static_cast<uint64_t>(r.lo) && v <= static_cast<uint64_t>(r.hi);  // lo >= 1
  check(ok, what + " = " + std::to_string(v) + " is out of range " + range_text(r));
  return static_cast<int>(v);
}

// Shortest text that reads back as v ("1e+300", "64.5", "inf", "nan").
std::string number_text(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::string("?");
}

// A positive real hyper-parameter, checked as the file's double before it becomes a float:
// infinity, NaN, zero and values a float cannot hold (1e300 would become infinity, 1e-300
// zero) are refused with the value.
float positive_float(double v, const std::string& what) {
  check(std::isfinite(v) && v > 0, what + " = " + number_text(v) + " must be finite and positive");
  check(v <= std::numeric_limits<float>::max(),
        what + " = " + number_text(v) + " is too large for a 32-bit float");
  const float f = static_cast<float>(v);
  check(f > 0, what + " = " + number_text(v) + " is too small for a 32-bit float");
  return f;
}

void check_in(int v, Range r, const char* name) {
  check(v >= r.lo && v <= r.hi, "model config: " + std::string(name) + " = " + std::to_string(v) +
                                    " is out of range " + range_text(r));
}

}  // namespace

int64_t ModelConfig::kv_bytes_per_token() const {
  return 2LL * n_layers * n_kv_heads * head_dim * static_cast<int64_t>(sizeof(float));
}

int64_t ModelConfig::n_params() const {
  const int64_t q_dim = static_cast<int64_t>(n_heads) * head_dim;
  const int64_t kv_dim = static_cast<int64_t>(n_kv_heads) * head_dim;
  int64_t layer = 2LL * hidden * q_dim + 2LL * hidden * kv_dim  // q, o; k, v
                  + 3LL * hidden * ffn_hidden + 2LL * hidden;   // gate, up, down; two norms
  if (qkv_bias) layer += q_dim + 2 * kv_dim;
  if (qk_norm) layer += 2LL * head_dim;
  const int64_t embeddings = static_cast<int64_t>(vocab_size) * hidden;
  return n_layers * layer + embeddings * (tied_embeddings ? 1 : 2) + hidden;
}

void ModelConfig::validate() const {
  check_in(n_layers, kLayers, "n_layers");
  check_in(hidden, kHidden, "hidden size");
  check_in(n_heads, kHeads, "attention heads");
  check_in(n_kv_heads, kHeads, "kv heads");
  check_in(head_dim, kHeadDim, "head_dim");
  check_in(ffn_hidden, kFfn, "feed-forward size");
  check_in(vocab_size, kVocab, "vocab size");
  check_in(max_positions, kPositions, "context length");
  check(n_heads % n_kv_heads == 0, "model config: attention heads (" + std::to_string(n_heads) +
                                       ") is not a multiple of kv heads (" +
                                       std::to_string(n_kv_heads) + ")");
  check(head_dim % 2 == 0, "model config: head_dim must be even for rotary embeddings");
  check(rope.head_dim == head_dim, "model config: partial rotary embeddings are not supported");
  check(std::isfinite(rope.theta) && rope.theta > 0,
        "model config: rope theta must be finite and positive");
  check(std::isfinite(rms_eps) && rms_eps > 0 && rms_eps < 1,
        "model config: rms_norm_eps = " + number_text(rms_eps) + " is out of range (0, 1)");
}

namespace {

Architecture parse_arch(const std::string& name) {
  if (name == "llama" || name == "mistral") return Architecture::LLAMA;
  if (name == "qwen2") return Architecture::QWEN2;
  if (name == "qwen3") return Architecture::QWEN3;
  throw Error("unsupported architecture '" + printable(name) +
              "' (supported: llama, mistral, qwen2, qwen3)");
}

// An integer GGUF key, or fallback when it is absent. get_int already refuses a u64 above
// int64's range, naming the value.
int gguf_int(const GgufFile& g, const std::string& key, Range r,
             std::optional<int64_t> fallback = {}) {
  const int64_t v = fallback && !g.has(key) ? *fallback : g.get_int(key);
  return narrow(v, r, g.path() + ": " + key);
}

float gguf_positive_float(const GgufFile& g, const std::string& key,
                          std::optional<double> fallback = {}) {
  const double v = fallback && !g.has(key) ? *fallback : g.get_float(key);
  return positive_float(v, g.path() + ": " + key);
}

}  // namespace

ModelConfig config_from_gguf(const GgufFile& g) {
  ModelConfig c;
  c.arch_name = g.get_string("general.architecture");
  c.arch = parse_arch(c.arch_name);
  const std::string a = c.arch_name + ".";
  c.n_layers = gguf_int(g, a + "block_count", kLayers);
  c.hidden = gguf_int(g, a + "embedding_length", kHidden);
  c.n_heads = gguf_int(g, a + "attention.head_count", kHeads);
  c.n_kv_heads = gguf_int(g, a + "attention.head_count_kv", kHeads, c.n_heads);
  c.ffn_hidden = gguf_int(g, a + "feed_forward_length", kFfn);
  c.max_positions = gguf_int(g, a + "context_length", kPositions);
  c.rms_eps = gguf_positive_float(g, a + "attention.layer_norm_rms_epsilon");
  c.head_dim = gguf_int(g, a + "attention.key_length", kHeadDim, c.hidden / c.n_heads);
  if (g.has(a + "vocab_size")) {
    c.vocab_size = gguf_int(g, a + "vocab_size", kVocab);
  } else {
    const size_t n = g.get_string_array("tokenizer.ggml.tokens").size();
    c.vocab_size =
        narrow(static_cast<uint64_t>(n), kVocab, g.path() + ": tokenizer.ggml.tokens count");
  }
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;
  c.qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = g.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
  c.rope.head_dim = gguf_int(g, a + "rope.dimension_count", kHeadDim, c.head_dim);
  c.rope.theta = gguf_positive_float(g, a + "rope.freq_base", 10000.0);
  const std::string scaling = g.get_string_or(a + "rope.scaling.type", "none");
  check(scaling == "none", g.path() + ": unsupported rope scaling '" + printable(scaling) + "'");
  // llama3-style scaling is stored by llama.cpp as a rope_freqs tensor, which we do not read yet.
  check(g.find_tensor("rope_freqs.weight") == nullptr,
        g.path() + ": llama3 rope frequency factors (rope_freqs.weight) are not supported yet");
  c.validate();
  return c;
}

namespace {

using nlohmann::json;

// The value of key, or nullptr when it is absent or null (transformers writes null for unset).
const json* find(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

// A JSON integer in range. A fraction, a boolean or a string is refused rather than converted
// (nlohmann would truncate 64.5 to 64 and read true as 1).
int json_int(const json& j, const char* key, Range r, const std::string& path,
             std::optional<int> fallback = {}) {
  const json* v = find(j, key);
  if (!v) {
    check(fallback.has_value(), path + ": missing '" + key + "'");
    return *fallback;
  }
  const std::string what = path + ": " + key;
  check(v->is_number_integer(), what + " must be an integer, got " + printable(v->dump()));
  if (v->is_number_unsigned()) return narrow(v->get<uint64_t>(), r, what);
  return narrow(v->get<int64_t>(), r, what);
}

// A JSON number, positive, finite and within a float's range.
float json_positive_float(const json& j, const char* key, const std::string& path,
                          std::optional<double> fallback = {}) {
  const json* v = find(j, key);
  if (!v) {
    check(fallback.has_value(), path + ": missing '" + key + "'");
    return static_cast<float>(*fallback);
  }
  const std::string what = path + ": " + key;
  check(v->is_number(), what + " must be a number, got " + printable(v->dump()));
  return positive_float(v->get<double>(), what);
}

template <typename T>  // std::string or bool
T json_get_or(const json& j, const char* key, T fallback, const std::string& path) {
  const json* v = find(j, key);
  if (!v) return fallback;
  try {
    return v->get<T>();
  } catch (const json::exception&) {
    throw Error(path + ": '" + key + "' has the wrong type (" + printable(v->dump()) + ")");
  }
}

// rope_scaling / rope_parameters of type llama3.
void read_llama3_scaling(const json& rope, const std::string& path, RopeParams& out) {
  out.llama3_factor = json_positive_float(rope, "factor", path);
  out.llama3_low_freq_factor = json_positive_float(rope, "low_freq_factor", path);
  out.llama3_high_freq_factor = json_positive_float(rope, "high_freq_factor", path);
  out.llama3_original_max_positions =
      json_int(rope, "original_max_position_embeddings", kPositions, path);
  check(out.llama3_high_freq_factor > out.llama3_low_freq_factor,
        path +
            ": inconsistent llama3 rope_scaling parameters (high_freq_factor must exceed "
            "low_freq_factor)");
}

// model_type, or the one it implies from the "architectures" class name when a file has no
// model_type (transformers always writes it, hand-written configs may not).
std::string hf_model_type(const json& j, const std::string& path) {
  std::string type = json_get_or<std::string>(j, "model_type", "", path);
  if (!type.empty()) return type;
  const json* arch = find(j, "architectures");
  check(arch && arch->is_array() && !arch->empty() && arch->front().is_string(),
        path + ": missing 'model_type' (and no 'architectures' to infer it from)");
  static const std::pair<const char*, const char*> classes[] = {{"LlamaForCausalLM", "llama"},
                                                                {"MistralForCausalLM", "mistral"},
                                                                {"Qwen2ForCausalLM", "qwen2"},
                                                                {"Qwen3ForCausalLM", "qwen3"}};
  const std::string name = arch->front().get<std::string>();
  for (const auto& [cls, model_type] : classes)
    if (name == cls) return model_type;
  throw Error(path + ": unsupported architecture '" + printable(name) +
              "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
              "Qwen3ForCausalLM)");
}

// Refuses what the forward pass does not compute (it would otherwise run a different model
// without a word): biases the weights have no slot for and activations other than SiLU.
void check_hf_features(const json& j, const ModelConfig& c, const std::string& path) {
  const std::string act = json_get_or<std::string>(j, "hidden_act", "silu", path);
  check(act == "silu", path + ": hidden_act '" + printable(act) + "' is not supported (only silu)");
  check(!json_get_or<bool>(j, "mlp_bias", false, path),
        path + ": mlp_bias is not supported (the MLP has no bias)");
  // Qwen2 has fixed q/k/v biases; elsewhere attention_bias also adds an o_proj bias.
  check(c.arch == Architecture::QWEN2 || !json_get_or<bool>(j, "attention_bias", false, path),
        path + ": attention_bias is not supported for " + printable(c.arch_name) +
            " (its o_proj bias has no place in the forward pass)");
}

// Attention here always sees the whole context. A sliding window (Mistral's sliding_window;
// Qwen's only under use_sliding_window) gives the same result up to the window's length, so
// such a model's context length is capped there rather than refused.
int hf_context_length(const json& j, const ModelConfig& c, int declared, const std::string& path) {
  const bool windowed =
      c.arch_name == "mistral" || json_get_or<bool>(j, "use_sliding_window", false, path);
  if (!windowed || !find(j, "sliding_window")) return declared;
  return std::min(declared, json_int(j, "sliding_window", kPositions, path));
}

}  // namespace

ModelConfig config_from_hf_json(const std::string& path) {
  const json j = read_json_file(path);
  check(j.is_object(), path + ": not a JSON object");
  ModelConfig c;
  c.arch_name = hf_model_type(j, path);
  c.arch = parse_arch(c.arch_name);
  check_hf_features(j, c, path);
  c.n_layers = json_int(j, "num_hidden_layers", kLayers, path);
  c.hidden = json_int(j, "hidden_size", kHidden, path);
  c.n_heads = json_int(j, "num_attention_heads", kHeads, path);
  c.n_kv_heads = json_int(j, "num_key_value_heads", kHeads, path, c.n_heads);
  c.head_dim = json_int(j, "head_dim", kHeadDim, path, c.hidden / c.n_heads);
  c.ffn_hidden = json_int(j, "intermediate_size", kFfn, path);
  c.vocab_size = json_int(j, "vocab_size", kVocab, path);
  c.max_positions =
      hf_context_length(j, c, json_int(j, "max_position_embeddings", kPositions, path, 4096), path);
  c.rms_eps = json_positive_float(j, "rms_norm_eps", path, 1e-6);
  c.tied_embeddings = json_get_or<bool>(j, "tie_word_embeddings", false, path);
  c.qkv_bias = c.arch == Architecture::QWEN2;
  c.qk_norm = c.arch == Architecture::QWEN3;
  c.rope.head_dim = c.head_dim;
  // transformers 5 nests rope settings in rope_parameters; older files use rope_theta and
  // rope_scaling at the top level.
  json rope = json::object();
  if (const json* p = find(j, "rope_parameters"); p && p->is_object())
    rope = *p;
  else if (const json* s = find(j, "rope_scaling"); s && s->is_object())
    rope = *s;
  const double top_theta = json_positive_float(j, "rope_theta", path, 10000.0);
  c.rope.theta = json_positive_float(rope, "rope_theta", path, top_theta);
  const std::string rope_type = json_get_or<std::string>(
      rope, "rope_type", json_get_or<std::string>(rope, "type", "default", path), path);
  if (rope_type == "llama3") {
    read_llama3_scaling(rope, path, c.rope);
  } else {
    check(rope_type == "default", path + ": unsupported rope type '" + printable(rope_type) + "'");
  }
  c.validate();
  return c;
}

}  // namespace kvp
