#pragma once
// Device helpers of the attention kernels: where a segment's row lives, how many rows a
// query sees, and the query tile in shared memory.
#include "backend/cuda/attention_tables.h"
#include "backend/cuda/device_util.cuh"

namespace kvp::cuda {

// Row j of a segment: a borrowed prefix row, or one of its own.
template <typename T>
__device__ __forceinline__ const T* kv_row(const void* own, const void* borrowed, const SegDesc& sd,
                                           const int32_t* prefix_rows, int64_t j, int D) {
  if (j < sd.prefix_len)
    return static_cast<const T*>(borrowed) +
           (sd.prefix_offset + prefix_rows[sd.prefix_rows_start + j]) * D;
  return static_cast<const T*>(own) + (sd.offset + j - sd.prefix_len) * D;
}

// Causal: query token t of tq new ones sees rows [0, len - tq + t].
__device__ __forceinline__ int64_t visible_rows(const JobDesc& job, const SegDesc& sd, int qv) {
  return sd.len - job.tq + qv / job.group + 1;
}

// qs[qi][d] = query vector qv_begin + qi times scale (zero past qv_count).
template <int D, int QB>
__device__ __forceinline__ void load_queries(const JobDesc& job, int seg, int qv_begin,
                                             int qv_count, float scale, float* qs) {
  for (int e = threadIdx.x; e < QB * D; e += blockDim.x) {
    const int qi = e / D, d = e % D;
    float v = 0.f;
    if (qi < qv_count) {
      const int qv = qv_begin + qi;
      const int64_t t = qv / job.group;
      const int64_t h = static_cast<int64_t>(seg) * job.group + qv % job.group;
      v = job.q[(t * job.hq + h) * D + d] * scale;
    }
    qs[e] = v;
  }
}

// The 16 bytes a lane loaded as f32 values (8 of a 16-bit type, 4 of f32).
template <typename T>
__device__ __forceinline__ void unpack_row(const uint4& u, float* out) {
  if constexpr (sizeof(T) == 4) {
    const float* f = reinterpret_cast<const float*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = f[i];
  } else {
    unpack8(u, static_cast<const T*>(nullptr), out);
  }
}

}  // namespace kvp::cuda
