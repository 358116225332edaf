// top_k: a stable descending radix sort of each row's keys (CUB), then the first k indices.
// The keys order floats as the reference ranks them: -0 equals +0 and NaN ranks last; the
// sort's stability puts ties in index order.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/op_checks.h"

namespace kvp::cuda {

namespace {

// Rows at least this long sort one device-wide sort each; shorter ones share a segmented sort.
constexpr int64_t kWideRow = 16384;

__global__ void keys_kernel(const float* x, int64_t n, int64_t C, uint32_t* keys, int32_t* ids,
                            int32_t* offsets, int64_t R) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    uint32_t b = __float_as_uint(v == 0.f ? 0.f : v);
    b = isnan(v) ? 0u : ((b & 0x80000000u) ? ~b : b | 0x80000000u);
    keys[i] = b;
    ids[i] = static_cast<int32_t>(i % C);
    if (i % C == 0 && i / C <= R) offsets[i / C] = static_cast<int32_t>(i);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) offsets[R] = static_cast<int32_t>(n);
}

__global__ void first_k_kernel(const int32_t* sorted, int64_t R, int64_t C, int64_t k,
                               int32_t* idx) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < R * k;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    idx[e] = sorted[(e / k) * C + e % k];
}

}  // namespace

void CudaBackend::top_k(const Tensor& x, int64_t k, Tensor& idx) {
  check_f32(this, x, "top_k x");
  check(idx.dtype() == DType::I32, "top_k: idx must be I32");
  check_dev(this, idx, "top_k idx");
  const int64_t R = x.rows(), C = x.cols(), n = R * C;
  check(k >= 0 && k <= C && idx.numel() == R * k, "top_k: idx must be [rows, k], k <= cols");
  check(n < INT32_MAX, "top_k: at most 2^31 entries on CUDA");
  if (R * k == 0) return;
  // keys_in, keys_out (u32), ids_in, ids_out (i32), offsets: one scratch buffer.
  const size_t words = static_cast<size_t>(4 * n + R + 1);
  auto* base = static_cast<uint32_t*>(scratch(Slot::SortKeys, words * 4));
  uint32_t *keys_in = base, *keys_out = base + n;
  auto* ids_in = reinterpret_cast<int32_t*>(base + 2 * n);
  auto* ids_out = reinterpret_cast<int32_t*>(base + 3 * n);
  auto* offsets = reinterpret_cast<int32_t*>(base + 4 * n);
  keys_kernel<<<blocks_for(n), 256, 0, stream()>>>(x.ptr<float>(), n, C, keys_in, ids_in, offsets,
                                                   R);
  check_launch("top_k keys");
  const int ni = static_cast<int>(n), ci = static_cast<int>(C), ri = static_cast<int>(R);
  size_t temp = 0;
  if (C >= kWideRow) {
    check_cuda(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp, keys_in, keys_out, ids_in,
                                                         ids_out, ci, 0, 32, stream()),
               "top_k sort size");
    void* t = scratch(Slot::SortTemp, temp);
    for (int64_t r = 0; r < R; ++r)
      check_cuda(cub::DeviceRadixSort::SortPairsDescending(t, temp, keys_in + r * C,
                                                           keys_out + r * C, ids_in + r * C,
                                                           ids_out + r * C, ci, 0, 32, stream()),
                 "top_k sort");
  } else {
    check_cuda(cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, temp, keys_in, keys_out,
                                                                  ids_in, ids_out, ni, ri, offsets,
                                                                  offsets + 1, 0, 32, stream()),
               "top_k sort size");
    void* t = scratch(Slot::SortTemp, temp);
    check_cuda(cub::DeviceSegmentedRadixSort::SortPairsDescending(t, temp, keys_in, keys_out,
                                                                  ids_in, ids_out, ni, ri, offsets,
                                                                  offsets + 1, 0, 32, stream()),
               "top_k sort");
  }
  first_k_kernel<<<blocks_for(R * k), 256, 0, stream()>>>(ids_out, R, C, k, idx.ptr<int32_t>());
  check_launch("top_k");
}

}  // namespace kvp::cuda
