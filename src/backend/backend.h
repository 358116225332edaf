#pragma once
// The ops the model and the presses need, behind one interface so a CUDA backend can slot
// in without touching model or press code. Activations are F32 tensors on the backend's
// device; weights may be any DType. Every op has a scalar CPU reference
// (backend/cpu/reference.h) that each backend is tested against.
//
// A backend owns its memory: alloc() hands out tensors in it, and only the backend's ops
// (and upload/download/copy) touch their data. Ops may run asynchronously on a device;
// download() and synchronize() are the points where the host waits. backend/factory.h
// makes one by name (--device).
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace kvp {

// Rotary embedding parameters, resolved from the model config.
struct RopeParams {
  int head_dim = 0;       // rotated dims (the whole head here)
  float theta = 10000.f;  // base
  // llama3-style frequency scaling; factor == 0 means none.
  float llama3_factor = 0.f;
  float llama3_low_freq_factor = 1.f;
  float llama3_high_freq_factor = 4.f;
  int llama3_original_max_positions = 8192;
};

// One layer's K or V rows in the segmented cache: segment s (= batch * n_kv_heads + kv_head)
// holds rows [offset[s], offset[s] + len[s]) of `k` and `v` ([rows, head_dim] tensors of the
// backend, F32, F16 or BF16: the cache's storage type; attention computes in F32 whatever it
// is). Only backend ops read the rows; offsets and lengths are host bookkeeping.
//
// A segment may also start with a borrowed prefix: its first prefix_len[s] rows are rows
// prefix_rows[s][i] of segment s of another layer buffer (prefix_k / prefix_v, segment
// start prefix_offset[s]), and only its remaining len[s] - prefix_len[s] rows live at
// offset[s]. The eval grid's cells use it to attend over their kept rows of one shared full
// cache instead of each reading its own copy. Only attention reads a prefix; ops that take
// contiguous segments check has_prefix() and refuse.
struct KvSegments {
  Tensor k, v;
  const int64_t* offset = nullptr;
  const int64_t* len = nullptr;
  int n_segments = 0;
  int head_dim = 0;
  Tensor prefix_k = {}, prefix_v = {};
  const int64_t* prefix_offset = nullptr;
  const int64_t* prefix_len = nullptr;  // null: no segment has a prefix
  const int32_t* const* prefix_rows = nullptr;

  bool has_prefix() const { return prefix_len != nullptr; }
  DType dtype() const { return k.dtype(); }
  size_t row_bytes() const { return kvp::row_bytes(dtype(), head_dim); }
  // Row j (< len[s]) of segment s, wherever it lives: head_dim values of `dtype`.
  const void* k_row(int64_t s, int64_t j) const { return row(k, prefix_k, s, j); }
  const void* v_row(int64_t s, int64_t j) const { return row(v, prefix_v, s, j); }
  // Row `first` of segment s and the ones after it (no borrowed prefix).
  const void* k_rows(int64_t s, int64_t first = 0) const { return at(k, offset[s] + first); }
  const void* v_rows(int64_t s, int64_t first = 0) const { return at(v, offset[s] + first); }

 private:
  const void* at(const Tensor& base, int64_t row) const {
    return static_cast<const uint8_t*>(base.data()) + static_cast<size_t>(row) * row_bytes();
  }
  const void* row(const Tensor& own, const Tensor& borrowed, int64_t s, int64_t j) const {
    if (prefix_len && j < prefix_len[s]) return at(borrowed, prefix_offset[s] + prefix_rows[s][j]);
    return at(own, offset[s] + j - (prefix_len ? prefix_len[s] : 0));
  }
};

enum class Norm { L1, L2 };
enum class Reduce { Sum, Mean, Max };

// One attention call of a batch: queries q [T, Hq, D] over their own cache segments.
struct AttentionJob {
  const Tensor* q = nullptr;
  KvSegments kv;
  Tensor* out = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // "cpu", "cuda": what --device names.
  virtual const char* name() const = 0;

  // Memory. A zeroed tensor in this backend's memory (Tensor::backend() is this backend),
  // freed when its last handle goes.
  virtual Tensor alloc(DType dtype, const std::array<int64_t, 4>& shape, int ndim) = 0;
  Tensor alloc(DType dtype, std::initializer_list<int64_t> shape) {
    return alloc(dtype, Tensor::shape_array(shape), static_cast<int>(shape.size()));
  }
  // Byte ranges between host memory and a tensor of this backend, and between two of its
  // tensors (src and dst may be the same tensor if the ranges do not overlap). download()
  // returns once the bytes are on the host.
  virtual void upload(const void* src, Tensor& dst, size_t dst_offset, size_t bytes) = 0;
  virtual void download(const Tensor& src, size_t src_offset, void* dst, size_t bytes) = 0;
  virtual void copy(const Tensor& src, size_t src_offset, Tensor& dst, size_t dst_offset,
                    size_t bytes) = 0;
  // Returns once every op issued so far has finished.
  virtual void synchronize() = 0;
  // The tensor this backend's matmul/embed/rms_norm read for a model weight given as host
  // memory (a mapped file's view): the CPU reads the view itself, a device copies it into its
  // memory once, possibly widened or dequantised (the CUDA backend stores matrices as BF16).
  // Called once per weight when a model is made, never in a forward pass.
  virtual Tensor load_weight(const Tensor& host) { return host; }
  // Row moves: for i < n, row dst_rows[i] of dst (viewed as [rows, cols]) = row src_rows[i]
  // of src, converted when the dtypes differ (F32, F16, BF16; equal row lengths). The index
  // lists are host arrays; every index is checked. The KV cache's append, growth and
  // compaction are this one op, so a backend moves cache rows without the host.
  virtual void copy_rows(const Tensor& src, const int64_t* src_rows, Tensor& dst,
                         const int64_t* dst_rows, int64_t n) = 0;
  // A re-pack of K and V in one op (the cache's compaction and growth): for each segment
  // and i < count, row dst_offset + i of k_dst and v_dst = row src_offset + rows[i] of k_src
  // and v_src (rows null: src_offset + i). Rows are checked as copy_rows checks them. The
  // default expands the lists for copy_rows; a device can move the short int32 lists
  // instead (a compaction moves hundreds of thousands of rows).
  struct SegmentRows {
    int64_t src_offset = 0, dst_offset = 0, count = 0;
    const int32_t* rows = nullptr;
  };
  virtual void gather_rows(const Tensor& k_src, const Tensor& v_src,
                           std::span<const SegmentRows> segs, Tensor& k_dst, Tensor& v_dst) {
    int64_t total = 0;
    for (const SegmentRows& g : segs) {
      check(g.count >= 0, "gather_rows: a negative row count");
      total += g.count;
    }
    std::vector<int64_t> from, to;
    from.reserve(static_cast<size_t>(total));
    to.reserve(static_cast<size_t>(total));
    for (const SegmentRows& g : segs)
      for (int64_t i = 0; i < g.count; ++i) {
        from.push_back(g.src_offset + (g.rows ? g.rows[i] : i));
        to.push_back(g.dst_offset + i);
      }
    const auto n = static_cast<int64_t>(from.size());
    copy_rows(k_src, from.data(), k_dst, to.data(), n);
    copy_rows(v_src, from.data(), v_dst, to.data(), n);
  }

  // y[t, o] = sum_i x[t, i] * w[o, i]. x: [T, in] F32; w: [out, in] any DType; y: [T, out] F32.
  virtual void matmul(const Tensor& x, const Tensor& w, Tensor& y) = 0;
  // matmul(x, *o.w, *o.y) for each of several matrices that read the same x (a layer's q, k
  // and v; its gate and up): a backend may stream them in one pass. The default runs them in
  // turn.
  struct MatmulOut {
    const Tensor* w;
    Tensor* y;
  };
  virtual void matmul_multi(const Tensor& x, std::span<const MatmulOut> outs) {
    for (const MatmulOut& o : outs) matmul(x, *o.w, *o.y);
  }
  // y += x w^T, a projection and the residual add after it: a backend may add in the
  // product's epilogue. The default computes the product into scratch (the shape of y) and
  // adds it, which is also the arithmetic any override must give (y + the product).
  virtual void matmul_add(const Tensor& x, const Tensor& w, Tensor& y, Tensor& scratch) {
    matmul(x, w, scratch);
    add(y, scratch);
  }
  // Per row t, argmax_o y[t, o] of matmul(x, w) (the first index on ties): the token greedy
  // decoding takes. It must pick exactly what argmax over this backend's matmul picks; a
  // backend may get there without computing every entry.
  virtual std::vector<int32_t> matmul_argmax(const Tensor& x, const Tensor& w) = 0;
  // y[t, :] = x[t, :] / rms(x[t, :]) * weight, rows of length weight.numel(); in place allowed.
  virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) = 0;
  // Rotates x: [T, heads, head_dim] in place, Hugging Face (rotate_half) layout, positions[T].
  virtual void rope(Tensor& x, const int32_t* positions, const RopeParams& params) = 0;
  // gate = silu(gate) * up, elementwise.
  virtual void silu_mul(Tensor& gate, const Tensor& up) = 0;
  // y += x, elementwise.
  virtual void add(Tensor& y, const Tensor& x) = 0;
  // y[t, :] += bias for every row t.
  virtual void add_bias(Tensor& y, const Tensor& bias) = 0;
  // out[t, :] = table[ids[t], :] as F32. table: [vocab, dim] any DType.
  virtual void embed(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out) = 0;
  // Causal attention of T new queries over the segmented cache of batch row 0, whose last T
  // rows per segment are the new tokens: query t sees rows [0, len - T + t]. q: [T, Hq, D];
  // out: [T, Hq, D]. Query head h reads kv segment h / (Hq / n_segments) (GQA, no repeat).
  virtual void attention(const Tensor& q, const KvSegments& kv, float scale, Tensor& out) = 0;

  // attention() for each job, possibly in one launch (a batched decode step has one small
  // job per cache). The default runs them one by one.
  virtual void attention_batch(const std::vector<AttentionJob>& jobs, float scale) {
    for (const AttentionJob& j : jobs) attention(*j.q, j.kv, scale, *j.out);
  }

  // ---- Press ops: what presses score and select with (kvpress's torch programs). Scores
  // are F32 tensors; "rows" inputs may be cache rows (F32, F16 or BF16, read as F32). Sums
  // accumulate in double on the CPU (a device may use f32; the op tests state the bound).
  // Every op has a reference in backend/cpu/reference.h.

  // out[r] = ||x[r, :]||. x: [R, C] rows; out: R F32 values (any shape).
  virtual void row_norms(const Tensor& x, Norm norm, Tensor& out) = 0;
  // out[r] = (x[r] . a) / (max(||x[r]||, eps) * max(||a||, eps)) (torch's cosine_similarity).
  // x: [R, C] rows; a: C F32 values; out: R F32 values.
  virtual void cosine_similarity(const Tensor& x, const Tensor& a, float eps, Tensor& out) = 0;
  // out[r, :] = x[r, :] / max(||x[r, :]||, eps) (F.normalize). x: [R, C] rows; out F32.
  virtual void normalize_rows(const Tensor& x, float eps, Tensor& out) = 0;
  // x viewed as [R, C] F32. axis 0: out[c] = op over r of x[r, c] (C values); axis 1:
  // out[r] = op over c (R values). Max ignores NaN only if every entry is NaN (then NaN).
  virtual void reduce(const Tensor& x, int axis, Reduce op, Tensor& out) = 0;
  // x = x * scale + shift, elementwise, F32.
  virtual void affine(Tensor& x, float scale, float shift) = 0;
  // y *= x and y /= x elementwise, F32. x has y's size, or is one row of y (every row of y
  // takes it), or one value.
  virtual void mul(Tensor& y, const Tensor& x) = 0;
  virtual void div(Tensor& y, const Tensor& x) = 0;
  // Softmax of each row of x ([R, C] F32) in place, in f32, after subtracting its maximum.
  virtual void softmax_rows(Tensor& x) = 0;
  // out = x^T. x: [R, C] F32; out: [C, R] F32.
  virtual void transpose(const Tensor& x, Tensor& out) = 0;
  // For j < cols: out[r, j] = scale * (sum of x[r, i] for |i - j| <= kernel / 2, 0 <= i < cols)
  // / kernel (avg_pool1d, stride 1, zero padding counted), summed in double. x, out: [R, C]
  // F32 with C >= cols; out's columns from cols on are left alone. kernel: odd, >= 1.
  virtual void avg_pool(const Tensor& x, int64_t cols, int64_t kernel, double scale,
                        Tensor& out) = 0;
  // Sets columns [begin, end) of every row of x ([R, C] F32) to plus + the maximum of every
  // other entry of x (the rows a press always keeps, ranked above all others).
  virtual void set_cols_to_max(Tensor& x, int64_t begin, int64_t end, float plus) = 0;
  // x[r, idx[r, i]] = value for every i. x: [R, C] F32; idx: [R, k] I32, each index < C.
  virtual void scatter_value(Tensor& x, const Tensor& idx, float value) = 0;
  // idx[r, :] = the k largest entries' indices of row r of x ([R, C] F32), in descending
  // order; ties go to the lower index, -0 ties with +0 and NaN ranks last. idx: [R, k] I32,
  // k <= C.
  virtual void top_k(const Tensor& x, int64_t k, Tensor& idx) = 0;

  // For presses: the causal attention probabilities of q [Tq, Hq, D] over the segments,
  // summed over the queries and over the Hq / n_segments query heads of each segment.
  // Queries sit on the last Tq rows of every segment as in attention(): query t sees rows
  // [0, len - Tq + t] and its softmax (f32) runs over those rows only.
  // out: [n_segments, L] F32 with L >= every len; out[s, j] = sum over t and the heads of
  // segment s of p(t, head, j); entries at j >= len[s] are 0.
  virtual void attention_column_sums(const Tensor& q, const KvSegments& kv, float scale,
                                     Tensor& out) = 0;
};

}  // namespace kvp
