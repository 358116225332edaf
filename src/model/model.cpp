#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"

namespace kvp {

namespace {

// The start of a scratch tensor (F32, rows of t.cols()), reshaped to `shape`.
Tensor rows_view(const Tensor& t, std::initializer_list<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return t.row_slice(0, n / t.cols(), shape);
}

}  // namespace

Model::Model(ModelConfig config, ModelWeights weights, Backend& backend)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(backend) {
  // Each weight moves into the backend's memory once; a tied output matrix stays one tensor.
  std::map<const void*, Tensor> loaded;
  auto load = [&](Tensor& t) {
    if (!t.defined()) return;
    auto [it, fresh] = loaded.try_emplace(t.data());
    if (fresh) it->second = backend_.load_weight(t);
    t = it->second;
  };
  load(weights_.token_embedding);
  load(weights_.output_norm);
  load(weights_.output);
  for (LayerWeights& l : weights_.layers) {
    for (Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.q_norm,
                      &l.k_norm, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down})
      load(*t);
  }
}

KVCache Model::make_cache(int64_t capacity) const {
  return KVCache(backend_, config_.n_layers, config_.n_kv_heads, config_.head_dim, capacity,
                 kv_dtype_);
}

void Model::set_kv_dtype(DType dtype) {
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16,
        "the KV cache stores f32, f16 or bf16 rows, not " + dtype_name(dtype));
  kv_dtype_ = dtype;
}

void Model::ensure_scratch(int64_t T, int64_t groups) {
  const ModelConfig& c = config_;
  if (groups > s_.group_capacity) {
    s_.last = backend_.alloc(DType::F32, {groups, c.hidden});
    s_.logits = backend_.alloc(DType::F32, {groups, c.vocab_size});
    s_.group_capacity = groups;
  }
  if (T <= s_.capacity) return;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  s_.x = backend_.alloc(DType::F32, {T, c.hidden});
  s_.normed = backend_.alloc(DType::F32, {T, c.hidden});
  s_.q = backend_.alloc(DType::F32, {T, q_dim});
  s_.k = backend_.alloc(DType::F32, {T, kv_dim});
  s_.v = backend_.alloc(DType::F32, {T, kv_dim});
  s_.attn = backend_.alloc(DType::F32, {T, q_dim});
  s_.proj = backend_.alloc(DType::F32, {T, c.hidden});
  s_.gate = backend_.alloc(DType::F32, {T, c.ffn_hidden});
  s_.up = backend_.alloc(DType::F32, {T, c.ffn_hidden});
  s_.capacity = T;
}

const Tensor& Model::forward(const int32_t* ids, const int32_t* positions, int64_t T,
                             KVCache& cache, LayerHook* hook) {
  return logits_of(run({ForwardGroup{ids, positions, T, &cache}}, hook));
}

const Tensor& Model::forward_batch(const std::vector<ForwardGroup>& groups) {
  return logits_of(run(groups, nullptr));
}

const Tensor& Model::logits_of(const Tensor& last) {
  s_.logits_out = rows_view(s_.logits, {last.rows(), config_.vocab_size});
  backend_.matmul(last, weights_.output, s_.logits_out);
  return s_.logits_out;
}

const std::vector<int32_t>& Model::forward_batch_greedy(const std::vector<ForwardGroup>& groups) {
  s_.greedy = backend_.matmul_argmax(run(groups, nullptr), weights_.output);
  return s_.greedy;
}

const Tensor& Model::run(const std::vector<ForwardGroup>& groups, LayerHook* hook) {
  const ModelConfig& c = config_;
  check(!groups.empty(), "forward: no sequences");
  check(!hook || groups.size() == 1, "forward: a layer hook needs a single sequence");
  const int64_t G = static_cast<int64_t>(groups.size());
  int64_t T = 0;
  for (const ForwardGroup& g : groups) {
    check(g.n > 0 && g.ids && g.positions && g.cache, "forward: an empty sequence");
    for (int64_t t = 0; t < g.n; ++t) {
      if (g.ids[t] < 0 || g.ids[t] >= c.vocab_size)
        throw Error("token id " + std::to_string(g.ids[t]) + " is outside the vocabulary");
    }
    T += g.n;
  }
  ensure_scratch(T, G);
  // One sequence reads its ids and positions in place; several are concatenated.
  const int32_t* ids = groups[0].ids;
  const int32_t* positions = groups[0].positions;
  if (G > 1) {
    s_.ids.clear();
    s_.positions.clear();
    for (const ForwardGroup& g : groups) {
      s_.ids.insert(s_.ids.end(), g.ids, g.ids + g.n);
      s_.positions.insert(s_.positions.end(), g.positions, g.positions + g.n);
    }
    ids = s_.ids.data();
    positions = s_.positions.data();
  }
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
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  be.embed(weights_.token_embedding, ids, T, x);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    be.rms_norm(x, w.attn_norm, c.rms_eps, normed);
    const Backend::MatmulOut qkv[] = {{&w.wq, &q}, {&w.wk, &k}, {&w.wv, &v}};
    be.matmul_multi(normed, qkv);
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
    Tensor q_prerope;
    if (hook) {  // one copy of the layer's queries (T x Hq x D floats), only for the hook
      if (s_.q_prerope.numel() < T * H * D) s_.q_prerope = backend_.alloc(DType::F32, {T, H * D});
      q_prerope = rows_view(s_.q_prerope, {T, H, D});
      be.copy(q, 0, q_prerope, 0, q.nbytes());
    }
    be.rope(q_heads, positions, c.rope);
    be.rope(k_heads, positions, c.rope);
    // Each group appends its rows to its own cache and attends over it; one launch for all.
    int64_t row = 0;
    s_.group_q.clear();
    s_.group_out.clear();
    for (const ForwardGroup& g : groups) {
      g.cache->append(l, k.row_slice(row, row + g.n, {g.n, Hkv, D}),
                      v.row_slice(row, row + g.n, {g.n, Hkv, D}), positions + row);
      s_.group_q.push_back(q.row_slice(row, row + g.n, {g.n, H, D}));
      s_.group_out.push_back(attn.row_slice(row, row + g.n, {g.n, H, D}));
      row += g.n;
    }
    s_.jobs.clear();
    for (size_t i = 0; i < groups.size(); ++i)
      s_.jobs.push_back({&s_.group_q[i], groups[i].cache->view(l), &s_.group_out[i]});
    be.attention_batch(s_.jobs, scale);
    if (hook) {
      LayerView view;
      view.layer = l;
      view.config = &c;
      view.weights = &w;
      view.hidden_states = &normed;
      view.queries = &q_heads;
      view.queries_prerope = &q_prerope;
      view.positions = positions;
      view.n_tokens = T;
      view.cache = groups[0].cache;
      view.backend = &be;
      hook->after_attention(view);
    }
    be.matmul_add(attn, w.wo, x, proj);
    be.rms_norm(x, w.ffn_norm, c.rms_eps, normed);
    const Backend::MatmulOut gate_up[] = {{&w.w_gate, &gate}, {&w.w_up, &up}};
    be.matmul_multi(normed, gate_up);
    be.silu_mul(gate, up);
    be.matmul_add(gate, w.w_down, x, proj);
  }
  // The last token of each group goes on to the output norm and the vocabulary projection.
  Tensor last = rows_view(s_.last, {G, c.hidden});
  int64_t row = 0;
  const size_t row_bytes = x.row_bytes();
  for (int64_t g = 0; g < G; ++g) {
    row += groups[static_cast<size_t>(g)].n;
    be.copy(x, static_cast<size_t>(row - 1) * row_bytes, last, static_cast<size_t>(g) * row_bytes,
            row_bytes);
  }
  be.rms_norm(last, weights_.output_norm, c.rms_eps, last);
  s_.last_out = last;
  return s_.last_out;
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
