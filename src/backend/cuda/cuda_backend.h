#pragma once
// The CUDA backend: every op of the seam on one GPU, on one stream. Memory comes from the
// stream-ordered allocator (cudaMallocAsync) with a pool that keeps what it has, so a decode
// step that reuses its scratch allocates nothing. Host arrays an op takes (positions, row
// lists, segment tables) are staged with one asynchronous copy from a pinned ring into a
// device ring; no op waits for the device except download(), synchronize() and matmul_argmax
// (which returns host tokens), and staging once per trip round its ring. One file per op
// family: memory.cu, elementwise.cu, matmul.cu, attention.cu, attention_prefill.cu,
// column_sums.cu, press_ops.cu, top_k.cu.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/attention_plan.h"

namespace kvp::cuda {

// The stream and allocator state that outlives the backend while tensors it made are alive.
struct DeviceState {
  cudaStream_t stream = nullptr;
  ~DeviceState();
};

class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;
  Device device() const override { return Device::CUDA; }
  const char* name() const override { return "cuda"; }
  cudaStream_t stream() const { return state_->stream; }
  int sm_count() const { return sm_count_; }
  const std::string& device_name() const { return device_name_; }
  // Bytes the allocator holds from the device now, and the most it has used at once.
  size_t reserved_bytes() const;
  size_t peak_used_bytes() const;
  // Starts a new high-water mark for peak_used_bytes() at what is in use now.
  void reset_peak();

  using Backend::alloc;
  Tensor alloc(DType dtype, const std::array<int64_t, 4>& shape, int ndim) override;
  void upload(const void* src, Tensor& dst, size_t dst_offset, size_t bytes) override;
  void download(const Tensor& src, size_t src_offset, void* dst, size_t bytes) override;
  void copy(const Tensor& src, size_t src_offset, Tensor& dst, size_t dst_offset,
            size_t bytes) override;
  void synchronize() override;
  Tensor load_weight(const Tensor& host) override;
  void copy_rows(const Tensor& src, const int64_t* src_rows, Tensor& dst, const int64_t* dst_rows,
                 int64_t n) override;
  void gather_rows(const Tensor& k_src, const Tensor& v_src, std::span<const SegmentRows> segs,
                   Tensor& k_dst, Tensor& v_dst) override;

  void matmul(const Tensor& x, const Tensor& w, Tensor& y) override;
  void matmul_multi(const Tensor& x, std::span<const MatmulOut> outs) override;
  void matmul_add(const Tensor& x, const Tensor& w, Tensor& y, Tensor& scratch) override;
  std::vector<int32_t> matmul_argmax(const Tensor& x, const Tensor& w) override;
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override;
  void rope(Tensor& x, const int32_t* positions, const RopeParams& params) override;
  void silu_mul(Tensor& gate, const Tensor& up) override;
  void add(Tensor& y, const Tensor& x) override;
  void add_bias(Tensor& y, const Tensor& bias) override;
  void embed(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out) override;
  void attention(const Tensor& q, const KvSegments& kv, float scale, Tensor& out) override;
  void attention_batch(const std::vector<AttentionJob>& jobs, float scale) override;
  void attention_column_sums(const Tensor& q, const KvSegments& kv, float scale,
                             Tensor& out) override;

  void row_norms(const Tensor& x, Norm norm, Tensor& out) override;
  void cosine_similarity(const Tensor& x, const Tensor& a, float eps, Tensor& out) override;
  void normalize_rows(const Tensor& x, float eps, Tensor& out) override;
  void reduce(const Tensor& x, int axis, Reduce op, Tensor& out) override;
  void affine(Tensor& x, float scale, float shift) override;
  void mul(Tensor& y, const Tensor& x) override;
  void div(Tensor& y, const Tensor& x) override;
  void softmax_rows(Tensor& x) override;
  void transpose(const Tensor& x, Tensor& out) override;
  void avg_pool(const Tensor& x, int64_t cols, int64_t kernel, double scale, Tensor& out) override;
  void set_cols_to_max(Tensor& x, int64_t begin, int64_t end, float plus) override;
  void scatter_value(Tensor& x, const Tensor& idx, float value) override;
  void top_k(const Tensor& x, int64_t k, Tensor& idx) override;

  // A device copy of `bytes` host bytes, valid for ops issued before the ring wraps round
  // again (every op that takes it is issued right after). Asynchronous.
  const void* stage(const void* host, size_t bytes);
  // Device scratch of at least `bytes`, one buffer per slot, grown (never shrunk) on demand;
  // valid until the next scratch() call of the same slot.
  enum class Slot { GemmInput, Logits, AttnPartials, AttnTables, SortKeys, SortTemp, Misc, Count };
  void* scratch(Slot slot, size_t bytes);
  // Throws if a kernel recorded a bad argument (scatter_value's index check) since the last
  // check; called where the host waits anyway.
  void check_device_errors();
  int* device_error_flag() const { return error_flag_; }
  // The attention launch's tables, rebuilt per call (attention.cu).
  AttentionPlan& attention_plan() { return plan_; }

 private:
  void check_mine(const Tensor& t, const char* what) const;
  void check_matmul(const Tensor& x, const Tensor& w, const Tensor& y);

  std::shared_ptr<DeviceState> state_;
  cublasHandle_t cublas_ = nullptr;
  int sm_count_ = 0;
  std::string device_name_;
  // Staging: host arrays go through a pinned ring into a device ring of the same size.
  void grow_ring(size_t bytes);
  void* ring_ = nullptr;
  void* pinned_ = nullptr;
  size_t ring_size_ = 0, ring_pos_ = 0;
  Tensor scratch_[static_cast<int>(Slot::Count)];
  int* error_flag_ = nullptr;
  AttentionPlan plan_;
  // What load_weight dequantises GGUF matrices to: BF16, or F32 (KVP_CUDA_WEIGHTS=f32, for
  // comparisons with the CPU at its precision; twice the memory and bandwidth).
  DType quantized_to_ = DType::BF16;
  // The last few small arrays staged, for stage() to reuse while the ring still holds them.
  struct StagedCopy {
    std::vector<uint8_t> bytes;
    const void* dev;
  };
  static constexpr size_t kStagedKept = 8;
  std::vector<StagedCopy> staged_;
  // copy_rows' index pairs, kept between calls (a compaction's lists are megabytes).
  std::vector<int64_t> row_lists_;
  // gather_rows' segment table and int32 rows, kept between calls likewise.
  std::vector<uint8_t> gather_staging_;
};

}  // namespace kvp::cuda
