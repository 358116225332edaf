// attention_column_sums: each query's log2-sum-exp from the attention kernels' lse mode, then
// one pass over K tiles that adds up every query's probability of each row (f32 sums). On
// 16-bit caches with head_dim 64 or 128 the pass runs on tensor cores, with the queries split
// into three 16-bit terms so the scores keep f32 precision.
#include <vector>

#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_plan.h"
#include "backend/cuda/attention_util.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/op_checks.h"

namespace kvp::cuda {

namespace {

constexpr int kTile = 32;    // rows per block
constexpr int kQChunk = 32;  // query vectors staged at once
constexpr int kMaxD = 128;

// grid (row tiles, segments); thread (row r = tid % 32, query slice tid / 32).
template <typename T>
__global__ void column_sums_kernel(const JobDesc* jobs, const SegDesc* segs, const float* lse,
                                   int64_t lse_stride, int D, float scale_log2, float* out,
                                   int64_t L) {
  const JobDesc job = jobs[0];
  const int s = blockIdx.y;
  const SegDesc sd = segs[s];
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTile;
  if (row0 >= sd.len) return;
  __shared__ float ks[kTile][kMaxD + 1];
  __shared__ float qs[kQChunk][kMaxD + 1];
  __shared__ float ls[kQChunk];
  __shared__ float part[4][kTile];
  const int r = threadIdx.x % kTile, slice = threadIdx.x / kTile;
  for (int e = threadIdx.x; e < kTile * D; e += blockDim.x) {
    const int rr = e / D, d = e % D;
    const int64_t j = row0 + rr;
    ks[rr][d] = j < sd.len ? to_f32(kv_row<T>(job.k, nullptr, sd, nullptr, j, D)[d]) : 0.f;
  }
  const int64_t n_qv = job.tq * job.group, j = row0 + r;
  float acc = 0.f;
  for (int64_t c = 0; c < n_qv; c += kQChunk) {
    __syncthreads();
    for (int e = threadIdx.x; e < kQChunk * D; e += blockDim.x) {
      const int qi = e / D, d = e % D;
      const int64_t qv = c + qi;
      float v = 0.f;
      if (qv < n_qv) {
        const int64_t t = qv / job.group, h = static_cast<int64_t>(s) * job.group + qv % job.group;
        v = job.q[(t * job.hq + h) * D + d] * scale_log2;
      }
      qs[qi][d] = v;
    }
    if (threadIdx.x < kQChunk && c + threadIdx.x < n_qv)
      ls[threadIdx.x] = lse[s * lse_stride + c + threadIdx.x];
    __syncthreads();
    for (int qi = slice; qi < kQChunk && c + qi < n_qv; qi += 4) {
      const int64_t qv = c + qi;
      if (j >= sd.len || j >= visible_rows(job, sd, static_cast<int>(qv))) continue;
      float dot = 0.f;
      for (int d = 0; d < D; ++d) dot += qs[qi][d] * ks[r][d];
      acc += exp2f(dot - ls[qi]);
    }
  }
  part[slice][r] = acc;
  __syncthreads();
  if (slice == 0 && j < sd.len) out[s * L + j] = part[0][r] + part[1][r] + part[2][r] + part[3][r];
}

// Grid (64-row tiles, segments), 4 warps: the tile's K rows in shared memory; each warp
// takes 16 query vectors at a time, scores them against the tile (three mma terms, see
// a_fragments), and adds their probabilities per row; rows are then summed over the warps.
template <typename T, int D>
__global__ void __launch_bounds__(128)
    column_sums_mma_kernel(const JobDesc* jobs, const SegDesc* segs, const float* lse,
                           int64_t lse_stride, float scale_log2, float* out, int64_t L) {
  const JobDesc job = jobs[0];
  const int s = static_cast<int>(blockIdx.y);
  const SegDesc sd = segs[s];
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kKeyTile;
  if (k0 >= sd.len) return;
  __shared__ __align__(128) uint8_t tile[kTileBytes<D>];
  __shared__ float part[4][kKeyTile];
  load_tile<D, 128>(tile, static_cast<const uint8_t*>(job.k) + sd.offset * D * 2, k0, sd.len);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int t = lane % 4;
  const int64_t n_qv = job.tq * job.group;
  auto q_row = [&](int64_t qv) -> const float* {
    if (qv >= n_qv) return nullptr;
    const int64_t h = static_cast<int64_t>(s) * job.group + qv % job.group;
    return job.q + (qv / job.group * job.hq + h) * D;
  };
  float col[kKeyTile / 8][2] = {};
  for (int64_t m0 = warp * 16; m0 < n_qv; m0 += 64) {
    const int64_t qv[2] = {m0 + lane / 4, m0 + lane / 4 + 8};
    float sc[kKeyTile / 8][4];
    zero(sc);
    for (int term = 0; term < 3; ++term) {
      uint32_t qf[D / 16][4];
      a_fragments<T, D>(q_row(qv[0]), q_row(qv[1]), qf, term);
      tile_scores<T, D>(qf, shared_addr(tile), sc);
    }
    float l[2];
    int64_t visible[2];
    for (int i = 0; i < 2; ++i) {
      const bool real = qv[i] < n_qv;
      l[i] = real ? lse[s * lse_stride + qv[i]] : 0.f;
      visible[i] = real ? sd.len - job.tq + qv[i] / job.group + 1 : 0;
    }
#pragma unroll
    for (int n = 0; n < kKeyTile / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = k0 + n * 8 + 2 * t + (e & 1);
        if (key < visible[e >> 1]) col[n][e & 1] += exp2f(sc[n][e] * scale_log2 - l[e >> 1]);
      }
  }
#pragma unroll
  for (int n = 0; n < kKeyTile / 8; ++n)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float v = col[n][i];
      v += __shfl_xor_sync(0xffffffffu, v, 4);
      v += __shfl_xor_sync(0xffffffffu, v, 8);
      v += __shfl_xor_sync(0xffffffffu, v, 16);
      if (lane < 4) part[warp][n * 8 + 2 * t + i] = v;
    }
  __syncthreads();
  const int64_t key = k0 + threadIdx.x;
  if (threadIdx.x < kKeyTile && key < sd.len)
    out[s * L + key] =
        part[0][threadIdx.x] + part[1][threadIdx.x] + part[2][threadIdx.x] + part[3][threadIdx.x];
}

}  // namespace

void CudaBackend::attention_column_sums(const Tensor& q, const KvSegments& kv, float scale,
                                        Tensor& out) {
  check_f32(this, q, "attention_column_sums q");
  check_f32(this, out, "attention_column_sums out");
  check_dev(this, kv.k, "attention_column_sums k");
  check(q.ndim() == 3, "attention_column_sums: q must be [Tq, Hq, D]");
  check(q.dim(2) == kv.head_dim, "attention_column_sums: q head_dim differs from the cache's");
  check(kv.n_segments > 0 && q.dim(1) % kv.n_segments == 0,
        "attention_column_sums: query heads not a multiple of kv heads");
  check(out.ndim() == 2 && out.dim(0) == kv.n_segments,
        "attention_column_sums: out must be [n_segments, L]");
  check(!kv.has_prefix(),
        "attention_column_sums: segments with a borrowed prefix are not supported");
  check(kv.head_dim <= kMaxD, "attention_column_sums: head_dim above 128 is not supported on CUDA");
  const int64_t L = out.dim(1), T = q.dim(0);
  int64_t max_len = 0;
  for (int s = 0; s < kv.n_segments; ++s) {
    check(kv.len[s] >= T && kv.len[s] <= L, "attention_column_sums: segment length out of range");
    max_len = std::max(max_len, kv.len[s]);
  }
  check_cuda(cudaMemsetAsync(out.data(), 0, out.nbytes(), stream()), "column sums");
  if (T == 0) return;
  Tensor dummy_out = q;  // the lse pass writes no output
  AttentionPlan& plan = attention_plan();
  plan.build({AttentionJob{&q, kv, &dummy_out}}, sm_count(), AttentionPlan::fast_path(kv.head_dim));
  const int64_t n_qv = T * (q.dim(1) / kv.n_segments);
  auto* lse = static_cast<float*>(
      scratch(Slot::Misc, static_cast<size_t>(kv.n_segments * n_qv) * sizeof(float)));
  run_attention(*this, plan, scale, lse, n_qv);
  const AttentionPlan::Device d = plan.stage(*this);
  const float scale_log2 = scale * 1.4426950408889634f;
  const bool mma = kv.dtype() != DType::F32 && (kv.head_dim == 64 || kv.head_dim == 128);
  if (mma) {
    const dim3 grid(static_cast<unsigned>((max_len + kKeyTile - 1) / kKeyTile),
                    static_cast<unsigned>(kv.n_segments));
    auto run = [&](auto kernel) {
      kernel<<<grid, 128, 0, stream()>>>(d.jobs, d.segs, lse, n_qv, scale_log2, out.ptr<float>(),
                                         L);
    };
    if (kv.dtype() == DType::BF16)
      kv.head_dim == 64 ? run(column_sums_mma_kernel<__nv_bfloat16, 64>)
                        : run(column_sums_mma_kernel<__nv_bfloat16, 128>);
    else
      kv.head_dim == 64 ? run(column_sums_mma_kernel<__half, 64>)
                        : run(column_sums_mma_kernel<__half, 128>);
    return check_launch("attention_column_sums (mma)");
  }
  const dim3 grid(static_cast<unsigned>((max_len + kTile - 1) / kTile),
                  static_cast<unsigned>(kv.n_segments));
  with_row_type(kv.dtype(), [&](auto p) {
    using Tp = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    column_sums_kernel<Tp><<<grid, 128, 0, stream()>>>(
        d.jobs, d.segs, lse, n_qv, static_cast<int>(kv.head_dim), scale_log2, out.ptr<float>(), L);
  });
  check_launch("attention_column_sums");
}

}  // namespace kvp::cuda
