#include "model/weights.h"

#include <charconv>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string_view>

#include "core/error.h"
#include "core/half.h"
#include "core/text.h"
#include "io/gguf.h"
#include "io/safetensors.h"

namespace kvp {

namespace {

void expect_shape(const Tensor& t, const std::string& name, std::initializer_list<int64_t> shape) {
  bool ok = t.ndim() == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t d : shape) ok = ok && t.dim(i++) == d;
  if (ok) return;
  std::string want;
  for (int64_t d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
  throw Error("tensor " + name + " has shape " + t.shape_string() + ", expected [" + want + "]");
}

// Norm weights and biases are tiny: keep them F32 so every op that reads them sees one type.
Tensor to_f32(const Tensor& t, const std::string& name) {
  check(t.dtype() == DType::F32 || t.dtype() == DType::F16 || t.dtype() == DType::BF16,
        "tensor " + name + " must be F32, F16 or BF16, not " + dtype_name(t.dtype()));
  if (t.dtype() == DType::F32) return t;
  Tensor out = Tensor::empty(DType::F32, t.shape(), t.ndim());
  const uint16_t* src = t.ptr<uint16_t>();
  float* dst = out.ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    dst[i] = t.dtype() == DType::F16 ? f16_to_f32(src[i]) : bf16_to_f32(src[i]);
  }
  return out;
}

// Fills the weights through a name lookup that knows the file's naming scheme.
struct Names {
  std::string embed, out_norm, output;
  std::function<std::string(int, const char*)> layer;  // (layer, role) -> tensor name
};

ModelWeights load(const ModelConfig& c, const Names& names,
                  const std::function<bool(const std::string&)>& has,
                  const std::function<Tensor(const std::string&)>& get, bool unpermute_qk) {
  const int64_t q_rows = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_rows = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    Tensor t = get(name);
    expect_shape(t, name, {rows, cols});
    return t;
  };
  auto vec = [&](const std::string& name, int64_t n) {
    Tensor t = to_f32(get(name), name);
    expect_shape(t, name, {n});
    return t;
  };
  ModelWeights w;
  w.token_embedding = matrix(names.embed, c.vocab_size, c.hidden);
  w.output_norm = vec(names.out_norm, c.hidden);
  if (!c.tied_embeddings && has(names.output)) {
    w.output = matrix(names.output, c.vocab_size, c.hidden);
  } else {
    w.output = w.token_embedding;
  }
  for (int l = 0; l < c.n_layers; ++l) {
    auto n = [&](const char* role) { return names.layer(l, role); };
    LayerWeights lw;
    lw.attn_norm = vec(n("attn_norm"), c.hidden);
    lw.wq = matrix(n("wq"), q_rows, c.hidden);
    lw.wk = matrix(n("wk"), kv_rows, c.hidden);
    lw.wv = matrix(n("wv"), kv_rows, c.hidden);
    lw.wo = matrix(n("wo"), c.hidden, q_rows);
    if (unpermute_qk) {
      lw.wq = unpermute_rotary_rows(lw.wq, c.n_heads, c.head_dim);
      lw.wk = unpermute_rotary_rows(lw.wk, c.n_kv_heads, c.head_dim);
    }
    if (c.qkv_bias) {
      lw.bq = vec(n("bq"), q_rows);
      lw.bk = vec(n("bk"), kv_rows);
      lw.bv = vec(n("bv"), kv_rows);
    }
    if (c.qk_norm) {
      lw.q_norm = vec(n("q_norm"), c.head_dim);
      lw.k_norm = vec(n("k_norm"), c.head_dim);
    }
    lw.ffn_norm = vec(n("ffn_norm"), c.hidden);
    lw.w_gate = matrix(n("w_gate"), c.ffn_hidden, c.hidden);
    lw.w_up = matrix(n("w_up"), c.ffn_hidden, c.hidden);
    lw.w_down = matrix(n("w_down"), c.hidden, c.ffn_hidden);
    w.layers.push_back(std::move(lw));
  }
  return w;
}

// The layer of a tensor named <prefix><digits>.<role>, or nothing for any other name. An index
// too long for uint64 reads as its largest value: past any layer count either way.
std::optional<uint64_t> layer_of(std::string_view name, std::string_view prefix,
                                 std::string_view* digits) {
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  const std::string_view rest = name.substr(prefix.size());
  const size_t dot = rest.find('.');
  if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
  *digits = rest.substr(0, dot);
  uint64_t index = 0;
  const auto [end, ec] = std::from_chars(digits->data(), digits->data() + digits->size(), index);
  if (end != digits->data() + digits->size()) return std::nullopt;  // not all digits
  return ec == std::errc::result_out_of_range ? UINT64_MAX : index;
}

// A checkpoint holding layers past the count its config declares would otherwise run as a
// shallower model without a word. Names the lowest such layer, one of its tensors and the count.
void check_layer_count(const std::vector<std::string>& names, std::string_view prefix, int n_layers,
                       const std::string& where, const std::string& declared_by) {
  const std::string* extra = nullptr;
  uint64_t extra_index = 0;
  std::string_view extra_digits;
  for (const std::string& name : names) {
    std::string_view digits;
    const std::optional<uint64_t> index = layer_of(name, prefix, &digits);
    if (!index || *index < static_cast<uint64_t>(n_layers)) continue;
    if (extra && *index >= extra_index) continue;
    extra = &name;
    extra_index = *index;
    extra_digits = digits;
  }
  if (!extra) return;
  throw Error(where + ": the checkpoint holds layer " + printable(extra_digits) + " (tensor " +
              printable(*extra) + ") but " + declared_by + " declares " + std::to_string(n_layers) +
              (n_layers == 1 ? " layer" : " layers"));
}

// Calls fn on each weight tensor once: a tied output matrix is the embedding, not a second one.
template <typename Fn>
void for_each_weight(const ModelWeights& w, const Fn& fn) {
  fn(w.token_embedding);
  fn(w.output_norm);
  if (w.output.data() != w.token_embedding.data()) fn(w.output);
  for (const auto& l : w.layers) {
    for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv,
                            &l.q_norm, &l.k_norm, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      fn(*t);
    }
  }
}

}  // namespace

size_t ModelWeights::nbytes() const {
  size_t n = 0;
  for_each_weight(*this, [&](const Tensor& t) { n += t.nbytes(); });
  return n;
}

int64_t ModelWeights::n_params() const {
  int64_t n = 0;
  for_each_weight(*this, [&](const Tensor& t) { n += t.numel(); });
  return n;
}

Tensor unpermute_rotary_rows(const Tensor& w, int n_heads, int head_dim) {
  check(w.ndim() == 2 && w.dim(0) == static_cast<int64_t>(n_heads) * head_dim,
        "rotary rows: matrix " + w.shape_string() + " does not hold " + std::to_string(n_heads) +
            " heads of " + std::to_string(head_dim));
  Tensor out = Tensor::empty(w.dtype(), {w.dim(0), w.dim(1)});
  const size_t rb = w.row_bytes();
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    for (int j = 0; j < half; ++j) {
      for (int p = 0; p < 2; ++p) {
        const int64_t src = static_cast<int64_t>(h) * head_dim + 2 * j + p;
        const int64_t dst = static_cast<int64_t>(h) * head_dim + p * half + j;
        std::memcpy(out.row_ptr(dst), w.row_ptr(src), rb);
      }
    }
  }
  return out;
}

ModelWeights weights_from_gguf(const GgufFile& gguf, const ModelConfig& config) {
  static const std::map<std::string, std::string> roles = {{"attn_norm", "attn_norm.weight"},
                                                           {"wq", "attn_q.weight"},
                                                           {"wk", "attn_k.weight"},
                                                           {"wv", "attn_v.weight"},
                                                           {"wo", "attn_output.weight"},
                                                           {"bq", "attn_q.bias"},
                                                           {"bk", "attn_k.bias"},
                                                           {"bv", "attn_v.bias"},
                                                           {"q_norm", "attn_q_norm.weight"},
                                                           {"k_norm", "attn_k_norm.weight"},
                                                           {"ffn_norm", "ffn_norm.weight"},
                                                           {"w_gate", "ffn_gate.weight"},
                                                           {"w_up", "ffn_up.weight"},
                                                           {"w_down", "ffn_down.weight"}};
  Names names{
      "token_embd.weight", "output_norm.weight", "output.weight",
      [](int l, const char* role) { return "blk." + std::to_string(l) + "." + roles.at(role); }};
  std::vector<std::string> tensor_names;
  tensor_names.reserve(gguf.tensors().size());
  for (const GgufTensorInfo& info : gguf.tensors()) tensor_names.push_back(info.name);
  check_layer_count(tensor_names, "blk.", config.n_layers, gguf.path(),
                    config.arch_name + ".block_count");
  // llama.cpp's converter permutes Q/K rows of llama-arch models only.
  const bool unpermute = config.arch == Architecture::LLAMA;
  return load(
      config, names, [&](const std::string& n) { return gguf.find_tensor(n) != nullptr; },
      [&](const std::string& n) { return gguf.tensor(n); }, unpermute);
}

ModelWeights weights_from_safetensors(const SafetensorsModel& st, const ModelConfig& config) {
  static const std::map<std::string, std::string> roles = {
      {"attn_norm", "input_layernorm.weight"},
      {"wq", "self_attn.q_proj.weight"},
      {"wk", "self_attn.k_proj.weight"},
      {"wv", "self_attn.v_proj.weight"},
      {"wo", "self_attn.o_proj.weight"},
      {"bq", "self_attn.q_proj.bias"},
      {"bk", "self_attn.k_proj.bias"},
      {"bv", "self_attn.v_proj.bias"},
      {"q_norm", "self_attn.q_norm.weight"},
      {"k_norm", "self_attn.k_norm.weight"},
      {"ffn_norm", "post_attention_layernorm.weight"},
      {"w_gate", "mlp.gate_proj.weight"},
      {"w_up", "mlp.up_proj.weight"},
      {"w_down", "mlp.down_proj.weight"}};
  Names names{"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
              [](int l, const char* role) {
                return "model.layers." + std::to_string(l) + "." + roles.at(role);
              }};
  check_layer_count(st.names(), "model.layers.", config.n_layers, st.dir(),
                    "config.json num_hidden_layers");
  return load(
      config, names, [&](const std::string& n) { return st.has(n); },
      [&](const std::string& n) { return st.tensor(n); }, false);
}

}  // namespace kvp
