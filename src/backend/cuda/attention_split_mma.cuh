#pragma once
// The split kernel on tensor cores, for 16-bit caches: a work item's (up to 16) query vectors
// are the 16 rows of an mma A tile, and its rows stream through shared memory in 64-row K and
// V tiles (cp.async, kSplitStages deep), each warp taking 16 rows of every tile with its own
// online-softmax state. Decode reads every K and V byte once, so what limits it is how many
// loads are in flight and how few instructions a byte costs; mma.sync does the dot products in
// a fraction of the CUDA-core kernel's instructions. To keep f32 accuracy, the queries enter as
// three 16-bit terms and P as two (a_fragments, tile_pv). The block's warps merge their states
// at the end and write the item's partial (m, l, acc) for attn_combine_kernel.
#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_util.cuh"
#include "backend/cuda/launch.cuh"

namespace kvp::cuda {

constexpr int kSplitWarps = 4;
constexpr int kSplitStages = 3;

template <int D, int STAGES = kSplitStages>
constexpr int kSplitSmem = STAGES * 2 * kTileBytes<D>;

// Rows [r0, r0 + kKeyTile) of a segment's K and V (rows at or past `end` zero-filled) into
// one stage, swizzled as load_tile does. A thread always copies the same 16-byte column of
// the same rows of each tile, so where the tile holds only the segment's own rows its
// addresses are one base plus constants; tiles that reach into borrowed rows look each row
// up (kv_row).
template <typename T, int D>
__device__ __forceinline__ void load_kv_tiles(uint8_t* stage, const JobDesc& job, const SegDesc& sd,
                                              const int32_t* prefix_rows, int64_t r0, int64_t end) {
  constexpr int kChunks = D / 8;
  constexpr int kRowsPerPass = kSplitWarps * 32 / kChunks;
  constexpr int kRowBytes = D * 2;
  const int c = static_cast<int>(threadIdx.x) % kChunks;
  const int r_first = static_cast<int>(threadIdx.x) / kChunks;
  if (r0 >= sd.prefix_len) {
    const int64_t own = sd.offset + r0 - sd.prefix_len;
    const auto* k = static_cast<const uint8_t*>(job.k) + own * kRowBytes + c * 16;
    const auto* v = static_cast<const uint8_t*>(job.v) + own * kRowBytes + c * 16;
    const bool full = r0 + kKeyTile <= end;
#pragma unroll
    for (int r = r_first; r < kKeyTile; r += kRowsPerPass) {
      const bool valid = full || r0 + r < end;
      const uint32_t at = swizzled(r, c, kChunks);
      cp_async16(stage + at, k + (valid ? r : 0) * kRowBytes, valid);
      cp_async16(stage + kTileBytes<D> + at, v + (valid ? r : 0) * kRowBytes, valid);
    }
    return;
  }
  for (int r = r_first; r < kKeyTile; r += kRowsPerPass) {
    const bool valid = r0 + r < end;
    const int64_t row = valid ? r0 + r : r0;
    const uint32_t at = swizzled(r, c, kChunks);
    cp_async16(stage + at,
               reinterpret_cast<const uint8_t*>(kv_row<T>(job.k, job.pk, sd, prefix_rows, row, D)) +
                   c * 16,
               valid);
    cp_async16(stage + kTileBytes<D> + at,
               reinterpret_cast<const uint8_t*>(kv_row<T>(job.v, job.pv, sd, prefix_rows, row, D)) +
                   c * 16,
               valid);
  }
}

// Query vector qv_begin + i of an item (null past its count): the A tile's row i.
__device__ __forceinline__ const float* item_query(const JobDesc& job, const WorkItem& it, int i,
                                                   int D) {
  if (i >= it.qv_count) return nullptr;
  const int qv = it.qv_begin + i;
  const int64_t h = static_cast<int64_t>(it.seg) * job.group + qv % job.group;
  return job.q + (qv / job.group * job.hq + h) * D;
}

// The warps' states merged through shared memory (the stages are free by now), written as
// the item's partials for rows below its query count.
template <int D>
__device__ __forceinline__ void store_partials(uint8_t* smem, RowState<D>& st, int qb, int count,
                                               float* part_acc, float* part_ml) {
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  float* o_s = reinterpret_cast<float*>(smem);  // [warp][16][D]
  float* ml_s = o_s + kSplitWarps * 16 * D;     // [warp][16][2]
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float l = st.l[i];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = g + 8 * i;
    if (t == 0) {
      ml_s[(warp * 16 + row) * 2] = st.m[i];
      ml_s[(warp * 16 + row) * 2 + 1] = l;
    }
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      o_s[(warp * 16 + row) * D + d * 8 + 2 * t] = st.o[d][2 * i];
      o_s[(warp * 16 + row) * D + d * 8 + 2 * t + 1] = st.o[d][2 * i + 1];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < count * D; e += kSplitWarps * 32) {
    const int row = e / D, d = e % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) mx = fmaxf(mx, ml_s[(w * 16 + row) * 2]);
    const float ref = mx == -INFINITY ? 0.f : mx;
    float a = 0.f, l = 0.f;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) {
      const float wt = exp2f(ml_s[(w * 16 + row) * 2] - ref);
      a += o_s[(w * 16 + row) * D + d] * wt;
      l += ml_s[(w * 16 + row) * 2 + 1] * wt;
    }
    const int64_t slot = static_cast<int64_t>(blockIdx.x) * qb + row;
    part_acc[slot * D + d] = a;
    if (d == 0) {
      part_ml[slot * 2] = mx;
      part_ml[slot * 2 + 1] = l;
    }
  }
}

template <typename T, int D, int kSplitStages>
__global__ void __launch_bounds__(kSplitWarps * 32)
    attn_split_mma_kernel(const JobDesc* jobs, const SegDesc* segs, const WorkItem* items,
                          const int32_t* prefix_rows, float scale_log2, int qb, float* part_acc,
                          float* part_ml) {
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr int kStage = 2 * kTileBytes<D>;
  wait_for_predecessor();
  release_dependents();
  const WorkItem it = items[blockIdx.x];
  const JobDesc job = jobs[it.job];
  const SegDesc sd = segs[job.seg_begin + it.seg];
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int g = lane / 4;
  uint32_t qf[3][D / 16][4];
#pragma unroll
  for (int term = 0; term < 3; ++term)
    a_fragments<T, D>(item_query(job, it, g, D), item_query(job, it, g + 8, D), qf[term], term);
  // Keys at or past lim[i] are masked for this lane's row i: the item's end, the causal limit.
  int64_t lim[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = g + 8 * i;
    lim[i] = row < it.qv_count ? min(it.row_end, visible_rows(job, sd, it.qv_begin + row))
                               : static_cast<int64_t>(0);
  }
  const int64_t tiles = (it.row_end - it.row_begin + kKeyTile - 1) / kKeyTile;
#pragma unroll
  for (int s = 0; s < kSplitStages - 1; ++s) {
    if (s < tiles)
      load_kv_tiles<T, D>(smem + s * kStage, job, sd, prefix_rows, it.row_begin + s * kKeyTile,
                          it.row_end);
    cp_async_commit();
  }
  RowState<D> st;
  for (int64_t j = 0; j < tiles; ++j) {
    const int64_t next = j + kSplitStages - 1;
    if (next < tiles)
      load_kv_tiles<T, D>(smem + (next % kSplitStages) * kStage, job, sd, prefix_rows,
                          it.row_begin + next * kKeyTile, it.row_end);
    cp_async_commit();
    cp_async_wait<kSplitStages - 1>();
    __syncthreads();
    const int64_t k0 = it.row_begin + j * kKeyTile + warp * 16;  // this warp's 16 rows
    if (k0 < it.row_end) {
      const uint32_t ks = shared_addr(smem + (j % kSplitStages) * kStage);
      float s[2][4];
      zero(s);
#pragma unroll
      for (int term = 0; term < 3; ++term) tile_scores<T, D, 16>(qf[term], ks, s, warp * 16);
      softmax_update<D, 16>(s, st, k0, lim, true, scale_log2);
      tile_pv<T, D, 16, 2>(s, ks + kTileBytes<D>, st, warp * 16);
    }
    __syncthreads();
  }
  cp_async_wait<0>();
  __syncthreads();
  store_partials<D>(smem, st, qb, it.qv_count, part_acc, part_ml);
}

}  // namespace kvp::cuda
