#include "backend/cpu/quant.h"

#include "backend/cpu/reference.h"

namespace kvp::cpu {

void dequantize_row(DType t, const void* src, float* dst, int64_t n) { ref::dequantize_row(t, src, dst, n); }

}  // namespace kvp::cpu
