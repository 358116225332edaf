#pragma once
// The Llama-family transformer forward pass over the segmented KV cache. Model code calls
// ops only through Backend, so the same forward runs on every backend.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cache/kv_cache.h"
#include "model/config.h"
#include "model/weights.h"

namespace kvp {

// What a press sees right after a layer's attention during a context prefill.
struct LayerView {
  int layer = 0;
  const ModelConfig* config = nullptr;
  const LayerWeights* weights = nullptr;
  const Tensor* hidden_states = nullptr;  // [T, hidden]: the attention block's normed input
  const Tensor* queries = nullptr;        // [T, n_heads, head_dim], after RoPE
  // The same queries before RoPE (after bias and q_norm), kept for presses that need them
  // (expected_attention's statistics) so they need not recompute the projection.
  const Tensor* queries_prerope = nullptr;  // [T, n_heads, head_dim]
  const int32_t* positions = nullptr;       // [T]
  int64_t n_tokens = 0;                     // T: the context tokens of this prefill
  KVCache* cache = nullptr;                 // keys after RoPE and values of this layer
  Backend* backend = nullptr;
};

class LayerHook {
 public:
  virtual ~LayerHook() = default;
  virtual void after_attention(LayerView& view) = 0;
};

// One sequence of a batched forward: n tokens appended to their own cache.
struct ForwardGroup {
  const int32_t* ids = nullptr;
  const int32_t* positions = nullptr;
  int64_t n = 0;
  KVCache* cache = nullptr;
};

class Model {
 public:
  Model(ModelConfig config, ModelWeights weights, Backend& backend);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  Backend& backend() { return backend_; }

  // Runs T tokens through every layer, appending their keys and values to the cache, and
  // returns the logits of the last token ([vocab], F32; valid until the next call).
  // The hook, when given, runs after each layer's attention.
  const Tensor& forward(const int32_t* ids, const int32_t* positions, int64_t T, KVCache& cache,
                        LayerHook* hook = nullptr);

  // Runs several independent sequences at once, each on its own cache: the matmuls see every
  // group's tokens together (one pass over the weights for all of them) and attention reads
  // each group's own cache. Returns the logits of each group's last token ([groups, vocab],
  // F32; valid until the next call). Serves the eval grid, whose cells answer the same
  // question from differently compressed caches.
  const Tensor& forward_batch(const std::vector<ForwardGroup>& groups);
  // forward_batch() for greedy decoding: each group's next token, exactly argmax of the
  // logits forward_batch() would return (the first index on ties), without all of them
  // (Backend::matmul_argmax). Valid until the next call.
  const std::vector<int32_t>& forward_batch_greedy(const std::vector<ForwardGroup>& groups);

  // A cache sized for `capacity` tokens per segment, storing rows as kv_dtype().
  KVCache make_cache(int64_t capacity) const;
  // The row type of the caches make_cache() makes: F32 (the default), F16 or BF16 (--kv-dtype).
  DType kv_dtype() const { return kv_dtype_; }
  void set_kv_dtype(DType dtype);

 private:
  struct Scratch {
    int64_t capacity = 0;
    Tensor x, normed, q, k, v, attn, proj, gate, up;
    Tensor q_prerope;  // allocated on the first forward with a hook
    int64_t group_capacity = 0;
    Tensor last, logits;                     // [group_capacity, hidden], [group_capacity, vocab]
    Tensor logits_out;                       // the rows of `logits` the last call filled
    Tensor last_out;                         // the rows of `last` the last run() filled (normed)
    std::vector<int32_t> greedy;             // forward_batch_greedy's tokens
    std::vector<int32_t> ids, positions;     // the groups' tokens, concatenated
    std::vector<Tensor> group_q, group_out;  // per-group views into q and attn
    std::vector<AttentionJob> jobs;
  };
  void ensure_scratch(int64_t T, int64_t groups);
  // Every layer, then the output norm of each group's last token: [groups, hidden].
  const Tensor& run(const std::vector<ForwardGroup>& groups, LayerHook* hook);
  // The vocabulary projection of run()'s rows, into s_.logits.
  const Tensor& logits_of(const Tensor& last);

  ModelConfig config_;
  ModelWeights weights_;
  Backend& backend_;
  DType kv_dtype_ = DType::F32;
  Scratch s_;
};

// Loads a model from a GGUF file or a Hugging Face directory (config.json + safetensors).
std::unique_ptr<Model> load_model(const std::string& path, Backend& backend);

}  // namespace kvp
