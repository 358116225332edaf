#pragma once
// The split kernel of attention (attention.cu's WITH_V path): K and V tiles stream into
// shared memory with cp.async, several stages deep, so a block keeps tens of KB of loads in
// flight while it computes on an earlier tile. Per tile: scores of the item's (up to 8) query
// vectors against every row (one row per thread, rows padded by 16 bytes so the reads of
// neighbouring rows fall in different banks), an online-softmax update per query (one warp
// each), then P.V with each thread owning dimension pairs. Writes the item's partial
// (m, l, acc) in the log2 domain for attn_combine_kernel.
#include "backend/cuda/attention_util.cuh"
#include "backend/cuda/tensor_core.cuh"

namespace kvp::cuda {

constexpr int kDecodeThreads = 256;

// BIG: tiles of 64 rows (16-bit) in two stages, else 32 rows in three.
template <typename T, int D, int QB, bool BIG>
struct DecodeShape {
  static constexpr int kStages = BIG ? 2 : 3;
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // values per chunk
  static constexpr int kChunks = D / kVec;                       // 16-byte chunks a row
  static constexpr int kTile = (BIG ? 128 : 64) / static_cast<int>(sizeof(T));  // rows a tile
  static constexpr int kParts = kDecodeThreads / kTile;                // threads per row (scores)
  static constexpr int kPad = kParts >= 8 ? 16 : kParts * 16;          // keeps reads conflict-free
  static constexpr int kRow = D * static_cast<int>(sizeof(T)) + kPad;  // padded row bytes
  static constexpr int kStageBytes = 2 * kTile * kRow;
  static constexpr int kGroups = kDecodeThreads / kChunks;  // row groups of P.V
  static constexpr int kSmem = kStages * kStageBytes + (kTile * QB + 4 * QB + QB * D) * 4;
  static_assert(kChunks % kParts == 0 && kTile % kGroups == 0, "unsupported head_dim");
  static constexpr int kGroupsPerWarp = 32 / kChunks;  // summed by shuffles first
  static_assert(kDecodeThreads / 32 * QB * D * 4 <= kStages * kStageBytes, "reduction space");
};

// Loads rows [r0, r0 + kTile) of K and V (rows at or past `end` zero-filled) into a stage.
template <typename T, int D, int QB, bool BIG>
__device__ __forceinline__ void load_tile(uint8_t* stage, const JobDesc& job, const SegDesc& sd,
                                          const int32_t* prefix_rows, int64_t r0, int64_t end) {
  using S = DecodeShape<T, D, QB, BIG>;
  for (int e = threadIdx.x; e < S::kTile * S::kChunks * 2; e += kDecodeThreads) {
    const int part = e / (S::kTile * S::kChunks);  // 0: K, 1: V
    const int rem = e % (S::kTile * S::kChunks);
    const int r = rem / S::kChunks, c = rem % S::kChunks;
    const int64_t row = r0 + r;
    const bool valid = row < end;
    const T* src = kv_row<T>(part ? job.v : job.k, part ? job.pv : job.pk, sd, prefix_rows,
                             valid ? row : r0, D);
    cp_async16(stage + part * S::kTile * S::kRow + r * S::kRow + c * 16,
               reinterpret_cast<const uint8_t*>(src) + c * 16, valid);
  }
}

// Scores of one tile: kParts threads per row, each over every kParts-th chunk, for all QB
// queries at once; p_s[r][q] = score (or -inf where masked).
template <typename T, int D, int QB, bool BIG>
__device__ __forceinline__ void tile_scores(const uint8_t* ks, const float* q_s, const float* lim_s,
                                            int64_t r0, int64_t end, float* p_s) {
  using S = DecodeShape<T, D, QB, BIG>;
  const int r = threadIdx.x / S::kParts, part = threadIdx.x % S::kParts;
  float dot[QB];
#pragma unroll
  for (int q = 0; q < QB; ++q) dot[q] = 0.f;
#pragma unroll
  for (int i = 0; i < S::kChunks / S::kParts; ++i) {
    const int c = part + i * S::kParts;
    float k[S::kVec];
    unpack_row<T>(*reinterpret_cast<const uint4*>(ks + r * S::kRow + c * 16), k);
#pragma unroll
    for (int q = 0; q < QB; ++q) {
      const float4* qv = reinterpret_cast<const float4*>(q_s + q * D + c * S::kVec);
#pragma unroll
      for (int j = 0; j < S::kVec / 4; ++j) {
        const float4 a = qv[j];
        dot[q] += a.x * k[4 * j] + a.y * k[4 * j + 1] + a.z * k[4 * j + 2] + a.w * k[4 * j + 3];
      }
    }
  }
#pragma unroll
  for (int o = S::kParts / 2; o > 0; o >>= 1)
#pragma unroll
    for (int q = 0; q < QB; ++q) dot[q] += __shfl_xor_sync(0xffffffffu, dot[q], o);
  if (part == 0) {
    const int64_t row = r0 + r;
#pragma unroll
    for (int q = 0; q < QB; ++q)
      p_s[r * QB + q] = row < end && static_cast<float>(row) < lim_s[q] ? dot[q] : -INFINITY;
  }
}

template <typename T, int D, int QB, bool BIG>
__global__ void __launch_bounds__(kDecodeThreads)
    attn_decode_kernel(const JobDesc* jobs, const SegDesc* segs, const WorkItem* items,
                       const int32_t* prefix_rows, float scale_log2, float* part_acc,
                       float* part_ml) {
  using S = DecodeShape<T, D, QB, BIG>;
  extern __shared__ __align__(16) uint8_t smem[];
  float* p_s = reinterpret_cast<float*>(smem + S::kStages * S::kStageBytes);  // [kTile][QB]
  float* m_s = p_s + QB * S::kTile;  // running max, sum, this tile's correction, limit
  float* l_s = m_s + QB;
  float* c_s = l_s + QB;
  float* lim_s = c_s + QB;
  float* q_s = lim_s + QB;  // [QB][D]
  const WorkItem it = items[blockIdx.x];
  const JobDesc job = jobs[it.job];
  const SegDesc sd = segs[job.seg_begin + it.seg];
  load_queries<D, QB>(job, it.seg, it.qv_begin, it.qv_count, scale_log2, q_s);
  if (threadIdx.x < QB) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.f;
    const int qi = threadIdx.x;
    lim_s[qi] =
        qi < it.qv_count ? static_cast<float>(visible_rows(job, sd, it.qv_begin + qi)) : 0.f;
  }
  const int64_t n_tiles = (it.row_end - it.row_begin + S::kTile - 1) / S::kTile;
#pragma unroll
  for (int s = 0; s < S::kStages - 1; ++s) {
    if (s < n_tiles)
      load_tile<T, D, QB, BIG>(smem + s * S::kStageBytes, job, sd, prefix_rows,
                               it.row_begin + s * S::kTile, it.row_end);
    cp_async_commit();
  }
  // P.V: thread (chunk j of D, row group g) accumulates every query over rows g, g + kGroups..
  const int j = threadIdx.x % S::kChunks, g = threadIdx.x / S::kChunks;
  float acc[QB][S::kVec];
#pragma unroll
  for (int q = 0; q < QB; ++q)
#pragma unroll
    for (int v = 0; v < S::kVec; ++v) acc[q][v] = 0.f;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t t = 0; t < n_tiles; ++t) {
    const int64_t next = t + S::kStages - 1;
    if (next < n_tiles)
      load_tile<T, D, QB, BIG>(smem + (next % S::kStages) * S::kStageBytes, job, sd, prefix_rows,
                               it.row_begin + next * S::kTile, it.row_end);
    cp_async_commit();
    cp_async_wait<S::kStages - 1>();
    __syncthreads();
    const uint8_t* ks = smem + (t % S::kStages) * S::kStageBytes;
    const uint8_t* vs = ks + S::kTile * S::kRow;
    tile_scores<T, D, QB, BIG>(ks, q_s, lim_s, it.row_begin + t * S::kTile, it.row_end, p_s);
    __syncthreads();
    // Online softmax: warp q updates query q's state and turns its scores into weights.
    for (int q = warp; q < QB; q += kDecodeThreads / 32) {
      float mx = -INFINITY;
      for (int r = lane; r < S::kTile; r += 32) mx = fmaxf(mx, p_s[r * QB + q]);
      mx = fmaxf(warp_max(mx), m_s[q]);
      const float ref = mx == -INFINITY ? 0.f : mx;
      float sum = 0.f;
      for (int r = lane; r < S::kTile; r += 32) {
        const float p = exp2f(p_s[r * QB + q] - ref);
        p_s[r * QB + q] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float corr = exp2f(m_s[q] - ref);
        c_s[q] = corr;
        l_s[q] = l_s[q] * corr + sum;
        m_s[q] = mx;
      }
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < QB; ++q)
#pragma unroll
      for (int v = 0; v < S::kVec; ++v) acc[q][v] *= c_s[q];
#pragma unroll
    for (int r = g; r < S::kTile; r += S::kGroups) {
      float vf[S::kVec];
      unpack_row<T>(*reinterpret_cast<const uint4*>(vs + r * S::kRow + j * 16), vf);
#pragma unroll
      for (int q = 0; q < QB; ++q) {
        const float p = p_s[r * QB + q];
#pragma unroll
        for (int v = 0; v < S::kVec; ++v) acc[q][v] += p * vf[v];
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();
  __syncthreads();
  // Sum the row groups' accumulators: the groups of a warp by shuffles, then the warps'
  // sums through shared memory (the stages are free now).
#pragma unroll
  for (int o = S::kChunks; o < 32; o <<= 1)
#pragma unroll
    for (int q = 0; q < QB; ++q)
#pragma unroll
      for (int v = 0; v < S::kVec; ++v) acc[q][v] += __shfl_xor_sync(0xffffffffu, acc[q][v], o);
  float* red = reinterpret_cast<float*>(smem);  // [warps][QB][D]
  if (lane < S::kChunks) {
#pragma unroll
    for (int q = 0; q < QB; ++q)
#pragma unroll
      for (int v = 0; v < S::kVec; ++v) red[(warp * QB + q) * D + j * S::kVec + v] = acc[q][v];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < QB * D; e += kDecodeThreads) {
    float a = 0.f;
#pragma unroll
    for (int w = 0; w < kDecodeThreads / 32; ++w) a += red[w * QB * D + e];
    part_acc[static_cast<int64_t>(blockIdx.x) * QB * D + e] = a;
  }
  if (threadIdx.x < QB) {
    const int64_t slot = static_cast<int64_t>(blockIdx.x) * QB + threadIdx.x;
    part_ml[slot * 2] = m_s[threadIdx.x];
    part_ml[slot * 2 + 1] = l_s[threadIdx.x];
  }
}

}  // namespace kvp::cuda
