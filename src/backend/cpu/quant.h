#pragma once
// Quantised-weight kernels of the CPU backend (quant_dot.cpp): fast dequantisation of rows
// and the matrix-vector products of decode, which read the weights in their stored form
// (never widened to f32 in memory) and compute in f32: for a block with scale d (and min
// m), sum_i (d q_i + m) x_i = d * dot(q, x) + m * sum(x), the block sums of x computed
// once per activation vector.
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace kvp::cpu {

// Dequantises n elements of a row of type t; bit-identical to ref::dequantize_row.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// xsum[b] = x[32 b] + ... + x[32 b + 31] for b < K / 32 (K a multiple of 32).
void block_sums32(const float* x, int64_t K, float* xsum);

// Whether gemv needs block_sums32 of x for weights of type t.
bool gemv_needs_block_sums(DType t);

// y[r] = sum_i w[r, i] * x[i] for r < n_rows; row r of w starts at w + r * row_bytes and
// holds K elements of type t. xsum: block_sums32(x) when gemv_needs_block_sums(t).
void gemv(DType t, const uint8_t* w, size_t row_bytes, int64_t n_rows, int64_t K, const float* x,
          const float* xsum, float* y);

}  // namespace kvp::cpu
