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

// Several rows at least this long share one device-wide sort of 64-bit (row, score) keys;
// shorter ones share a segmented sort.
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

// Wide rows: one sort of (row, descending score) pairs as 64-bit keys, ascending: the row in
// the high word, the complement of the order-preserving score bits in the low one.
__global__ void keys64_kernel(const float* x, int64_t n, int64_t C, uint64_t* keys, int32_t* ids) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    uint32_t b = __float_as_uint(v == 0.f ? 0.f : v);
    b = isnan(v) ? 0u : ((b & 0x80000000u) ? ~b : b | 0x80000000u);
    keys[i] = static_cast<uint64_t>(i / C) << 32 | static_cast<uint32_t>(~b);
    ids[i] = static_cast<int32_t>(i % C);
  }
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
  const int ni = static_cast<int>(n), ri = static_cast<int>(R);
  size_t temp = 0;
  int32_t* ids_out = nullptr;
  if (C >= kWideRow && R > 1) {
    // keys_in, keys_out (u64), ids_in, ids_out (i32): one scratch buffer.
    auto* base = static_cast<uint64_t*>(scratch(Slot::SortKeys, static_cast<size_t>(n) * 24));
    uint64_t *keys_in = base, *keys_out = base + n;
    auto* ids_in = reinterpret_cast<int32_t*>(base + 2 * n);
    ids_out = ids_in + n;
    keys64_kernel<<<blocks_for(n), 256, 0, stream()>>>(x.ptr<float>(), n, C, keys_in, ids_in);
    check_launch("top_k keys");
    int end_bit = 33;  // the score's 32 bits and enough for the row index
    while ((int64_t{1} << (end_bit - 32)) < R) ++end_bit;
    check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, temp, keys_in, keys_out, ids_in, ids_out,
                                               ni, 0, end_bit, stream()),
               "top_k sort size");
    void* t = scratch(Slot::SortTemp, temp);
    check_cuda(cub::DeviceRadixSort::SortPairs(t, temp, keys_in, keys_out, ids_in, ids_out, ni, 0,
                                               end_bit, stream()),
               "top_k sort");
  } else {
    // keys_in, keys_out (u32), ids_in, ids_out (i32), offsets: one scratch buffer. One row
    // (ada_snapkv's layer-wide ranking) is one plain sort; a segmented sort of one segment
    // would give it to a single block.
    const size_t words = static_cast<size_t>(4 * n + R + 1);
    auto* base = static_cast<uint32_t*>(scratch(Slot::SortKeys, words * 4));
    uint32_t *keys_in = base, *keys_out = base + n;
    auto* ids_in = reinterpret_cast<int32_t*>(base + 2 * n);
    ids_out = reinterpret_cast<int32_t*>(base + 3 * n);
    auto* offsets = reinterpret_cast<int32_t*>(base + 4 * n);
    keys_kernel<<<blocks_for(n), 256, 0, stream()>>>(x.ptr<float>(), n, C, keys_in, ids_in, offsets,
                                                     R);
    check_launch("top_k keys");
    auto sort = [&](void* t) {
      if (R == 1)
        return cub::DeviceRadixSort::SortPairsDescending(t, temp, keys_in, keys_out, ids_in,
                                                         ids_out, ni, 0, 32, stream());
      return cub::DeviceSegmentedRadixSort::SortPairsDescending(t, temp, keys_in, keys_out, ids_in,
                                                                ids_out, ni, ri, offsets,
                                                                offsets + 1, 0, 32, stream());
    };
    check_cuda(sort(nullptr), "top_k sort size");
    check_cuda(sort(scratch(Slot::SortTemp, temp)), "top_k sort");
  }
  first_k_kernel<<<blocks_for(R * k), 256, 0, stream()>>>(ids_out, R, C, k, idx.ptr<int32_t>());
  check_launch("top_k");
}

}  // namespace kvp::cuda
