#pragma once
// Cache rows as F32 for the CPU kernels: the rows themselves when the cache stores F32, else
// converted into the caller's scratch (F16 and BF16 caches; the conversion is exact).
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/quant.h"

namespace kvp::cpu {

// One row (head_dim values of kv.dtype()) as F32; scratch holds head_dim floats.
inline const float* f32_row(const KvSegments& kv, const void* row, float* scratch) {
  if (kv.dtype() == DType::F32) return static_cast<const float*>(row);
  dequantize_row(kv.dtype(), row, scratch, kv.head_dim);
  return scratch;
}

// The same with the scratch as slot j of a buffer of rows, whose address is formed only when
// a conversion needs it (an F32 cache leaves the buffer empty, and null + offset is undefined).
inline const float* f32_row(const KvSegments& kv, const void* row, std::vector<float>& scratch,
                            int64_t j) {
  if (kv.dtype() == DType::F32) return static_cast<const float*>(row);
  return f32_row(kv, row, scratch.data() + j * kv.head_dim);
}

// Rows [0, kv.len[s]) of K (values = false) or V of segment s, which has no borrowed
// prefix, as F32 [len, head_dim]; buf holds the converted copy when one is needed.
inline const float* f32_segment(const KvSegments& kv, int64_t s, bool values,
                                std::vector<float>& buf) {
  const void* first = values ? kv.v_rows(s) : kv.k_rows(s);
  if (kv.dtype() == DType::F32) return static_cast<const float*>(first);
  const int64_t n = kv.len[s], D = kv.head_dim;
  buf.resize(static_cast<size_t>(n * D));
  const size_t rb = kv.row_bytes();
  for (int64_t j = 0; j < n; ++j)
    dequantize_row(kv.dtype(), static_cast<const uint8_t*>(first) + static_cast<size_t>(j) * rb,
                   buf.data() + j * D, D);
  return buf.data();
}

}  // namespace kvp::cpu
