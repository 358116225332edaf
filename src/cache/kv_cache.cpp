#include "cache/kv_cache.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <numeric>
#include <string>

#include "core/error.h"

namespace kvp {

std::atomic<uint64_t> KVCache::allocations_{0};

namespace {

// Rows begin, begin + 1, ..., begin + n - 1: a contiguous run as copy_rows's index list.
std::vector<int64_t> row_range(int64_t begin, int64_t n) {
  std::vector<int64_t> rows(static_cast<size_t>(n));
  std::iota(rows.begin(), rows.end(), begin);
  return rows;
}

}  // namespace

KVCache::KVCache(Backend& backend, int n_layers, int n_kv_heads, int head_dim, int64_t capacity,
                 DType dtype)
    : backend_(&backend),
      n_segments_(n_kv_heads),
      head_dim_(head_dim),
      dtype_(dtype),
      initial_capacity_(capacity),
      layers_(static_cast<size_t>(std::max(n_layers, 0))) {
  check(n_layers > 0 && n_kv_heads > 0 && head_dim > 0 && capacity >= 0, "invalid KV cache shape");
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16,
        "KV cache: rows are stored as f32, f16 or bf16, not " + dtype_name(dtype));
  for (auto& layer : layers_) {
    layer.offset.assign(static_cast<size_t>(n_segments_), 0);
    layer.len.assign(static_cast<size_t>(n_segments_), 0);
    layer.cap.assign(static_cast<size_t>(n_segments_), 0);
  }
}

size_t KVCache::bytes_for_rows(int64_t rows) const {
  return 2 * static_cast<size_t>(rows) * layers_.size() * static_cast<size_t>(n_segments_) *
         row_bytes(dtype_, head_dim_);
}

void KVCache::reallocate(Layer& layer, const Layer& source, const std::vector<int64_t>& new_cap,
                         const std::vector<std::vector<int32_t>>* keep) {
  int64_t total = 0;
  std::vector<int64_t> new_offset(new_cap.size());
  for (size_t s = 0; s < new_cap.size(); ++s) {
    new_offset[s] = total;
    total += new_cap[s];
  }
  Layer fresh;
  if (total > 0) {
    fresh.k = backend_->alloc(dtype_, {total, head_dim_});
    fresh.v = backend_->alloc(dtype_, {total, head_dim_});
  }
  std::unique_ptr<int32_t[]> pos(total > 0 ? new int32_t[static_cast<size_t>(total)] : nullptr);
  allocations_ += 2;
  // Every row that stays, segment by segment, as one op for the backend.
  std::vector<Backend::SegmentRows> moves(new_cap.size());
  int64_t moved = 0;
  for (size_t s = 0; s < new_cap.size(); ++s) {
    const int64_t n = keep ? static_cast<int64_t>((*keep)[s].size()) : layer.own_len(s);
    const int32_t* rows = keep ? (*keep)[s].data() : nullptr;
    moves[s] = {source.offset[s], new_offset[s], n, rows};
    const int32_t* src_pos = source.pos.get() + source.offset[s];
    int32_t* dst_pos = pos.get() + new_offset[s];
    for (int64_t i = 0; i < n; ++i) dst_pos[i] = src_pos[rows ? rows[i] : i];
    if (keep) layer.len[s] = n;
    moved += n;
  }
  if (moved > 0) backend_->gather_rows(source.k, source.v, moves, fresh.k, fresh.v);
  layer.k = std::move(fresh.k);
  layer.v = std::move(fresh.v);
  layer.pos = std::move(pos);
  layer.offset = std::move(new_offset);
  layer.cap = new_cap;
  layer.total_rows = total;
}

void KVCache::append(int layer_index, const Tensor& k, const Tensor& v, const int32_t* positions) {
  check(layer_index >= 0 && layer_index < n_layers(), "KV cache: layer out of range");
  check(k.ndim() == 3 && k.dim(1) == n_segments_ && k.dim(2) == head_dim_ &&
            v.shape() == k.shape() && v.ndim() == 3,
        "KV cache: append takes k and v of [T, " + std::to_string(n_segments_) + ", " +
            std::to_string(head_dim_) + "], got " + k.shape_string() + " and " + v.shape_string());
  const int64_t T = k.dim(0);
  Layer& layer = layers_[static_cast<size_t>(layer_index)];
  bool full = false;
  for (int s = 0; s < n_segments_; ++s)
    full = full || layer.own_len(static_cast<size_t>(s)) + T > layer.cap[s];
  if (full) {
    check(layer.prefix_len.empty(),
          "KV cache: a layer with a borrowed prefix cannot grow past its reserve");
    std::vector<int64_t> cap(layer.cap);
    for (int s = 0; s < n_segments_; ++s) {
      const int64_t grown =
          layer.total_rows == 0 ? initial_capacity_ : std::max<int64_t>(2 * cap[s], 16);
      cap[s] = std::max(layer.len[s] + T, grown);
    }
    reallocate(layer, layer, cap, nullptr);
  }
  // Row t * S + s of k (as [T * S, D]) goes to row own + t of segment s.
  std::vector<int64_t>& from = append_from_;
  std::vector<int64_t>& to = append_to_;
  from.clear();
  to.clear();
  for (int s = 0; s < n_segments_; ++s) {
    const int64_t own = layer.own_len(static_cast<size_t>(s));
    for (int64_t t = 0; t < T; ++t) {
      from.push_back(t * n_segments_ + s);
      to.push_back(layer.offset[s] + own + t);
    }
    std::memcpy(layer.pos.get() + layer.offset[s] + own, positions,
                static_cast<size_t>(T) * sizeof(int32_t));
    layer.len[s] += T;
  }
  const Tensor k_rows = k.reshaped({T * n_segments_, head_dim_});
  const Tensor v_rows = v.reshaped({T * n_segments_, head_dim_});
  backend_->copy_rows(k_rows, from.data(), layer.k, to.data(), static_cast<int64_t>(from.size()));
  backend_->copy_rows(v_rows, from.data(), layer.v, to.data(), static_cast<int64_t>(from.size()));
}

KvSegments KVCache::view(int layer_index) const {
  const Layer& layer = layers_.at(static_cast<size_t>(layer_index));
  KvSegments view;
  view.k = layer.k;
  view.v = layer.v;
  view.offset = layer.offset.data();
  view.len = layer.len.data();
  view.n_segments = n_segments_;
  view.head_dim = head_dim_;
  if (!layer.prefix_len.empty()) {
    const Layer& lent = lender_->layers_[static_cast<size_t>(layer_index)];
    view.prefix_k = lent.k;
    view.prefix_v = lent.v;
    view.prefix_offset = lent.offset.data();
    view.prefix_len = layer.prefix_len.data();
    view.prefix_rows = layer.prefix_row_ptrs.data();
  }
  return view;
}

const KVCache::Layer& KVCache::segment_rows(int layer, int segment, int64_t first,
                                            int64_t n) const {
  check(layer >= 0 && layer < n_layers() && segment >= 0 && segment < n_segments_,
        "KV cache: layer or segment out of range");
  const Layer& l = layers_[static_cast<size_t>(layer)];
  check(l.prefix_len.empty(), "KV cache: rows of a layer with a borrowed prefix are the lender's");
  check(first >= 0 && n >= 0 && first + n <= l.len[static_cast<size_t>(segment)],
        "KV cache: rows [" + std::to_string(first) + ", " + std::to_string(first + n) +
            ") of a segment of " + std::to_string(l.len[static_cast<size_t>(segment)]));
  return l;
}

Tensor KVCache::rows(int layer, int segment, Part part, int64_t first, int64_t n) const {
  const Layer& l = segment_rows(layer, segment, first, n);
  const Tensor& store = part == Part::K ? l.k : l.v;
  const int64_t begin = l.offset[static_cast<size_t>(segment)] + first;
  if (n == 0) return backend_->alloc(dtype_, {0, head_dim_});
  return store.row_slice(begin, begin + n, {n, head_dim_});
}

Tensor KVCache::rows_f32(int layer, int segment, Part part, int64_t first, int64_t n) const {
  const Tensor stored = rows(layer, segment, part, first, n);
  if (dtype_ == DType::F32) return stored;
  Tensor out = backend_->alloc(DType::F32, {n, head_dim_});
  if (n > 0) backend_->copy_rows(stored, row_range(0, n).data(), out, row_range(0, n).data(), n);
  return out;
}

void KVCache::write_rows(int layer, int segment, Part part, int64_t first, const Tensor& rows) {
  check(rows.ndim() == 2 && rows.dim(1) == head_dim_ && rows.dtype() == DType::F32,
        "KV cache: write_rows takes F32 rows [n, head_dim]");
  const int64_t n = rows.dim(0);
  segment_rows(layer, segment, first, n);
  Layer& l = layers_[static_cast<size_t>(layer)];
  Tensor& store = part == Part::K ? l.k : l.v;
  const int64_t begin = l.offset[static_cast<size_t>(segment)] + first;
  if (n == 0 || rows.same_data(store.row_slice(begin, begin + n, {n, head_dim_}))) return;
  const std::vector<int64_t> from = row_range(0, n), to = row_range(begin, n);
  backend_->copy_rows(rows, from.data(), store, to.data(), n);
}

const int32_t* KVCache::positions(int layer, int segment) const {
  const Layer& l = layers_.at(static_cast<size_t>(layer));
  check(l.prefix_len.empty(), "KV cache: positions of a borrowed prefix are not stored");
  return l.pos.get() + l.offset.at(static_cast<size_t>(segment));
}

int64_t KVCache::length(int layer, int segment) const {
  return layers_.at(static_cast<size_t>(layer)).len.at(static_cast<size_t>(segment));
}

std::vector<std::vector<int64_t>> KVCache::lengths() const {
  std::vector<std::vector<int64_t>> out;
  for (const auto& layer : layers_) out.push_back(layer.len);
  return out;
}

void KVCache::truncate(const std::vector<std::vector<int64_t>>& lengths) {
  check(lengths.size() == layers_.size(), "KV cache: truncate needs one length list per layer");
  for (size_t l = 0; l < layers_.size(); ++l) {
    check(lengths[l].size() == static_cast<size_t>(n_segments_),
          "KV cache: truncate needs one length per segment");
    for (int s = 0; s < n_segments_; ++s) {
      check(lengths[l][s] >= 0 && lengths[l][s] <= layers_[l].len[s],
            "KV cache: truncate can only shrink a segment");
      check(layers_[l].prefix_len.empty() || lengths[l][s] >= layers_[l].prefix_len[s],
            "KV cache: truncate cannot cut into a borrowed prefix");
      layers_[l].len[s] = lengths[l][s];
    }
  }
}

std::vector<int64_t> KVCache::kept_capacity(const Layer& source, const KeepPlan& keep,
                                            int64_t reserve) const {
  check(keep.size() == static_cast<size_t>(n_segments_),
        "KV cache: compact needs one row list per segment");
  check(reserve >= 0, "KV cache: negative reserve");
  std::vector<int64_t> cap(static_cast<size_t>(n_segments_));
  for (int s = 0; s < n_segments_; ++s) {
    const auto& rows = keep[s];
    std::vector<bool> seen(static_cast<size_t>(source.len[s]), false);
    for (int32_t r : rows) {
      if (r < 0 || r >= source.len[s] || seen[static_cast<size_t>(r)])  // message built on failure
        throw Error("KV cache: kept rows of segment " + std::to_string(s) +
                    " must be unique and in range");
      seen[static_cast<size_t>(r)] = true;
    }
    cap[s] = static_cast<int64_t>(rows.size()) + reserve;
  }
  return cap;
}

void KVCache::compact(int layer_index, const KeepPlan& keep, int64_t reserve) {
  check(layer_index >= 0 && layer_index < n_layers(), "KV cache: layer out of range");
  Layer& layer = layers_[static_cast<size_t>(layer_index)];
  check(layer.prefix_len.empty(), "KV cache: a layer with a borrowed prefix cannot be compacted");
  reallocate(layer, layer, kept_capacity(layer, keep, reserve), &keep);
}

const KVCache::Layer& KVCache::fill_source(int layer_index, const KVCache& source,
                                           const std::string& what) const {
  check(layer_index >= 0 && layer_index < n_layers() && layer_index < source.n_layers(),
        "KV cache: layer out of range");
  check(source.n_segments_ == n_segments_ && source.head_dim_ == head_dim_,
        "KV cache: " + what + " needs a cache of the same shape");
  check(layers_[static_cast<size_t>(layer_index)].total_rows == 0,
        "KV cache: " + what + " fills an empty layer only");
  const Layer& from = source.layers_[static_cast<size_t>(layer_index)];
  check(from.prefix_len.empty(),
        "KV cache: " + what + " cannot read a layer with a borrowed prefix");
  return from;
}

void KVCache::copy_kept(int layer_index, const KVCache& source, const KeepPlan& keep,
                        int64_t reserve) {
  const Layer& from = fill_source(layer_index, source, "copy_kept");
  Layer& layer = layers_[static_cast<size_t>(layer_index)];
  reallocate(layer, from, kept_capacity(from, keep, reserve), &keep);
}

void KVCache::borrow_kept(int layer_index, const KVCache& lender, const KeepPlan& keep,
                          int64_t reserve) {
  check(&lender != this && (lender_ == nullptr || lender_ == &lender),
        "KV cache: a cache borrows from one other cache");
  const Layer& from = fill_source(layer_index, lender, "borrow_kept");
  kept_capacity(from, keep, reserve);  // validates the rows
  Layer& layer = layers_[static_cast<size_t>(layer_index)];
  reallocate(layer, layer, std::vector<int64_t>(static_cast<size_t>(n_segments_), reserve),
             nullptr);
  layer.prefix_rows = keep;
  layer.prefix_len.resize(static_cast<size_t>(n_segments_));
  layer.prefix_row_ptrs.resize(static_cast<size_t>(n_segments_));
  for (size_t s = 0; s < static_cast<size_t>(n_segments_); ++s) {
    layer.prefix_len[s] = static_cast<int64_t>(keep[s].size());
    layer.prefix_row_ptrs[s] = layer.prefix_rows[s].data();
    layer.len[s] = layer.prefix_len[s];
  }
  lender_ = &lender;
}

size_t KVCache::allocated_bytes() const {
  size_t rows = 0;
  for (const auto& layer : layers_) rows += static_cast<size_t>(layer.total_rows);
  return 2 * rows * row_bytes(dtype_, head_dim_);
}

size_t KVCache::used_bytes() const {
  size_t rows = 0;
  for (const auto& layer : layers_) {
    for (size_t s = 0; s < layer.len.size(); ++s) rows += static_cast<size_t>(layer.own_len(s));
  }
  return 2 * rows * row_bytes(dtype_, head_dim_);
}

}  // namespace kvp
