#pragma once
// The split kernel of attention (attention.cu's WITH_V path): K and V tiles stream into
// shared memory with cp.async, several stages deep, so a block keeps tens of KB of loads in
// flight while it computes on an earlier tile. Per tile: scores of the item's (up to 8) query
// vectors against every row (one row per thread, rows padded by 16 bytes so the reads of
// neighbouring rows fall in different banks), an online-softmax update per query (one warp
// each), then P.V with each thread owning dimension pairs. Writes the item's partial
// (m, l, acc) in the log2 domain for attn_combine_kernel.
#include "backend/cuda/attention_util.cuh"

namespace kvp::cuda {

constexpr int kDecodeThreads = 256;
constexpr int kDecodeStages = 3;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0: zero-fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <typename T, int D, int QB>
struct DecodeShape {
  static constexpr int kTile = 128 / static_cast<int>(sizeof(T)) * 1;  // 64 rows of 16-bit
  static constexpr int kRow = D * static_cast<int>(sizeof(T)) + 16;   // padded row bytes
  static constexpr int kChunks = D * static_cast<int>(sizeof(T)) / 16;
  static constexpr int kStageBytes = 2 * kTile * kRow;
  static constexpr int kSmem = kDecodeStages * kStageBytes + (QB * kTile + 4 * QB) * 4 + QB * D * 4;
};

// Loads rows [r0, r0 + kTile) of K and V (rows at or past `end` zero-filled) into a stage.
template <typename T, int D, int QB>
__device__ __forceinline__ void load_tile(uint8_t* stage, const JobDesc& job, const SegDesc& sd,
                                          const int32_t* prefix_rows, int64_t r0, int64_t end) {
  using S = DecodeShape<T, D, QB>;
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

template <typename T, int D, int QB>
__global__ void __launch_bounds__(kDecodeThreads)
    attn_decode_kernel(const JobDesc* jobs, const SegDesc* segs, const WorkItem* items,
                       const int32_t* prefix_rows, float scale_log2, float* part_acc,
                       float* part_ml) {
  using S = DecodeShape<T, D, QB>;
  extern __shared__ __align__(16) uint8_t smem[];
  float* p_s = reinterpret_cast<float*>(smem + kDecodeStages * S::kStageBytes);  // [QB][kTile]
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
    lim_s[qi] = qi < it.qv_count ? static_cast<float>(visible_rows(job, sd, it.qv_begin + qi)) : 0.f;
  }
  const int64_t n_tiles = (it.row_end - it.row_begin + S::kTile - 1) / S::kTile;
#pragma unroll
  for (int s = 0; s < kDecodeStages - 1; ++s) {
    if (s < n_tiles)
      load_tile<T, D, QB>(smem + s * S::kStageBytes, job, sd, prefix_rows,
                          it.row_begin + s * S::kTile, it.row_end);
    cp_async_commit();
  }
  // P.V: thread owns (query, dimension pair) slots e = threadIdx.x + i * kDecodeThreads.
  constexpr int kSlots = (QB * D / 2 + kDecodeThreads - 1) / kDecodeThreads;
  float2 acc[kSlots];
#pragma unroll
  for (int i = 0; i < kSlots; ++i) acc[i] = make_float2(0.f, 0.f);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t t = 0; t < n_tiles; ++t) {
    const int64_t next = t + kDecodeStages - 1;
    if (next < n_tiles)
      load_tile<T, D, QB>(smem + (next % kDecodeStages) * S::kStageBytes, job, sd, prefix_rows,
                          it.row_begin + next * S::kTile, it.row_end);
    cp_async_commit();
    cp_async_wait<kDecodeStages - 1>();
    __syncthreads();
    const uint8_t* ks = smem + (t % kDecodeStages) * S::kStageBytes;
    const uint8_t* vs = ks + S::kTile * S::kRow;
    const int64_t r0 = it.row_begin + t * S::kTile;
    // Scores: thread (row r, query slice) over D from shared memory.
    for (int e = threadIdx.x; e < QB * S::kTile; e += kDecodeThreads) {
      const int r = e % S::kTile, qi = e / S::kTile;
      const float* q = q_s + qi * D;
      float dot = 0.f;
#pragma unroll
      for (int c = 0; c < S::kChunks; ++c) {
        float f[16 / sizeof(T)];
        unpack_row<T>(*reinterpret_cast<const uint4*>(ks + r * S::kRow + c * 16), f);
#pragma unroll
        for (int j = 0; j < static_cast<int>(16 / sizeof(T)); ++j)
          dot += q[c * (16 / sizeof(T)) + j] * f[j];
      }
      const int64_t row = r0 + r;
      p_s[qi * S::kTile + r] =
          (row < it.row_end && static_cast<float>(row) < lim_s[qi]) ? dot : -INFINITY;
    }
    __syncthreads();
    // Online softmax: warp qi updates query qi's state and turns its scores into weights.
    for (int qi = warp; qi < QB; qi += kDecodeThreads / 32) {
      float mx = -INFINITY;
      for (int r = lane; r < S::kTile; r += 32) mx = fmaxf(mx, p_s[qi * S::kTile + r]);
      mx = fmaxf(warp_max(mx), m_s[qi]);
      const float ref = mx == -INFINITY ? 0.f : mx;
      float sum = 0.f;
      for (int r = lane; r < S::kTile; r += 32) {
        const float p = exp2f(p_s[qi * S::kTile + r] - ref);
        p_s[qi * S::kTile + r] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float corr = exp2f(m_s[qi] - ref);
        c_s[qi] = corr;
        l_s[qi] = l_s[qi] * corr + sum;
        m_s[qi] = mx;
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int e = threadIdx.x + i * kDecodeThreads;
      if (e >= QB * D / 2) break;
      const int qi = e / (D / 2), d2 = e % (D / 2);
      const float corr = c_s[qi];
      float2 a = make_float2(acc[i].x * corr, acc[i].y * corr);
      const float* p = p_s + qi * S::kTile;
#pragma unroll 8
      for (int r = 0; r < S::kTile; ++r) {
        const T* v = reinterpret_cast<const T*>(vs + r * S::kRow) + 2 * d2;
        a.x += p[r] * to_f32(v[0]);
        a.y += p[r] * to_f32(v[1]);
      }
      acc[i] = a;
    }
    __syncthreads();
  }
  cp_async_wait<0>();
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
    const int e = threadIdx.x + i * kDecodeThreads;
    if (e >= QB * D / 2) break;
    const int qi = e / (D / 2), d2 = e % (D / 2);
    const int64_t slot = static_cast<int64_t>(blockIdx.x) * QB + qi;
    part_acc[slot * D + 2 * d2] = acc[i].x;
    part_acc[slot * D + 2 * d2 + 1] = acc[i].y;
  }
  if (threadIdx.x < QB) {
    const int64_t slot = static_cast<int64_t>(blockIdx.x) * QB + threadIdx.x;
    part_ml[slot * 2] = m_s[threadIdx.x];
    part_ml[slot * 2 + 1] = l_s[threadIdx.x];
  }
}

}  // namespace kvp::cuda
