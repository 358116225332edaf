#pragma once
// The KV cache: per layer, K and V each live in one buffer of rows of head_dim values, in
// the backend's memory (the cache allocates through the backend and moves rows with its
// copy_rows op; it never reads them). The rows of (batch b, kv head h) form segment
// s = b * n_kv_heads + h: rows [offset[s], offset[s] + len[s]) with capacity cap[s] >= len[s].
// Offsets, lengths, capacities and the rows' positions are host bookkeeping: the host
// decides them. Before compression all segments have one length (the dense layout);
// compression re-packs each segment to its own kept rows in a new, smaller buffer, which is
// where memory is freed.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace kvp {

// Rows each segment keeps, in the order they will sit in the cache.
using KeepPlan = std::vector<std::vector<int32_t>>;

class KVCache {
 public:
  // Batch of one; each segment gets room for `capacity` rows when its layer is first
  // written. Layers are allocated lazily so that, while a press compresses layer by layer
  // during the prefill, only one uncompressed layer exists at a time (that is what keeps
  // the process's peak memory down, not only its final size).
  // dtype: how rows are stored, F32, F16 or BF16 (attention computes in F32 either way).
  KVCache(Backend& backend, int n_layers, int n_kv_heads, int head_dim, int64_t capacity,
          DType dtype = DType::F32);
  // Bytes of K and V for `rows` rows in every segment of every layer.
  size_t bytes_for_rows(int64_t rows) const;

  int n_layers() const { return static_cast<int>(layers_.size()); }
  int n_segments() const { return n_segments_; }
  int head_dim() const { return head_dim_; }
  DType dtype() const { return dtype_; }

  // Appends T rows to every segment of a layer. k, v: [T, n_kv_heads, head_dim] F32 as the
  // projections produce them (the backend's or host memory). Grows a full layer by doubling
  // (amortised; never per token when capacity suffices).
  void append(int layer, const Tensor& k, const Tensor& v, const int32_t* positions);
  KvSegments view(int layer) const;
  enum class Part { K, V };
  // Rows [first, first + n) of one segment's K or V as stored ([n, head_dim] of dtype()): a
  // view in the backend's memory, for the press ops, which read any cache dtype.
  Tensor rows(int layer, int segment, Part part, int64_t first, int64_t n) const;
  // Rows [first, first + n) of one segment's K or V as an F32 tensor [n, head_dim] of the
  // backend: a view of the cache's rows when it stores F32, else a converted copy
  // (copy_rows), one segment's rows, made here in the open: for matmul, which takes F32.
  Tensor rows_f32(int layer, int segment, Part part, int64_t first, int64_t n) const;
  // Overwrites rows [first, first + rows.dim(0)) of a segment's K or V with F32 rows
  // [n, head_dim] (converted to the cache's type; a no-op when `rows` is rows_f32's view).
  void write_rows(int layer, int segment, Part part, int64_t first, const Tensor& rows);
  // The token position each row of a segment was written at (rows [0, length)).
  const int32_t* positions(int layer, int segment) const;
  int64_t length(int layer, int segment) const;
  // Kept rows of every segment of every layer: lengths[layer][segment].
  std::vector<std::vector<int64_t>> lengths() const;
  // Shrinks segments back to earlier lengths (for the next question): O(segments), no copy.
  void truncate(const std::vector<std::vector<int64_t>>& lengths);
  // Re-packs one layer: segment s keeps rows keep[s] (unique, < length), in that order, in a
  // new buffer with `reserve` free rows after each segment; the old buffer is freed. Row
  // order does not matter to attention (positions live in the rotated keys); presses keep
  // kvpress's top-k order so that composed presses see what kvpress's do.
  void compact(int layer, const KeepPlan& keep, int64_t reserve);
  // Fills this cache's (still empty) layer with rows keep[s] of each segment of the same
  // layer of `source`, with `reserve` free rows after each: compact() without first copying
  // every row in (the eval grid builds many compressed caches from one full one).
  void copy_kept(int layer, const KVCache& source, const KeepPlan& keep, int64_t reserve);
  // copy_kept() without the copy: segment s of this (still empty) layer starts with rows
  // keep[s] of `lender`'s layer, read in place through the view's borrowed prefix
  // (KvSegments), and only the `reserve` rows appended later are this cache's own. The eval
  // grid's cells answer this way, so that a decode step reads the shared full cache once
  // (it stays in cache) instead of every cell's copy from memory. The lender must outlive
  // this cache and keep those rows; one cache borrows from one lender. A borrowed layer
  // cannot be compacted, lent, truncated into its prefix, grown past its reserve, or asked
  // for positions.
  void borrow_kept(int layer, const KVCache& lender, const KeepPlan& keep, int64_t reserve);

  // Bytes of K and V buffers currently allocated (capacity, not length).
  size_t allocated_bytes() const;
  // Bytes of K and V rows currently in use (a borrowed prefix's rows are the lender's).
  size_t used_bytes() const;
  // Buffer allocations made by any cache since the process started: tests use it to prove
  // that decoding within the reserve allocates nothing.
  static uint64_t allocation_count() { return allocations_.load(); }

 private:
  struct Layer {
    Tensor k, v;                            // [total_rows, head_dim] in the backend's memory
    std::unique_ptr<int32_t[]> pos;         // 4 bytes per row beside 2 * head_dim floats
    std::vector<int64_t> offset, len, cap;  // len counts a borrowed prefix, cap does not
    int64_t total_rows = 0;
    // borrow_kept(): per segment, the lender's rows that come first (empty: none).
    std::vector<int64_t> prefix_len;
    KeepPlan prefix_rows;
    std::vector<const int32_t*> prefix_row_ptrs;
    int64_t own_len(size_t s) const { return len[s] - (prefix_len.empty() ? 0 : prefix_len[s]); }
  };
  // New buffers for `layer` with capacities new_cap, filled from `source` (the layer itself
  // or another cache's): rows keep[s] of each segment when given, else every row.
  void reallocate(Layer& layer, const Layer& source, const std::vector<int64_t>& new_cap,
                  const KeepPlan* keep);
  // The same layer of `source`, checked for filling this cache's empty layer from it
  // (copy_kept, borrow_kept; `what` names the caller in errors).
  const Layer& fill_source(int layer, const KVCache& source, const std::string& what) const;
  // Capacities after keeping `keep` (validated against source's lengths) plus the reserve.
  std::vector<int64_t> kept_capacity(const Layer& source, const KeepPlan& keep,
                                     int64_t reserve) const;

  // The layer's segment rows [first, first + n), checked (no borrowed prefix).
  const Layer& segment_rows(int layer, int segment, int64_t first, int64_t n) const;

  Backend* backend_;
  // The row lists of append(), kept between calls so that a decode step allocates nothing.
  std::vector<int64_t> append_from_, append_to_;
  int n_segments_;
  int head_dim_;
  DType dtype_;
  int64_t initial_capacity_;
  std::vector<Layer> layers_;
  const KVCache* lender_ = nullptr;
  static std::atomic<uint64_t> allocations_;
};

}  // namespace kvp
