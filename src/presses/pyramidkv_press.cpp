// pyramidkv: SnapKV's scores with a per-layer budget that shrinks linearly with depth
// (docs/kvpress-semantics.md 3.9). plan_from_scores() keeps the layer's budget; wrappers
// that call score() and pick their own count (as kvpress's do) get plain SnapKV scores.
//
// kvpress.cpp extension, as for snapkv: when the context is not longer than window_size
// (kvpress asserts), the effective window max(1, min(window_size, n_kept / 2)) replaces
// window_size in the scores and in the budget formula.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "presses/registry.h"
#include "presses/snapkv_press.h"

namespace kvp {

namespace {

// kvpress's get_layer_budget, in double precision; Python's round (half to even) is
// nearbyint in the default rounding mode.
int64_t pyramid_budget(int64_t T, double ratio, int64_t window, int64_t beta, int layer,
                       int n_layers) {
  const double q_len = static_cast<double>(T), W = static_cast<double>(window);
  const double cap = W + q_len * (1.0 - ratio);
  double min_num = (cap - W) / static_cast<double>(beta);
  double max_num = (cap - W) * 2 - min_num;
  if (max_num >= q_len - W) {
    max_num = q_len - W;
    min_num = (cap - W) * 2 - max_num;
  }
  if (!(q_len >= max_num && max_num >= min_num && min_num >= W))
    return std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(q_len * (1.0 - ratio))));
  const double steps = n_layers > 1 ? (max_num - min_num) / static_cast<double>(n_layers - 1) : 0.0;
  return static_cast<int64_t>(std::nearbyint(max_num - static_cast<double>(layer) * steps));
}

class PyramidKvPress : public ScorerPress {
 public:
  PyramidKvPress(double ratio, int64_t window_size, int64_t kernel_size, int64_t beta)
      : ScorerPress(ratio), window_(window_size), kernel_(kernel_size), beta_(beta) {
    check(window_size >= 1, "pyramidkv: window_size must be >= 1");
    check(kernel_size >= 1 && kernel_size % 2 == 1, "pyramidkv: kernel_size must be odd and >= 1");
    check(beta >= 1, "pyramidkv: beta must be >= 1");
  }
  std::string name() const override { return "pyramidkv"; }
  nlohmann::json params() const override {
    return {{"window_size", window_}, {"kernel_size", kernel_}, {"beta", beta_}};
  }

  Scores score(LayerView& view) override {
    const int64_t n = uniform_length(view, "pyramidkv");
    return snapkv_scores(view, snapkv_window(n, view.n_tokens, window_, n_kept(n, ratio_)),
                         kernel_);
  }

  // The layer's own budget instead of n_kept (ScorerPress::plan scores, then calls this).
  KeepPlan plan_from_scores(LayerView& view, const Scores& scores) override {
    if (ratio_ == 0) return keep_everything(view);  // untouched, nothing scored
    return top_k_plan(scores.values, ranked_prefix(view));
  }

  int64_t ranked_prefix(const LayerView& view) const override {
    if (ratio_ == 0) return -1;
    const int64_t n = uniform_length(view, "pyramidkv");
    const int64_t w = snapkv_window(n, view.n_tokens, window_, n_kept(n, ratio_));
    return std::min(n, pyramid_budget(n, ratio_, w, beta_, view.layer, view.config->n_layers));
  }

 private:
  int64_t window_, kernel_, beta_;
};

const PressRegistration registration(
    {"pyramidkv",
     "SnapKV scores with a per-layer budget that shrinks linearly with depth",
     {{"window_size", "int", "64", "as snapkv; also sets the budget schedule"},
      {"kernel_size", "int", "5", "as snapkv"},
      {"beta", "int", "20", "pyramid steepness: the last layer gets about 1/beta of the average"}},
     [](double ratio, PressArgs& a) {
       const int64_t w = a.get_int("window_size", 64, 1, kMaxSnapKvWindow);
       const int64_t k = a.get_int("kernel_size", 5, 1, kMaxSnapKvKernel);
       const int64_t b = a.get_int("beta", 20);
       return std::make_unique<PyramidKvPress>(ratio, w, k, b);
     }});

}  // namespace

}  // namespace kvp
