#pragma once
// Quantised-weight kernels of the CPU backend (quant_dot.cpp): fast dequantisation of rows
// and the fused dot products that decode's matrix-vector products use.
#include <cstdint>

#include "core/dtype.h"

namespace kvp::cpu {

// Dequantises n elements of a row of type t; bit-identical to ref::dequantize_row.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

}  // namespace kvp::cpu
