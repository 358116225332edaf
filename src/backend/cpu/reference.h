#pragma once
// Scalar reference implementations of every op: plain loops, f32 (dequantisation exact to
// the format), written for clarity. Each backend's ops are tested against these.
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/rope_freq.h"

namespace kvp::ref {

// Dequantises n elements (a multiple of the block size) of a row of type t.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

void matmul(const Tensor& x, const Tensor& w, Tensor& y);
// argmax per row of matmul(x, w), the first index on ties.
std::vector<int32_t> matmul_argmax(const Tensor& x, const Tensor& w);
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);
void rope(Tensor& x, const int32_t* positions, const RopeParams& params);
void silu_mul(Tensor& gate, const Tensor& up);
void add(Tensor& y, const Tensor& x);
void add_bias(Tensor& y, const Tensor& bias);
void embed(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out);
void attention(const Tensor& q, const KvSegments& kv, float scale, Tensor& out);
// Backend::attention_column_sums (double accumulation).
void attention_column_sums(const Tensor& q, const KvSegments& kv, float scale, Tensor& out);

}  // namespace kvp::ref
