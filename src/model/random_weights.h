#pragma once
// A model at its real size without its weight file: every weight of the Hugging Face layout
// (as weights_from_safetensors gives it) filled with deterministic pseudo-random values, for
// benchmarks of speed and memory at 7-8B scale where only the shapes matter. The values are a
// counter-based hash of (seed, tensor, element), so they do not depend on the thread count.
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "model/config.h"
#include "model/model.h"
#include "model/weights.h"

namespace kvp {

// Host tensors: norms 1, biases and matrices uniform, scaled so that activations stay finite
// and varied through every layer. Matrices and the embedding are BF16, norms and biases F32.
// Generated on every hardware thread.
ModelWeights random_weights(const ModelConfig& config, uint64_t seed);

// The model a Hugging Face config.json describes, with random_weights(seed); the Model moves
// each weight into the backend (Backend::load_weight), as for a model read from files.
std::unique_ptr<Model> random_model(const std::string& config_json_path, Backend& backend,
                                    uint64_t seed = 0);

}  // namespace kvp
