#pragma once
// The tables the attention kernels read (built on the host from KvSegments, staged in one
// copy): a job per query tensor, a segment per kv head, and the work split.
#include <cstdint>

namespace kvp::cuda {

// Query vectors of a (job, segment) are numbered qv = t * group + g: token t of query head
// segment * group + g. Query t sees rows [0, len - tq + t] of its segment.
struct JobDesc {
  const float* q;  // [tq, hq, D]
  float* out;      // [tq, hq, D]
  const void* k;   // own rows
  const void* v;
  const void* pk;  // borrowed prefix rows (or null)
  const void* pv;
  int64_t tq;
  int32_t seg_begin, n_seg, group, hq;
};

struct SegDesc {
  int64_t offset, len;
  int64_t prefix_offset, prefix_len, prefix_rows_start;  // into the staged prefix row list
};

// Rows [row_begin, row_end) of one segment for query vectors [qv_begin, qv_begin + qv_count).
struct WorkItem {
  int32_t job, seg, qv_begin, qv_count;
  int64_t row_begin, row_end;
};

// The work items [item_begin, item_begin + item_count) that together cover those queries.
struct CombineItem {
  int32_t job, seg, qv_begin, qv_count, item_begin, item_count;
};

}  // namespace kvp::cuda
