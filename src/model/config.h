#pragma once
// Model hyper-parameters, read from GGUF metadata or a Hugging Face config.json.
#include <cstdint>
#include <string>

#include "backend/backend.h"

namespace kvp {

class GgufFile;

enum class Architecture { LLAMA, QWEN2, QWEN3 };

struct ModelConfig {
  Architecture arch = Architecture::LLAMA;
  std::string arch_name;  // as the file names it
  int n_layers = 0;
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_hidden = 0;
  int vocab_size = 0;
  int max_positions = 0;  // the model's context length
  float rms_eps = 1e-5f;
  bool tied_embeddings = false;
  bool qkv_bias = false;  // Qwen2
  bool qk_norm = false;   // Qwen3
  RopeParams rope;

  int group_size() const { return n_heads / n_kv_heads; }
  // Bytes of K and V for one token over all layers, in the cache's element type (f32).
  int64_t kv_bytes_per_token() const;
  // Parameters of the weights these shapes make (a tied output matrix counted once).
  int64_t n_params() const;
  // Checks every field for consistency; throws Error naming the offending field.
  void validate() const;
};

ModelConfig config_from_gguf(const GgufFile& gguf);
ModelConfig config_from_hf_json(const std::string& config_json_path);

}  // namespace kvp
