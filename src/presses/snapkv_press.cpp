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

int64_t snapkv_window(int64_t n_rows, int64_t n_queries, int64_t window_size, double ratio) {
  int64_t w = window_size;
  if (n_rows <= window_size)
    w = std::max<int64_t>(1, std::min<int64_t>(window_size, n_kept_for(n_rows, ratio) / 2));
  return std::max<int64_t>(1, std::min(w, n_queries));
}

int64_t snapkv_rows(const LayerView& view, const char* press) {
  const int H = view.cache->n_segments();
  const int64_t n = view.cache->length(view.layer, 0);
  for (int h = 1; h < H; ++h)
    check(view.cache->length(view.layer, h) == n,
          std::string(press) + ": every kv head of a layer must hold the same rows");
  return n;
}

std::vector<float> window_attention_sums(LayerView& view, int64_t window) {
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
  return std::vector<float>(sums.ptr<float>(), sums.ptr<float>() + sums.numel());
}

Scores snapkv_scores(LayerView& view, int64_t window, int64_t kernel_size) {
  const int H = view.cache->n_segments();
  const int64_t n = view.cache->length(view.layer, 0);
  Scores s{H, n, std::vector<float>(static_cast<size_t>(H * n), 1.f)};
  const int64_t m = n - window;  // rows that compete; the window is kept
  if (m <= 0) return s;
  const std::vector<float> sums = window_attention_sums(view, window);
  const int64_t G = view.queries->dim(1) / H;
  const double inv = 1.0 / static_cast<double>(window * G);
  const int64_t pad = kernel_size / 2;
  std::vector<double> a(static_cast<size_t>(m));
  float best = -INFINITY;
  for (int h = 0; h < H; ++h) {
    for (int64_t j = 0; j < m; ++j)
      a[static_cast<size_t>(j)] = sums[static_cast<size_t>(h * n + j)] * inv;
    // avg_pool1d(kernel, stride 1, padding kernel / 2), count_include_pad: always / kernel.
    for (int64_t j = 0; j < m; ++j) {
      double acc = 0;
      for (int64_t i = std::max<int64_t>(0, j - pad); i <= std::min(m - 1, j + pad); ++i)
        acc += a[static_cast<size_t>(i)];
      const float v = static_cast<float>(acc / static_cast<double>(kernel_size));
      s.at(h, j) = v;
      best = std::max(best, v);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int64_t j = m; j < n; ++j) s.at(h, j) = best + 1.f;
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
           "window=" + std::to_string(snapkv_window(n, view.n_tokens, window_, ratio_));
  }

  Scores score(LayerView& view) override {
    const int64_t n = snapkv_rows(view, "snapkv");
    return snapkv_scores(view, snapkv_window(n, view.n_tokens, window_, ratio_), kernel_);
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
