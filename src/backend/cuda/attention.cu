// Attention over the segmented cache, each kv head at its own length. The work is split
// into items of (segment, up to QB query vectors, a chunk of rows), the chunk sized from the
// total visible rows so every SM gets several items whatever the head lengths are; a combine
// step merges the items' partial softmax states (m, l, acc) in the log2 domain. The G query
// heads of a kv head share each K/V load, rows are read with 16-byte loads, offsets are
// 64-bit. The items of a 16-bit cache run on tensor cores (attention_split_mma.cuh), an F32
// cache's on CUDA cores (attn_split_kernel, below); head dims other than 64 and 128 take a
// simple warp-per-query kernel.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/attention_plan.h"
#include "backend/cuda/attention_prefill.h"
#include "backend/cuda/attention_split_mma.cuh"
#include "backend/cuda/attention_util.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/op_checks.h"

namespace kvp::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerLane = 4;  // NR: rows a sub-group loads per step

// The partial state of one item's QB query vectors over its rows.
template <typename T, int D, int QB, bool WITH_V>
__global__ void __launch_bounds__(kWarps * 32)
    attn_split_kernel(const JobDesc* jobs, const SegDesc* segs, const WorkItem* items,
                      const int32_t* prefix_rows, float scale_log2, float* part_acc,
                      float* part_ml) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int LPR = D / VEC;  // lanes per row
  constexpr int RPW = 32 / LPR;
  constexpr int NSG = kWarps * RPW;  // sub-groups of LPR lanes in the block
  constexpr int NR = kRowsPerLane;
  wait_for_predecessor();
  release_dependents();
  const WorkItem it = items[blockIdx.x];
  const JobDesc job = jobs[it.job];
  const SegDesc sd = segs[job.seg_begin + it.seg];
  __shared__ float qs[QB][D];
  __shared__ int64_t lim[QB];
  load_queries<D, QB>(job, it.seg, it.qv_begin, it.qv_count, scale_log2, &qs[0][0]);
  if (threadIdx.x < QB) {
    const int qi = threadIdx.x;
    lim[qi] = qi < it.qv_count ? visible_rows(job, sd, it.qv_begin + qi) : 0;
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = lane / LPR, li = lane % LPR;
  float m[QB], l[QB], acc[QB][VEC];
#pragma unroll
  for (int q = 0; q < QB; ++q) {
    m[q] = -INFINITY;
    l[q] = 0.f;
#pragma unroll
    for (int v = 0; v < VEC; ++v) acc[q][v] = 0.f;
  }
  // Whole warps step together (the shuffles need every lane); rows past the end are masked.
  for (int64_t wbase = it.row_begin + static_cast<int64_t>(warp) * RPW * NR; wbase < it.row_end;
       wbase += static_cast<int64_t>(kWarps) * RPW * NR) {
    const int64_t r0 = wbase + sub * NR;
    uint4 kraw[NR], vraw[NR];
#pragma unroll
    for (int i = 0; i < NR; ++i) {
      const int64_t r = r0 + i;
      if (r < it.row_end) {
        kraw[i] = __ldg(
            reinterpret_cast<const uint4*>(kv_row<T>(job.k, job.pk, sd, prefix_rows, r, D)) + li);
        if constexpr (WITH_V)
          vraw[i] = __ldg(
              reinterpret_cast<const uint4*>(kv_row<T>(job.v, job.pv, sd, prefix_rows, r, D)) + li);
      } else {
        kraw[i] = make_uint4(0, 0, 0, 0);
        vraw[i] = make_uint4(0, 0, 0, 0);
      }
    }
    float s[NR][QB];
#pragma unroll
    for (int i = 0; i < NR; ++i) {
      float kf[VEC];
      unpack_row<T>(kraw[i], kf);
#pragma unroll
      for (int q = 0; q < QB; ++q) {
        float d = 0.f;
#pragma unroll
        for (int v = 0; v < VEC; ++v) d += qs[q][li * VEC + v] * kf[v];
        s[i][q] = d;
      }
    }
#pragma unroll
    for (int o = LPR / 2; o > 0; o >>= 1)
#pragma unroll
      for (int i = 0; i < NR; ++i)
#pragma unroll
        for (int q = 0; q < QB; ++q) s[i][q] += __shfl_xor_sync(0xffffffffu, s[i][q], o);
#pragma unroll
    for (int q = 0; q < QB; ++q) {
      float mx = m[q];
#pragma unroll
      for (int i = 0; i < NR; ++i) {
        const int64_t r = r0 + i;
        if (!(r < it.row_end && r < lim[q])) s[i][q] = -INFINITY;
        mx = fmaxf(mx, s[i][q]);
      }
      const float ref = mx == -INFINITY ? 0.f : mx;
      const float corr = exp2f(m[q] - ref);
      m[q] = mx;
      l[q] *= corr;
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[q][v] *= corr;
#pragma unroll
      for (int i = 0; i < NR; ++i) {
        const float p = exp2f(s[i][q] - ref);
        l[q] += p;
        s[i][q] = p;
      }
    }
    if constexpr (WITH_V) {
#pragma unroll
      for (int i = 0; i < NR; ++i) {
        float vf[VEC];
        unpack_row<T>(vraw[i], vf);
#pragma unroll
        for (int q = 0; q < QB; ++q)
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[q][v] += s[i][q] * vf[v];
      }
    }
  }
  // Merge the sub-groups' states, then write the item's partials.
  __shared__ float sm_m[NSG][QB], sm_l[NSG][QB];
  __shared__ float sm_acc[NSG][QB][WITH_V ? D : 1];
  const int sg = warp * RPW + sub;
#pragma unroll
  for (int q = 0; q < QB; ++q) {
    if (li == 0) {
      sm_m[sg][q] = m[q];
      sm_l[sg][q] = l[q];
    }
    if constexpr (WITH_V) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) sm_acc[sg][q][li * VEC + v] = acc[q][v];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < QB * (WITH_V ? D : 1); e += blockDim.x) {
    const int q = e / (WITH_V ? D : 1), d = e % (WITH_V ? D : 1);
    float mx = -INFINITY;
    for (int g = 0; g < NSG; ++g) mx = fmaxf(mx, sm_m[g][q]);
    const float ref = mx == -INFINITY ? 0.f : mx;
    float a = 0.f, lsum = 0.f;
    for (int g = 0; g < NSG; ++g) {
      const float w = exp2f(sm_m[g][q] - ref);
      if constexpr (WITH_V) a += sm_acc[g][q][d] * w;
      lsum += sm_l[g][q] * w;
    }
    const int64_t slot = static_cast<int64_t>(blockIdx.x) * QB + q;
    if constexpr (WITH_V) part_acc[slot * D + d] = a;
    if (d == 0) {
      part_ml[slot * 2] = mx;
      part_ml[slot * 2 + 1] = lsum;
    }
  }
}

constexpr int kMaxItems = 2048;  // work items one query group may be split into

// Merges a query group's items for query vector blockIdx.y: the attention output, or (lse !=
// null) only log2-sum-exp. The items' weights go to shared memory once; then each of the
// kCombineWarps warps sums every kCombineWarps-th item over all dims and the warps' sums are
// added. Many warps, since a decode step's few blocks wait on these loads one item at a time.
constexpr int kCombineWarps = 16;
__global__ void __launch_bounds__(kCombineWarps * 32)
    attn_combine_kernel(const JobDesc* jobs, const CombineItem* combines, int qb, int D,
                        const float* part_acc, const float* part_ml, float* lse,
                        int64_t lse_stride) {
  wait_for_predecessor();
  release_dependents();
  const CombineItem ci = combines[blockIdx.x];
  const int qi = blockIdx.y;
  if (qi >= ci.qv_count) return;
  const JobDesc job = jobs[ci.job];
  __shared__ float w_s[kMaxItems];
  __shared__ float red[kCombineWarps];
  __shared__ float acc_s[kCombineWarps][256];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  auto slot = [&](int i) { return static_cast<int64_t>(ci.item_begin + i) * qb + qi; };
  auto block_sum = [&](float v, bool max) {
    v = max ? warp_max(v) : warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < kCombineWarps; ++w) r = max ? fmaxf(r, red[w]) : r + red[w];
    __syncthreads();
    return r;
  };
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < ci.item_count; i += blockDim.x)
    mx = fmaxf(mx, part_ml[slot(i) * 2]);
  mx = block_sum(mx, true);
  const float ref = mx == -INFINITY ? 0.f : mx;
  float lsum = 0.f;
  for (int i = threadIdx.x; i < ci.item_count; i += blockDim.x) {
    const float w = exp2f(part_ml[slot(i) * 2] - ref);
    w_s[i] = w;
    lsum += part_ml[slot(i) * 2 + 1] * w;
  }
  lsum = block_sum(lsum, false);  // its barrier also publishes w_s
  const int qv = ci.qv_begin + qi;
  if (lse) {
    if (threadIdx.x == 0) lse[(job.seg_begin + ci.seg) * lse_stride + qv] = ref + log2f(lsum);
    return;
  }
  float a[8] = {};  // dims lane + 32 j (D <= 256)
  for (int i = warp; i < ci.item_count; i += kCombineWarps) {
    const float* row = part_acc + slot(i) * D;
    const float w = w_s[i];
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (lane + 32 * j < D) a[j] += row[lane + 32 * j] * w;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j)
    if (lane + 32 * j < D) acc_s[warp][lane + 32 * j] = a[j];
  __syncthreads();
  const int64_t t = qv / job.group;
  const int64_t h = static_cast<int64_t>(ci.seg) * job.group + qv % job.group;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = acc_s[0][d];
    for (int w = 1; w < kCombineWarps; ++w) sum += acc_s[w][d];
    job.out[(t * job.hq + h) * D + d] = lsum > 0.f ? sum / lsum : 0.f;
  }
}

// Any head_dim <= 256: one warp per query vector over every visible row.
template <typename T, bool WITH_V>
__global__ void attn_simple_kernel(const JobDesc* jobs, const SegDesc* segs,
                                   const CombineItem* combines, const int32_t* prefix_rows, int D,
                                   float scale_log2, float* lse, int64_t lse_stride) {
  const CombineItem ci = combines[blockIdx.x];
  const JobDesc job = jobs[ci.job];
  const SegDesc sd = segs[job.seg_begin + ci.seg];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int qi = warp; qi < ci.qv_count; qi += blockDim.x / 32) {
    const int qv = ci.qv_begin + qi;
    const int64_t t = qv / job.group;
    const int64_t h = static_cast<int64_t>(ci.seg) * job.group + qv % job.group;
    const float* q = job.q + (t * job.hq + h) * D;
    float qr[8], acc[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int d = lane + 32 * j;
      qr[j] = d < D ? q[d] * scale_log2 : 0.f;
      acc[j] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const int64_t n = visible_rows(job, sd, qv);
    for (int64_t r = 0; r < n; ++r) {
      const T* kr = kv_row<T>(job.k, job.pk, sd, prefix_rows, r, D);
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int d = lane + 32 * j;
        if (d < D) s += qr[j] * to_f32(kr[d]);
      }
      s = warp_sum(s);
      const float mx = fmaxf(m, s), corr = exp2f(m - mx), p = exp2f(s - mx);
      l = l * corr + p;
      m = mx;
      if constexpr (WITH_V) {
        const T* vr = kv_row<T>(job.v, job.pv, sd, prefix_rows, r, D);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int d = lane + 32 * j;
          if (d < D) acc[j] = acc[j] * corr + p * to_f32(vr[d]);
        }
      }
    }
    if (lse) {
      if (lane == 0) lse[(job.seg_begin + ci.seg) * lse_stride + qv] = m + log2f(l);
      continue;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int d = lane + 32 * j;
      if (d < D) job.out[(t * job.hq + h) * D + d] = l > 0.f ? acc[j] / l : 0.f;
    }
  }
}

}  // namespace

// Blocks of the split kernel (attn_split_kernel) that fit on one SM at once.
template <typename T>
int resident_blocks_of(int D, int qb) {
  int n = 1;
  auto query = [&](auto kernel) {
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kWarps * 32, 0),
               "occupancy");
  };
  if (D == 64 && qb == 4)
    query(attn_split_kernel<T, 64, 4, true>);
  else if (D == 64)
    query(attn_split_kernel<T, 64, 8, true>);
  else if (qb == 4)
    query(attn_split_kernel<T, 128, 4, true>);
  else
    query(attn_split_kernel<T, 128, 8, true>);
  return std::max(n, 1);
}

// Kernels with more than 48 KB of dynamic shared memory must ask for it, once each.
template <auto Kernel>
void allow_smem(int bytes) {
  static const bool raised = [bytes] {
    check_cuda(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
               "attention shared memory");
    return true;
  }();
  (void)raised;
}

int mma_stages() {  // KVP_ATTN_STAGES: 2, 3 or 4 (A/B timing)
  static const int n = [] {
    const char* e = std::getenv("KVP_ATTN_STAGES");
    const int v = e ? std::atoi(e) : kSplitStages;
    return v >= 2 && v <= 4 ? v : kSplitStages;
  }();
  return n;
}

template <typename T, int D, int ST>
int resident_mma_blocks_of() {
  allow_smem<attn_split_mma_kernel<T, D, ST>>(kSplitSmem<D, ST>);
  int n = 1;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, attn_split_mma_kernel<T, D, ST>,
                                                           kSplitWarps * 32, kSplitSmem<D, ST>),
             "occupancy");
  return std::max(n, 1);
}

template <typename T, int D>
int resident_mma_blocks() {
  const int st = mma_stages();
  return st == 2   ? resident_mma_blocks_of<T, D, 2>()
         : st == 4 ? resident_mma_blocks_of<T, D, 4>()
                   : resident_mma_blocks_of<T, D, 3>();
}

// KVP_ATTN_KERNEL=registers runs 16-bit caches on the CUDA-core split kernel too (A/B timing).
const char* kernel_choice() {
  static const char* e = std::getenv("KVP_ATTN_KERNEL");
  return e ? e : "";
}

// Asked once per (row type, head_dim, qb, kernel).
int resident_blocks(DType dtype, int D, int qb, bool mma) {
  if (!AttentionPlan::fast_path(D)) return 1;
  static int known[3][2][2][2] = {};
  const int t = dtype == DType::F32 ? 0 : dtype == DType::F16 ? 1 : 2;
  int& n = known[t][D == 128][qb == 8][mma];
  if (n == 0) {
    with_row_type(dtype, [&](auto p) {
      using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
      if constexpr (sizeof(T) == 2) {
        if (mma) {
          n = D == 64 ? resident_mma_blocks<T, 64>() : resident_mma_blocks<T, 128>();
          return;
        }
      }
      n = resident_blocks_of<T>(D, qb);
    });
  }
  return n;
}

void AttentionPlan::build(const std::vector<AttentionJob>& jobs, int sm_count, bool fast,
                          bool with_v) {
  job_list.clear();
  segs.clear();
  items.clear();
  combines.clear();
  prefix.clear();
  D = static_cast<int>(jobs.front().kv.head_dim);
  dtype = jobs.front().kv.dtype();
  mma = fast && with_v && dtype != DType::F32 && kernel_choice()[0] == 0;
  int max_qv = 1;
  for (const AttentionJob& j : jobs) add_job(j, &max_qv, mma ? 16 : 8);
  qb = max_qv <= 4 ? 4 : max_qv <= 8 ? 8 : 16;
  split_items(fast ? sm_count * resident_blocks(dtype, D, qb, mma) : 0, fast);
}

void AttentionPlan::add_job(const AttentionJob& j, int* max_qv, int qv_cap) {
  const Tensor& q = *j.q;
  const KvSegments& kv = j.kv;
  check(q.dtype() == DType::F32 && q.ndim() == 3, "attention: q must be F32 [T, Hq, D]");
  check(j.out && j.out->dtype() == DType::F32 && j.out->numel() == q.numel(),
        "attention: out must be F32 with q's shape");
  check(kv.head_dim == D && q.dim(2) == D, "attention: q head_dim differs from the cache's");
  check(kv.dtype() == dtype, "attention: the jobs' caches differ in row type");
  check(kv.n_segments > 0 && q.dim(1) % kv.n_segments == 0,
        "attention: query heads not a multiple of kv heads");
  JobDesc jd{};
  jd.q = q.ptr<float>();
  jd.out = j.out->ptr<float>();
  jd.k = kv.k.data();
  jd.v = kv.v.data();
  jd.pk = kv.has_prefix() ? kv.prefix_k.data() : nullptr;
  jd.pv = kv.has_prefix() ? kv.prefix_v.data() : nullptr;
  jd.tq = q.dim(0);
  jd.seg_begin = static_cast<int32_t>(segs.size());
  jd.n_seg = kv.n_segments;
  jd.group = static_cast<int32_t>(q.dim(1) / kv.n_segments);
  jd.hq = static_cast<int32_t>(q.dim(1));
  const int64_t own_rows = kv.k.rows();
  for (int s = 0; s < kv.n_segments; ++s) {
    SegDesc sd{};
    sd.offset = kv.offset[s];
    sd.len = kv.len[s];
    check(sd.len >= jd.tq, "attention: segment shorter than the new rows");
    if (kv.has_prefix()) {
      sd.prefix_offset = kv.prefix_offset[s];
      sd.prefix_len = kv.prefix_len[s];
      sd.prefix_rows_start = static_cast<int64_t>(prefix.size());
      const int64_t borrowed_rows = kv.prefix_k.rows();
      for (int64_t i = 0; i < sd.prefix_len; ++i) {
        const int64_t row = sd.prefix_offset + kv.prefix_rows[s][i];
        check(row >= 0 && row < borrowed_rows, "attention: a borrowed row is out of range");
        prefix.push_back(kv.prefix_rows[s][i]);
      }
    }
    check(sd.offset >= 0 && sd.offset + (sd.len - sd.prefix_len) <= own_rows,
          "attention: a segment lies outside its cache");
    segs.push_back(sd);
  }
  *max_qv = std::max<int64_t>(*max_qv, std::min<int64_t>(qv_cap, jd.tq * jd.group));
  job_list.push_back(jd);
}

void AttentionPlan::split_items(int slots, bool fast) {
  // Visible rows of each query group, then a chunk size that gives every SM a few items.
  int64_t total = 0;
  for (size_t j = 0; j < job_list.size(); ++j) {
    const JobDesc& jd = job_list[j];
    for (int s = 0; s < jd.n_seg; ++s)
      for (int64_t qv = 0; qv < jd.tq * jd.group; qv += qb)
        total += group_rows(jd, segs[static_cast<size_t>(jd.seg_begin + s)], qv);
  }
  // One wave: as many items as blocks fit on the GPU at once (a second, part-empty wave
  // would cost nearly as much as the first), of whole 64-row multiples, and never more than
  // kMaxItems of them for one query group.
  const int64_t target = std::max(slots, 1);
  int64_t longest = 1;
  for (const SegDesc& sd : segs) longest = std::max(longest, sd.len);
  int64_t chunk = std::max<int64_t>(64, (total / target + 63) / 64 * 64);
  chunk = std::max(chunk, (longest + kMaxItems - 1) / kMaxItems);
  if (!fast) chunk = INT64_MAX;
  for (size_t j = 0; j < job_list.size(); ++j) {
    const JobDesc& jd = job_list[j];
    for (int s = 0; s < jd.n_seg; ++s) {
      const SegDesc& sd = segs[static_cast<size_t>(jd.seg_begin + s)];
      for (int64_t qv = 0; qv < jd.tq * jd.group; qv += qb) {
        const int count = static_cast<int>(std::min<int64_t>(qb, jd.tq * jd.group - qv));
        const int64_t rows = group_rows(jd, sd, qv);
        CombineItem ci{static_cast<int32_t>(j),
                       s,
                       static_cast<int32_t>(qv),
                       count,
                       static_cast<int32_t>(items.size()),
                       0};
        for (int64_t r = 0; r < std::max<int64_t>(rows, 1); r += chunk) {
          items.push_back({ci.job, s, ci.qv_begin, count, r, std::min(rows, r + chunk)});
          ++ci.item_count;
        }
        combines.push_back(ci);
      }
    }
  }
}

int64_t AttentionPlan::group_rows(const JobDesc& jd, const SegDesc& sd, int64_t qv_begin) const {
  const int64_t last = std::min<int64_t>(qv_begin + qb, jd.tq * jd.group) - 1;
  return sd.len - jd.tq + last / jd.group + 1;
}

AttentionPlan::Device AttentionPlan::stage(CudaBackend& be) {
  std::vector<uint8_t>& buf = staging;
  buf.clear();
  auto put = [&](const void* p, size_t bytes) {
    const size_t at = (buf.size() + 15) / 16 * 16;
    buf.resize(at + bytes);
    if (bytes) std::memcpy(buf.data() + at, p, bytes);
    return at;
  };
  const size_t o_jobs = put(job_list.data(), job_list.size() * sizeof(JobDesc));
  const size_t o_segs = put(segs.data(), segs.size() * sizeof(SegDesc));
  const size_t o_items = put(items.data(), items.size() * sizeof(WorkItem));
  const size_t o_comb = put(combines.data(), combines.size() * sizeof(CombineItem));
  const size_t o_pre = put(prefix.data(), prefix.size() * sizeof(int32_t));
  const auto* base = static_cast<const uint8_t*>(be.stage(buf.data(), buf.size()));
  Device d;
  d.jobs = reinterpret_cast<const JobDesc*>(base + o_jobs);
  d.segs = reinterpret_cast<const SegDesc*>(base + o_segs);
  d.items = reinterpret_cast<const WorkItem*>(base + o_items);
  d.combines = reinterpret_cast<const CombineItem*>(base + o_comb);
  d.prefix = reinterpret_cast<const int32_t*>(base + o_pre);
  return d;
}

template <typename T, int D, int QB>
void launch_split(const AttentionPlan::Device& d, unsigned n_items, bool with_v, float scale_log2,
                  float* part_acc, float* part_ml, cudaStream_t st) {
  if (with_v)
    launch(attn_split_kernel<T, D, QB, true>, n_items, kWarps * 32, 0, st, "attention (split)",
           d.jobs, d.segs, d.items, d.prefix, scale_log2, part_acc, part_ml);
  else
    launch(attn_split_kernel<T, D, QB, false>, n_items, kWarps * 32, 0, st, "attention (split)",
           d.jobs, d.segs, d.items, d.prefix, scale_log2, part_acc, part_ml);
}

template <typename T>
void launch_split(int D, int qb, const AttentionPlan::Device& d, unsigned n_items, bool with_v,
                  float scale_log2, float* part_acc, float* part_ml, cudaStream_t st) {
  if (D == 64 && qb == 4)
    return launch_split<T, 64, 4>(d, n_items, with_v, scale_log2, part_acc, part_ml, st);
  if (D == 64) return launch_split<T, 64, 8>(d, n_items, with_v, scale_log2, part_acc, part_ml, st);
  if (qb == 4)
    return launch_split<T, 128, 4>(d, n_items, with_v, scale_log2, part_acc, part_ml, st);
  launch_split<T, 128, 8>(d, n_items, with_v, scale_log2, part_acc, part_ml, st);
}

template <typename T, int D, int ST>
void launch_split_mma(const AttentionPlan& plan, const AttentionPlan::Device& d, unsigned n_items,
                      float scale_log2, float* part_acc, float* part_ml, cudaStream_t st) {
  allow_smem<attn_split_mma_kernel<T, D, ST>>(kSplitSmem<D, ST>);
  launch(attn_split_mma_kernel<T, D, ST>, n_items, kSplitWarps * 32, kSplitSmem<D, ST>, st,
         "attention (split)", d.jobs, d.segs, d.items, d.prefix, scale_log2, plan.qb, part_acc,
         part_ml);
}

template <typename T, int D>
void launch_split_mma(const AttentionPlan& plan, const AttentionPlan::Device& d, unsigned n_items,
                      float scale_log2, float* part_acc, float* part_ml, cudaStream_t st) {
  const int stages = mma_stages();
  if (stages == 2)
    return launch_split_mma<T, D, 2>(plan, d, n_items, scale_log2, part_acc, part_ml, st);
  if (stages == 4)
    return launch_split_mma<T, D, 4>(plan, d, n_items, scale_log2, part_acc, part_ml, st);
  launch_split_mma<T, D, 3>(plan, d, n_items, scale_log2, part_acc, part_ml, st);
}

template <typename T>
void launch_split_mma(const AttentionPlan& plan, const AttentionPlan::Device& d, unsigned n_items,
                      float scale_log2, float* part_acc, float* part_ml, cudaStream_t st) {
  if (plan.D == 64)
    return launch_split_mma<T, 64>(plan, d, n_items, scale_log2, part_acc, part_ml, st);
  launch_split_mma<T, 128>(plan, d, n_items, scale_log2, part_acc, part_ml, st);
}

void run_attention(CudaBackend& be, AttentionPlan& plan, float scale, float* lse,
                   int64_t lse_stride) {
  if (plan.items.empty()) return;
  const AttentionPlan::Device d = plan.stage(be);
  const float scale_log2 = scale * 1.4426950408889634f;
  cudaStream_t st = be.stream();
  const bool with_v = lse == nullptr;
  if (!AttentionPlan::fast_path(plan.D)) {
    check(plan.D <= 256, "attention: head_dim above 256 is not supported on CUDA");
    with_row_type(plan.dtype, [&](auto p) {
      using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
      const unsigned n = static_cast<unsigned>(plan.combines.size());
      if (with_v)
        attn_simple_kernel<T, true><<<n, 128, 0, st>>>(d.jobs, d.segs, d.combines, d.prefix, plan.D,
                                                       scale_log2, lse, lse_stride);
      else
        attn_simple_kernel<T, false><<<n, 128, 0, st>>>(d.jobs, d.segs, d.combines, d.prefix,
                                                        plan.D, scale_log2, lse, lse_stride);
    });
    return check_launch("attention (simple)");
  }
  const int64_t slots = static_cast<int64_t>(plan.items.size()) * plan.qb;
  auto* part_acc = static_cast<float*>(be.scratch(
      CudaBackend::Slot::AttnPartials, static_cast<size_t>(slots) * (plan.D + 2) * sizeof(float)));
  float* part_ml = part_acc + slots * plan.D;
  const unsigned n_items = static_cast<unsigned>(plan.items.size());
  with_row_type(plan.dtype, [&](auto p) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    if constexpr (sizeof(T) == 2) {
      if (plan.mma) return launch_split_mma<T>(plan, d, n_items, scale_log2, part_acc, part_ml, st);
    }
    launch_split<T>(plan.D, plan.qb, d, n_items, with_v, scale_log2, part_acc, part_ml, st);
  });
  check_launch("attention (split)");
  launch(attn_combine_kernel, dim3(static_cast<unsigned>(plan.combines.size()), plan.qb),
         kCombineWarps * 32, 0, st, "attention (combine)", d.jobs, d.combines, plan.qb, plan.D,
         part_acc, part_ml, lse, lse_stride);
}

void CudaBackend::attention(const Tensor& q, const KvSegments& kv, float scale, Tensor& out) {
  attention_batch({AttentionJob{&q, kv, &out}}, scale);
}

void CudaBackend::attention_batch(const std::vector<AttentionJob>& jobs, float scale) {
  if (jobs.empty()) return;
  for (const AttentionJob& j : jobs) {
    check(j.q && j.out, "attention: a job without q or out");
    check_f32(this, *j.q, "attention q");
    check_f32(this, *j.out, "attention out");
    check_dev(this, j.kv.k, "attention k");
    check_dev(this, j.kv.v, "attention v");
    if (j.kv.has_prefix()) {
      check_dev(this, j.kv.prefix_k, "attention borrowed k");
      check_dev(this, j.kv.prefix_v, "attention borrowed v");
    }
  }
  if (jobs.front().q->numel() == 0 && jobs.size() == 1) return;
  if (jobs.size() == 1 && try_prefill_attention(*this, jobs.front(), scale)) return;
  plan_.build(jobs, sm_count(),
              AttentionPlan::fast_path(static_cast<int>(jobs.front().kv.head_dim)));
  run_attention(*this, plan_, scale, nullptr, 0);
}

}  // namespace kvp::cuda
