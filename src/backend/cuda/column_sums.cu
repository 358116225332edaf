// attention_column_sums: each query's log2-sum-exp, then one pass over K tiles that adds up
// every query's probability of each row (f32 sums). On 16-bit caches with head_dim 64 or 128
// both passes run on tensor cores (score_pass_kernel), with the queries split into three
// 16-bit terms so the scores keep f32 precision; otherwise the lse comes from the attention
// kernels' lse mode and the sums from column_sums_kernel.
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

constexpr int kPassTiles = 2;  // 64-row tiles a block of score_pass_kernel takes
constexpr int kPassRows = kPassTiles * kKeyTile;

// The scores of every query vector against one block's rows, on tensor cores with the queries
// in three 16-bit terms (a_fragments), so they match f32 scores. Grid (row blocks, segments),
// 4 warps, each taking 16 query vectors at a time. LSE: each query's (max, sum of 2^(s - max))
// over the block's visible rows, to part[(segment * gridDim.x + block) * n_qv + qv], which
// lse_combine_kernel merges. Else: each row's sum over the queries of 2^(s - lse), the
// column sums.
template <typename T, int D, bool LSE>
__global__ void __launch_bounds__(128)
    score_pass_kernel(const JobDesc* jobs, const SegDesc* segs, float scale_log2, const float* lse,
                      int64_t lse_stride, float* out, int64_t L, float2* part) {
  const JobDesc job = jobs[0];
  const int s = static_cast<int>(blockIdx.y);
  const SegDesc sd = segs[s];
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kPassRows;
  if (!LSE && k0 >= sd.len) return;
  __shared__ __align__(128) uint8_t tiles[kPassTiles * kTileBytes<D>];
  __shared__ float sums[LSE ? 1 : 4][kPassRows];
  const auto* k = static_cast<const uint8_t*>(job.k) + sd.offset * D * 2;
  for (int i = 0; i < kPassTiles; ++i)
    load_tile<D, 128>(tiles + i * kTileBytes<D>, k, k0 + i * kKeyTile, sd.len);
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
  float col[kPassTiles][kKeyTile / 8][2] = {};
  for (int64_t m0 = warp * 16; m0 < n_qv; m0 += 64) {
    const int64_t qv[2] = {m0 + lane / 4, m0 + lane / 4 + 8};
    float sc[kPassTiles][kKeyTile / 8][4];
#pragma unroll
    for (int i = 0; i < kPassTiles; ++i) zero(sc[i]);
#pragma unroll
    for (int term = 0; term < 3; ++term) {
      uint32_t qf[D / 16][4];
      a_fragments<T, D>(q_row(qv[0]), q_row(qv[1]), qf, term);
#pragma unroll
      for (int i = 0; i < kPassTiles; ++i)
        tile_scores<T, D>(qf, shared_addr(tiles + i * kTileBytes<D>), sc[i]);
    }
    float ref[2], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    int64_t visible[2];
    for (int i = 0; i < 2; ++i) {
      const bool real = qv[i] < n_qv;
      ref[i] = !LSE && real ? lse[s * lse_stride + qv[i]] : 0.f;
      visible[i] = real ? sd.len - job.tq + qv[i] / job.group + 1 : 0;
    }
#pragma unroll
    for (int i = 0; i < kPassTiles; ++i) {
      const int64_t kt = k0 + i * kKeyTile;
      float mx[2] = {m[0], m[1]};
#pragma unroll
      for (int n = 0; n < kKeyTile / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const bool seen = kt + n * 8 + 2 * t + (e & 1) < visible[e >> 1];
          float& x = sc[i][n][e];
          x = seen ? x * scale_log2 : -INFINITY;
          if (LSE) mx[e >> 1] = fmaxf(mx[e >> 1], x);
          if (!LSE) col[i][n][e & 1] += seen ? exp2f(x - ref[e >> 1]) : 0.f;
        }
      if (LSE) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float base = mx[r] == -INFINITY ? 0.f : mx[r];
          l[r] *= exp2f(m[r] - base);
          m[r] = mx[r];
#pragma unroll
          for (int n = 0; n < kKeyTile / 8; ++n)
            l[r] += exp2f(sc[i][n][2 * r] - base) + exp2f(sc[i][n][2 * r + 1] - base);
        }
      }
    }
    if (LSE) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mm = m[r];
        mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, 1));
        mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, 2));
        float ll = mm == -INFINITY ? 0.f : l[r] * exp2f(m[r] - mm);
        ll += __shfl_xor_sync(0xffffffffu, ll, 1);
        ll += __shfl_xor_sync(0xffffffffu, ll, 2);
        if (t == 0 && qv[r] < n_qv)
          part[(static_cast<int64_t>(s) * gridDim.x + blockIdx.x) * n_qv + qv[r]] =
              make_float2(mm, ll);
      }
    }
  }
  if constexpr (!LSE) {
#pragma unroll
    for (int i = 0; i < kPassTiles; ++i)
#pragma unroll
      for (int n = 0; n < kKeyTile / 8; ++n)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float v = col[i][n][c];
          v += __shfl_xor_sync(0xffffffffu, v, 4);
          v += __shfl_xor_sync(0xffffffffu, v, 8);
          v += __shfl_xor_sync(0xffffffffu, v, 16);
          if (lane < 4) sums[warp][i * kKeyTile + n * 8 + 2 * t + c] = v;
        }
    __syncthreads();
    for (int r = static_cast<int>(threadIdx.x); r < kPassRows; r += 128)
      if (k0 + r < sd.len) out[s * L + k0 + r] = sums[0][r] + sums[1][r] + sums[2][r] + sums[3][r];
  }
}

// lse[segment * lse_stride + qv] = log2 of the sum of 2^s over all blocks' partials.
__global__ void lse_combine_kernel(const float2* part, int n_parts, int64_t n_qv, float* lse,
                                   int64_t lse_stride) {
  const int s = static_cast<int>(blockIdx.y);
  const int64_t qv = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (qv >= n_qv) return;
  const float2* p = part + static_cast<int64_t>(s) * n_parts * n_qv + qv;
  float m = -INFINITY;
  for (int i = 0; i < n_parts; ++i) m = fmaxf(m, p[i * n_qv].x);
  float l = 0.f;
  if (m != -INFINITY)
    for (int i = 0; i < n_parts; ++i) l += p[i * n_qv].y * exp2f(p[i * n_qv].x - m);
  lse[s * lse_stride + qv] = m + log2f(l);
}

template <typename T, int D>
void column_sums_mma(CudaBackend& be, const AttentionPlan::Device& d, int n_seg, int64_t n_qv,
                     int64_t max_len, float scale_log2, float* lse, float* out, int64_t L) {
  const int blocks = static_cast<int>((max_len + kPassRows - 1) / kPassRows);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(n_seg));
  auto* part =
      static_cast<float2*>(be.scratch(CudaBackend::Slot::AttnPartials,
                                      static_cast<size_t>(n_seg) * blocks * n_qv * sizeof(float2)));
  score_pass_kernel<T, D, true>
      <<<grid, 128, 0, be.stream()>>>(d.jobs, d.segs, scale_log2, nullptr, 0, nullptr, L, part);
  lse_combine_kernel<<<dim3(static_cast<unsigned>((n_qv + 127) / 128), n_seg), 128, 0,
                       be.stream()>>>(part, blocks, n_qv, lse, n_qv);
  score_pass_kernel<T, D, false>
      <<<grid, 128, 0, be.stream()>>>(d.jobs, d.segs, scale_log2, lse, n_qv, out, L, nullptr);
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
  const bool mma = kv.dtype() != DType::F32 && (kv.head_dim == 64 || kv.head_dim == 128);
  AttentionPlan& plan = attention_plan();
  // The tensor-core passes read only the job and segment tables: no split of the rows.
  plan.build({AttentionJob{&q, kv, &dummy_out}}, sm_count(),
             !mma && AttentionPlan::fast_path(kv.head_dim), /*with_v=*/false);
  const int64_t n_qv = T * (q.dim(1) / kv.n_segments);
  auto* lse = static_cast<float*>(
      scratch(Slot::Misc, static_cast<size_t>(kv.n_segments * n_qv) * sizeof(float)));
  const float scale_log2 = scale * 1.4426950408889634f;
  if (mma) {
    const AttentionPlan::Device d = plan.stage(*this);
    const int D = static_cast<int>(kv.head_dim);
    auto run = [&](auto tag) {
      using Tp = decltype(tag);
      (D == 64 ? column_sums_mma<Tp, 64> : column_sums_mma<Tp, 128>)(*this, d, kv.n_segments, n_qv,
                                                                     max_len, scale_log2, lse,
                                                                     out.ptr<float>(), L);
    };
    if (kv.dtype() == DType::BF16)
      run(__nv_bfloat16{});
    else
      run(__half{});
    return check_launch("attention_column_sums (mma)");
  }
  run_attention(*this, plan, scale, lse, n_qv);
  const AttentionPlan::Device d = plan.stage(*this);
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
