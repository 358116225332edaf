#pragma once
// The CPU backend: one class that checks arguments and dispatches to one file per op family
// (matmul_cpu.cpp, attention_cpu.cpp, elementwise_cpu.cpp; the quantised kernels live in
// quant_dot.cpp). Internal to backend/cpu; others use make_backend("cpu", n)
// from backend/factory.h.
#include <memory>

#include "backend/backend.h"
#include "backend/cpu/reference.h"
#include "backend/cpu/weight_cache.h"
#include "core/thread_pool.h"

namespace kvp::cpu {

// Up to this many rows of x, matmul runs matrix-vector kernels from the stored weights.
constexpr int64_t kGemvMaxRows = 3;

void matmul(ThreadPool& pool, const Tensor& x, const Tensor& w, Tensor& y);
// Per row of x, the index of the largest entry of matmul(x, w), ties to the lower index
// (argmax_projection_cpu.cpp); `tables` keeps the screen's repacked copy of each Q8_0 table.
// matmul_argmax_plain computes every entry to get it.
std::vector<int32_t> matmul_argmax(ThreadPool& pool, WeightCache& tables, const Tensor& x,
                                   const Tensor& w);
std::vector<int32_t> matmul_argmax_plain(ThreadPool& pool, const Tensor& x, const Tensor& w);
void attention(ThreadPool& pool, const Tensor& q, const KvSegments& kv, float scale, Tensor& out);
void attention_many(ThreadPool& pool, const std::vector<AttentionJob>& jobs, float scale);
void rms_norm(ThreadPool& pool, const Tensor& x, const Tensor& weight, float eps, Tensor& y);
void rope(ThreadPool& pool, Tensor& x, const int32_t* positions, const RopeParams& params);
void silu_mul(ThreadPool& pool, Tensor& gate, const Tensor& up);
void add(ThreadPool& pool, Tensor& y, const Tensor& x);
void add_bias(ThreadPool& pool, Tensor& y, const Tensor& bias);
void embed(ThreadPool& pool, const Tensor& table, const int32_t* ids, int64_t n, Tensor& out);
void attention_column_sums(ThreadPool& pool, const Tensor& q, const KvSegments& kv, float scale,
                           Tensor& out);  // press_ops_cpu.cpp
// The press ops whose cost grows with the cache, parallel over rows (score_ops_cpu.cpp); the
// others are the reference's loops.
void row_norms(ThreadPool& pool, const Tensor& x, Norm norm, Tensor& out);
void cosine_similarity(ThreadPool& pool, const Tensor& x, const Tensor& a, float eps, Tensor& out);
void normalize_rows(ThreadPool& pool, const Tensor& x, float eps, Tensor& out);
void softmax_rows(ThreadPool& pool, Tensor& x);
void avg_pool(ThreadPool& pool, const Tensor& x, int64_t cols, int64_t kernel, double scale,
              Tensor& out);
void top_k(ThreadPool& pool, const Tensor& x, int64_t k, Tensor& idx);
// Host memory for `backend` (memory_cpu.cpp): 64-byte aligned, zeroed.
Tensor alloc_host(Backend& backend, DType dtype, const std::array<int64_t, 4>& shape, int ndim);
// Checks that [offset, offset + bytes) lies inside t and that t is this backend's or host
// memory; `what` names the op in the error.
void check_range(const Backend& backend, const Tensor& t, size_t offset, size_t bytes,
                 const char* what);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads) : pool_(n_threads) {}
  Device device() const override { return Device::CPU; }
  const char* name() const override { return "cpu"; }
  int threads() const { return pool_.size(); }
  ThreadPool& pool() { return pool_; }

  Tensor alloc(DType dtype, const std::array<int64_t, 4>& shape, int ndim) override {
    return alloc_host(*this, dtype, shape, ndim);
  }
  void upload(const void* src, Tensor& dst, size_t dst_offset, size_t bytes) override;
  void download(const Tensor& src, size_t src_offset, void* dst, size_t bytes) override;
  void copy(const Tensor& src, size_t src_offset, Tensor& dst, size_t dst_offset,
            size_t bytes) override;
  // Every op has returned by the time its call does.
  void synchronize() override {}
  void copy_rows(const Tensor& src, const int64_t* src_rows, Tensor& dst, const int64_t* dst_rows,
                 int64_t n) override;
  using Backend::alloc;

  void matmul(const Tensor& x, const Tensor& w, Tensor& y) override { cpu::matmul(pool_, x, w, y); }
  std::vector<int32_t> matmul_argmax(const Tensor& x, const Tensor& w) override {
    return cpu::matmul_argmax(pool_, screen_tables_, x, w);
  }
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override {
    cpu::rms_norm(pool_, x, weight, eps, y);
  }
  void rope(Tensor& x, const int32_t* positions, const RopeParams& params) override {
    cpu::rope(pool_, x, positions, params);
  }
  void silu_mul(Tensor& gate, const Tensor& up) override { cpu::silu_mul(pool_, gate, up); }
  void add(Tensor& y, const Tensor& x) override { cpu::add(pool_, y, x); }
  void add_bias(Tensor& y, const Tensor& bias) override { cpu::add_bias(pool_, y, bias); }
  void embed(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out) override {
    cpu::embed(pool_, table, ids, n, out);
  }
  void attention(const Tensor& q, const KvSegments& kv, float scale, Tensor& out) override {
    cpu::attention(pool_, q, kv, scale, out);
  }
  void attention_batch(const std::vector<AttentionJob>& jobs, float scale) override {
    cpu::attention_many(pool_, jobs, scale);
  }
  void attention_column_sums(const Tensor& q, const KvSegments& kv, float scale,
                             Tensor& out) override {
    cpu::attention_column_sums(pool_, q, kv, scale, out);
  }

  void row_norms(const Tensor& x, Norm norm, Tensor& out) override {
    cpu::row_norms(pool_, x, norm, out);
  }
  void cosine_similarity(const Tensor& x, const Tensor& a, float eps, Tensor& out) override {
    cpu::cosine_similarity(pool_, x, a, eps, out);
  }
  void normalize_rows(const Tensor& x, float eps, Tensor& out) override {
    cpu::normalize_rows(pool_, x, eps, out);
  }
  void reduce(const Tensor& x, int axis, Reduce op, Tensor& out) override {
    ref::reduce(x, axis, op, out);
  }
  void affine(Tensor& x, float scale, float shift) override { ref::affine(x, scale, shift); }
  void mul(Tensor& y, const Tensor& x) override { ref::mul(y, x); }
  void div(Tensor& y, const Tensor& x) override { ref::div(y, x); }
  void softmax_rows(Tensor& x) override { cpu::softmax_rows(pool_, x); }
  void transpose(const Tensor& x, Tensor& out) override { ref::transpose(x, out); }
  void avg_pool(const Tensor& x, int64_t cols, int64_t kernel, double scale, Tensor& out) override {
    cpu::avg_pool(pool_, x, cols, kernel, scale, out);
  }
  void set_cols_to_max(Tensor& x, int64_t begin, int64_t end, float plus) override {
    ref::set_cols_to_max(x, begin, end, plus);
  }
  void scatter_value(Tensor& x, const Tensor& idx, float value) override {
    ref::scatter_value(x, idx, value);
  }
  void top_k(const Tensor& x, int64_t k, Tensor& idx) override { cpu::top_k(pool_, x, k, idx); }

 private:
  ThreadPool pool_;
  WeightCache screen_tables_;  // matmul_argmax's repacked Q8_0 tables, per weight
};

}  // namespace kvp::cpu
