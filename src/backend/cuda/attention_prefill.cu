// Causal prefill attention on tensor cores, FlashAttention-style: a block takes 16 * NW
// consecutive queries of one query head (16 per warp) and streams its kv head's K and V
// through shared memory in 64-row tiles (cp.async, two stages), keeping the softmax state
// online, so no T x T matrix exists anywhere. S = Q K^T and O += P V are mma.sync m16n8k16
// with f32 accumulators; Q and P enter the tensor cores rounded to the cache's 16-bit type,
// as in every flash kernel.
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_prefill.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"

namespace kvp::cuda {

namespace {

struct PrefillSeg {
  int64_t offset, len;
};

struct PrefillArgs {
  const float* q;  // [tq, hq, D]
  float* out;      // [tq, hq, D]
  const void* k;
  const void* v;
  const PrefillSeg* segs;
  int64_t tq;
  int hq, group;
  float scale_log2;
};

template <int D, int NW>
struct PrefillShape {
  static constexpr int kQueries = 16 * NW;          // query rows a block
  static constexpr int kStage = 2 * kTileBytes<D>;  // a K tile and a V tile
  static constexpr int kSmem = 2 * kStage;          // two stages
};

template <int D>
__device__ __forceinline__ void store_rows(const PrefillArgs& a, int h, int64_t row0,
                                           RowState<D>& st) {
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float l = st.l[i];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int64_t row = row0 + 8 * i;
    if (row >= a.tq) continue;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float* out = a.out + (row * a.hq + h) * D;
#pragma unroll
    for (int d = 0; d < D / 8; ++d)
      *reinterpret_cast<float2*>(out + d * 8 + 2 * t) =
          make_float2(st.o[d][2 * i] * inv, st.o[d][2 * i + 1] * inv);
  }
}

// Grid: (query head, query tile), the tiles with the most keys first.
template <typename T, int D, int NW>
__global__ void __launch_bounds__(NW * 32) attn_prefill_kernel(PrefillArgs a) {
  using S = PrefillShape<D, NW>;
  extern __shared__ __align__(128) uint8_t smem[];
  const int h = static_cast<int>(blockIdx.x);
  const int64_t q0 = static_cast<int64_t>(gridDim.y - 1 - blockIdx.y) * S::kQueries;
  const PrefillSeg sg = a.segs[h / a.group];
  const int64_t past = sg.len - a.tq;  // cached rows before the new ones
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int64_t wrow = q0 + warp * 16;  // the warp's first query row
  const int64_t row0 = wrow + lane / 4;
  uint32_t qf[D / 16][4];
  a_fragments<T, D>(row0 < a.tq ? a.q + (row0 * a.hq + h) * D : nullptr,
                    row0 + 8 < a.tq ? a.q + ((row0 + 8) * a.hq + h) * D : nullptr, qf);
  const int64_t last = (q0 + S::kQueries < a.tq ? q0 + S::kQueries : a.tq) - 1;
  const int64_t end = past + last + 1;  // keys the block sees
  const int64_t warp_end = past + (wrow + 15 < last ? wrow + 15 : last) + 1;
  const auto* k = static_cast<const uint8_t*>(a.k) + static_cast<size_t>(sg.offset) * D * 2;
  const auto* v = static_cast<const uint8_t*>(a.v) + static_cast<size_t>(sg.offset) * D * 2;
  RowState<D> st;
  const int tiles = static_cast<int>((end + kKeyTile - 1) / kKeyTile);
  auto load = [&](int j) {
    uint8_t* stage = smem + (j & 1) * S::kStage;
    load_tile<D, NW * 32>(stage, k, static_cast<int64_t>(j) * kKeyTile, end);
    load_tile<D, NW * 32>(stage + kTileBytes<D>, v, static_cast<int64_t>(j) * kKeyTile, end);
    cp_async_commit();
  };
  load(0);
  for (int j = 0; j < tiles; ++j) {
    if (j + 1 < tiles) {
      load(j + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int64_t k0 = static_cast<int64_t>(j) * kKeyTile;
    if (k0 < warp_end) {  // else every key of the tile is past this warp's rows
      const uint32_t ks = shared_addr(smem + (j & 1) * S::kStage);
      float s[kKeyTile / 8][4];
      zero(s);
      tile_scores<T, D>(qf, ks, s);
      const int64_t lim[2] = {past + row0 + 1, past + row0 + 9};  // causal: keys <= the row
      softmax_update<D>(s, st, k0, lim, k0 + kKeyTile - 1 > past + wrow, a.scale_log2);
      tile_pv<T, D>(s, ks + kTileBytes<D>, st);
    }
    __syncthreads();
  }
  store_rows<D>(a, h, row0, st);
}

template <typename T, int D, int NW>
void launch(const PrefillArgs& a, cudaStream_t st) {
  using S = PrefillShape<D, NW>;
  static const bool raised = [] {  // more than 48 KB of shared memory needs asking for
    check_cuda(cudaFuncSetAttribute(attn_prefill_kernel<T, D, NW>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmem),
               "prefill attention shared memory");
    return true;
  }();
  (void)raised;
  const dim3 grid(static_cast<unsigned>(a.hq),
                  static_cast<unsigned>((a.tq + S::kQueries - 1) / S::kQueries));
  attn_prefill_kernel<T, D, NW><<<grid, NW * 32, S::kSmem, st>>>(a);
}

// Four warps a block: eight (128 queries a block) measured slower on the H200
// (docs/benchmarks.md).
constexpr int kPrefillWarps = 4;

template <typename T>
void launch_for(int D, const PrefillArgs& a, cudaStream_t st) {
  if (D == 64) return launch<T, 64, kPrefillWarps>(a, st);
  launch<T, 128, kPrefillWarps>(a, st);
}

}  // namespace

bool try_prefill_attention(CudaBackend& be, const AttentionJob& job, float scale) {
  const KvSegments& kv = job.kv;
  const Tensor& q = *job.q;
  const DType dt = kv.dtype();
  static const bool off = [] {  // KVP_ATTN_PREFILL=split: the split kernel (A/B timing)
    const char* e = std::getenv("KVP_ATTN_PREFILL");
    return e && std::string(e) == "split";
  }();
  if (off || kv.has_prefix() || (dt != DType::BF16 && dt != DType::F16) ||
      (kv.head_dim != 64 && kv.head_dim != 128) || q.ndim() != 3 || q.dim(0) < kPrefillMinQueries)
    return false;
  check(q.dtype() == DType::F32 && q.dim(2) == kv.head_dim,
        "attention: q must be F32 [T, Hq, D] with the cache's head_dim");
  check(job.out && job.out->dtype() == DType::F32 && job.out->numel() == q.numel(),
        "attention: out must be F32 with q's shape");
  check(kv.n_segments > 0 && q.dim(1) % kv.n_segments == 0,
        "attention: query heads not a multiple of kv heads");
  check(kv.v.dtype() == dt && kv.v.rows() == kv.k.rows(), "attention: K and V differ");
  std::vector<PrefillSeg> segs(static_cast<size_t>(kv.n_segments));
  for (int s = 0; s < kv.n_segments; ++s) {
    PrefillSeg& p = segs[static_cast<size_t>(s)];
    p = {kv.offset[s], kv.len[s]};
    check(p.len >= q.dim(0), "attention: segment shorter than the new rows");
    check(p.offset >= 0 && p.offset + p.len <= kv.k.rows(),
          "attention: a segment lies outside its cache");
  }
  PrefillArgs a{};
  a.q = q.ptr<float>();
  a.out = job.out->ptr<float>();
  a.k = kv.k.data();
  a.v = kv.v.data();
  a.segs = static_cast<const PrefillSeg*>(be.stage(segs.data(), segs.size() * sizeof(PrefillSeg)));
  a.tq = q.dim(0);
  a.hq = static_cast<int>(q.dim(1));
  a.group = static_cast<int>(q.dim(1) / kv.n_segments);
  a.scale_log2 = scale * 1.4426950408889634f;
  if (dt == DType::BF16)
    launch_for<__nv_bfloat16>(kv.head_dim, a, be.stream());
  else
    launch_for<__half>(kv.head_dim, a, be.stream());
  check_launch("attention (prefill)");
  return true;
}

}  // namespace kvp::cuda
