#include "model/model.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"

namespace kvp {

namespace {

// A view of the first `rows` rows of a scratch tensor, reshaped.
Tensor rows_view(Tensor& t, std::initializer_list<int64_t> shape) {
  return Tensor::view(t.dtype(), shape, t.data(), t.device());
}

}  // namespace

Model::Model(ModelConfig config, ModelWeights weights, Backend& backend)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(backend) {
  s_.logits = Tensor::empty(DType::F32, {1, config_.vocab_size});
  s_.last = Tensor::empty(DType::F32, {1, config_.hidden});
}

KVCache Model::make_cache(int64_t capacity) const {
  return KVCache(config_.n_layers, config_.n_kv_heads, config_.head_dim, capacity);
}

void Model::ensure_scratch(int64_t T) {
  if (T <= s_.capacity) return;
  const ModelConfig& c = config_;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  s_.x = Tensor::empty(DType::F32, {T, c.hidden});
  s_.normed = Tensor::empty(DType::F32, {T, c.hidden});
  s_.q = Tensor::empty(DType::F32, {T, q_dim});
  s_.k = Tensor::empty(DType::F32, {T, kv_dim});
  s_.v = Tensor::empty(DType::F32, {T, kv_dim});
  s_.attn = Tensor::empty(DType::F32, {T, q_dim});
  s_.proj = Tensor::empty(DType::F32, {T, c.hidden});
  s_.gate = Tensor::empty(DType::F32, {T, c.ffn_hidden});
  s_.up = Tensor::empty(DType::F32, {T, c.ffn_hidden});
  s_.capacity = T;
}

const Tensor& Model::forward(const int32_t* ids, const int32_t* positions, int64_t T,
                             KVCache& cache, LayerHook* hook) {
  const ModelConfig& c = config_;
  check(T > 0, "forward: no tokens");
  for (int64_t t = 0; t < T; ++t) {
    check(ids[t] >= 0 && ids[t] < c.vocab_size,
          "token id " + std::to_string(ids[t]) + " is outside the vocabulary");
  }
  ensure_scratch(T);
  Backend& be = backend_;
  const int64_t H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim;
  Tensor x = rows_view(s_.x, {T, c.hidden});
  Tensor normed = rows_view(s_.normed, {T, c.hidden});
  Tensor q = rows_view(s_.q, {T, H * D});
  Tensor k = rows_view(s_.k, {T, Hkv * D});
  Tensor v = rows_view(s_.v, {T, Hkv * D});
  Tensor attn = rows_view(s_.attn, {T, H * D});
  Tensor proj = rows_view(s_.proj, {T, c.hidden});
  Tensor gate = rows_view(s_.gate, {T, c.ffn_hidden});
  Tensor up = rows_view(s_.up, {T, c.ffn_hidden});
  Tensor q_heads = rows_view(s_.q, {T, H, D});
  Tensor k_heads = rows_view(s_.k, {T, Hkv, D});
  Tensor attn_heads = rows_view(s_.attn, {T, H, D});
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  be.embed(weights_.token_embedding, ids, T, x);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    be.rms_norm(x, w.attn_norm, c.rms_eps, normed);
    be.matmul(normed, w.wq, q);
    be.matmul(normed, w.wk, k);
    be.matmul(normed, w.wv, v);
    if (c.qkv_bias) {
      be.add_bias(q, w.bq);
      be.add_bias(k, w.bk);
      be.add_bias(v, w.bv);
    }
    if (c.qk_norm) {
      Tensor q_rows = rows_view(s_.q, {T * H, D});
      Tensor k_rows = rows_view(s_.k, {T * Hkv, D});
      be.rms_norm(q_rows, w.q_norm, c.rms_eps, q_rows);
      be.rms_norm(k_rows, w.k_norm, c.rms_eps, k_rows);
    }
    be.rope(q_heads, positions, c.rope);
    be.rope(k_heads, positions, c.rope);
    cache.append(l, k.ptr<float>(), v.ptr<float>(), T, positions);
    be.attention(q_heads, cache.view(l), scale, attn_heads);
    if (hook) {
      LayerView view;
      view.layer = l;
      view.config = &c;
      view.weights = &w;
      view.hidden_states = &normed;
      view.queries = &q_heads;
      view.positions = positions;
      view.n_tokens = T;
      view.cache = &cache;
      view.backend = &be;
      hook->after_attention(view);
    }
    be.matmul(attn, w.wo, proj);
    be.add(x, proj);
    be.rms_norm(x, w.ffn_norm, c.rms_eps, normed);
    be.matmul(normed, w.w_gate, gate);
    be.matmul(normed, w.w_up, up);
    be.silu_mul(gate, up);
    be.matmul(gate, w.w_down, proj);
    be.add(x, proj);
  }
  Tensor last = Tensor::view(DType::F32, {1, c.hidden}, s_.x.ptr<float>() + (T - 1) * c.hidden);
  be.rms_norm(last, weights_.output_norm, c.rms_eps, s_.last);
  be.matmul(s_.last, weights_.output, s_.logits);
  return s_.logits;
}

std::unique_ptr<Model> load_model(const std::string& path, Backend& backend) {
  namespace fs = std::filesystem;
  std::error_code ec;
  check(fs::exists(path, ec), "model not found: " + path);
  if (fs::is_directory(path, ec)) {
    ModelConfig config = config_from_hf_json((fs::path(path) / "config.json").string());
    SafetensorsModel st = SafetensorsModel::open_dir(path);
    ModelWeights weights = weights_from_safetensors(st, config);
    return std::make_unique<Model>(std::move(config), std::move(weights), backend);
  }
  GgufFile gguf = GgufFile::open(path);
  ModelConfig config = config_from_gguf(gguf);
  ModelWeights weights = weights_from_gguf(gguf, config);
  return std::make_unique<Model>(std::move(config), std::move(weights), backend);
}

}  // namespace kvp
