#pragma once
// The host side of an attention launch: the job, segment and work tables built from
// KvSegments (and checked against them), staged to the device in one copy. The backend keeps
// one plan and rebuilds it per call, so its vectors stop allocating once they have grown.
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/attention_tables.h"

namespace kvp::cuda {

class CudaBackend;

struct AttentionPlan {
  int D = 0;
  DType dtype = DType::F32;
  int qb = 8;        // query vectors per work item
  bool mma = false;  // the tensor-core split kernel (16-bit rows, with V) runs the items
  std::vector<JobDesc> job_list;
  std::vector<SegDesc> segs;
  std::vector<WorkItem> items;
  std::vector<CombineItem> combines;
  std::vector<int32_t> prefix;
  std::vector<uint8_t> staging;

  struct Device {
    const JobDesc* jobs;
    const SegDesc* segs;
    const WorkItem* items;
    const CombineItem* combines;
    const int32_t* prefix;
  };

  // fast: split rows into chunks (the split kernel); otherwise one item per query group.
  // with_v: the output is wanted (not only log-sum-exp).
  void build(const std::vector<AttentionJob>& jobs, int sm_count, bool fast, bool with_v = true);
  Device stage(CudaBackend& be);
  static bool fast_path(int D) { return D == 64 || D == 128; }

 private:
  void add_job(const AttentionJob& j, int* max_qv, int qv_cap);
  // slots: work items that run at once (blocks per SM x SMs).
  void split_items(int slots, bool fast);
  int64_t group_rows(const JobDesc& jd, const SegDesc& sd, int64_t qv_begin) const;
};

// Runs the plan's attention; with lse, writes only log2-sum-exp per query vector
// (lse[global segment * lse_stride + qv]) for attention_column_sums.
void run_attention(CudaBackend& be, AttentionPlan& plan, float scale, float* lse,
                   int64_t lse_stride);

}  // namespace kvp::cuda
