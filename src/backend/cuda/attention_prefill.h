#pragma once
// Causal prefill attention on tensor cores (attention_prefill.cu).
#include "backend/backend.h"

namespace kvp::cuda {

class CudaBackend;

// Runs the job with the tensor-core kernel and returns true when that kernel applies: one
// query tensor of at least kPrefillMinQueries tokens over a cache of 16-bit rows (F16, BF16) with
// no borrowed prefix and head_dim 64 or 128. Returns false, having done nothing, otherwise.
constexpr int64_t kPrefillMinQueries = 128;
bool try_prefill_attention(CudaBackend& be, const AttentionJob& job, float scale);

}  // namespace kvp::cuda
