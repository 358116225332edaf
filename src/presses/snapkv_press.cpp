// snapkv: the last window_size tokens' queries vote for the earlier keys they attend to; the
// votes are smoothed along the sequence and the window itself is always kept
// (docs/kvpress-semantics.md 3.4).
//
// kvpress.cpp extension: kvpress asserts T > window_size. Here a context of T <= window_size
// rows uses an effective window of max(1, min(window_size, n_kept / 2)) (see snapkv_window),
// so `kvpress generate --press snapkv` works on short prompts; longer contexts behave
// exactly as kvpress.
#include "presses/snapkv_press.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "presses/registry.h"

namespace kvp {

int64_t snapkv_window(int64_t n_rows, int64_t n_queries, int64_t window_size, int64_t n_kept) {
  int64_t w = window_size;
  if (n_rows <= window_size) w = std::max<int64_t>(1, std::min<int64_t>(window_size, n_kept / 2));
  return std::max<int64_t>(1, std::min(w, n_queries));
}

Tensor window_attention_sums(LayerView& view, int64_t window) {
  const KvSegments kv = view.cache->view(view.layer);
  const int64_t n = kv.len[0];
  const Tensor& q = *view.queries;
  const int64_t Tq = view.n_tokens, Hq = q.dim(1), D = q.dim(2);
  check(q.ndim() == 3 && q.dim(0) >= Tq, "press: the layer's queries must be [T, Hq, head_dim]");
  check(window >= 1 && window <= Tq && window <= n,
        "press: the query window must fit in the context and the cache");
  const Tensor wq = q.row_slice((Tq - window) * Hq, Tq * Hq, {window, Hq, D});
  Tensor sums = view.backend->alloc(DType::F32, {kv.n_segments, n});
  view.backend->attention_column_sums(wq, kv, 1.0f / std::sqrt(static_cast<float>(D)), sums);
  return sums;
}

Scores snapkv_scores(LayerView& view, int64_t window, int64_t kernel_size) {
  const int H = view.cache->n_segments();
  const int64_t n = view.cache->length(view.layer, 0);
  Backend& be = *view.backend;
  const int64_t m = n - window;  // rows that compete; the window is kept
  if (m <= 0) return full_scores(be, H, n, 1.f);
  Scores s{H, n, window_attention_sums(view, window)};
  const int64_t G = view.queries->dim(1) / H;
  // Mean over the window's queries and the group's heads, pooled along the sequence.
  be.avg_pool(s.values, m, kernel_size, 1.0 / static_cast<double>(window * G), s.values);
  be.set_cols_to_max(s.values, m, n, 1.f);
  return s;
}

namespace {

class SnapKvPress : public ScorerPress {
 public:
  SnapKvPress(double ratio, int64_t window_size, int64_t kernel_size)
      : ScorerPress(ratio), window_(window_size), kernel_(kernel_size) {
    check(window_size >= 1, "snapkv: window_size must be >= 1");
    check(kernel_size >= 1 && kernel_size % 2 == 1, "snapkv: kernel_size must be odd and >= 1");
  }
  std::string name() const override { return "snapkv"; }
  nlohmann::json params() const override {
    return {{"window_size", window_}, {"kernel_size", kernel_}};
  }

  // The effective window depends on the ratio for contexts shorter than window_size.
  std::string score_identity(const LayerView& view) const override {
    const int64_t n = view.cache->length(view.layer, 0);
    return identity_from_params(*this) +
           "window=" + std::to_string(snapkv_window(n, view.n_tokens, window_, n_kept(n, ratio_)));
  }

  Scores score(LayerView& view) override {
    const int64_t n = uniform_length(view, "snapkv");
    return snapkv_scores(view, snapkv_window(n, view.n_tokens, window_, n_kept(n, ratio_)),
                         kernel_);
  }

 private:
  int64_t window_, kernel_;
};

const PressRegistration registration(
    {"snapkv",
     "keep the keys the last window_size queries attend to most (pooled), and the window",
     {{"window_size", "int", "64",
       "recent tokens whose queries score the rest (contexts not longer than this use "
       "max(1, min(window_size, n_kept / 2)))"},
      {"kernel_size", "int", "5", "average-pooling kernel along the sequence (odd)"}},
     [](double ratio, PressArgs& a) {
       const int64_t w = a.get_int("window_size", 64, 1, kMaxSnapKvWindow);
       const int64_t k = a.get_int("kernel_size", 5, 1, kMaxSnapKvKernel);
       return std::make_unique<SnapKvPress>(ratio, w, k);
     }});

}  // namespace

}  // namespace kvp
