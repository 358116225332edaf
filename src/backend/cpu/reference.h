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

// The press ops (reference_press.cpp), as Backend documents them.
void row_norms(const Tensor& x, Norm norm, Tensor& out);
void cosine_similarity(const Tensor& x, const Tensor& a, float eps, Tensor& out);
void normalize_rows(const Tensor& x, float eps, Tensor& out);
void reduce(const Tensor& x, int axis, Reduce op, Tensor& out);
void affine(Tensor& x, float scale, float shift);
void mul(Tensor& y, const Tensor& x);
void div(Tensor& y, const Tensor& x);
void softmax_rows(Tensor& x);
void transpose(const Tensor& x, Tensor& out);
void avg_pool(const Tensor& x, int64_t cols, int64_t kernel, double scale, Tensor& out);
void set_cols_to_max(Tensor& x, int64_t begin, int64_t end, float plus);
void scatter_value(Tensor& x, const Tensor& idx, float value);
void top_k(const Tensor& x, int64_t k, Tensor& idx);

}  // namespace kvp::ref
