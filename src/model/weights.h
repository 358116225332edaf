#pragma once
// The weights of a Llama-family model, as views into the mapped file (no copy, no widening),
// in the Hugging Face layout. The one exception: GGUF llama files store Q and K rows
// permuted for ggml's interleaved rotary embedding; those two matrices per layer are
// re-ordered once at load (a copy of quantised rows, a few percent of the model).
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace kvp {

struct LayerWeights {
  Tensor attn_norm, wq, wk, wv, wo;
  Tensor bq, bk, bv;      // Qwen2 only
  Tensor q_norm, k_norm;  // Qwen3 only
  Tensor ffn_norm, w_gate, w_up, w_down;
};

struct ModelWeights {
  Tensor token_embedding;  // [vocab, hidden]
  Tensor output_norm;      // [hidden]
  Tensor output;           // [vocab, hidden]; the embedding when tied
  std::vector<LayerWeights> layers;
  // Bytes of all weights as stored (quantised where the file is).
  size_t nbytes() const;
  // Elements of all weights (a tied output matrix counted once).
  int64_t n_params() const;
};

class GgufFile;
class SafetensorsModel;

ModelWeights weights_from_gguf(const GgufFile& gguf, const ModelConfig& config);
ModelWeights weights_from_safetensors(const SafetensorsModel& st, const ModelConfig& config);

// GGUF's llama Q/K row order -> Hugging Face's: within each head, ggml interleaves the two
// rotary halves (row 2j + p holds HF row p * head_dim / 2 + j).
Tensor unpermute_rotary_rows(const Tensor& w, int n_heads, int head_dim);

}  // namespace kvp
