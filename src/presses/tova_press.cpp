// tova: the last token's attention over the earlier tokens, averaged over all query heads;
// every kv head gets the same scores, and the last token is always kept
// (docs/kvpress-semantics.md 3.6).
#include <algorithm>
#include <cmath>

#include "presses/registry.h"
#include "presses/snapkv_press.h"

namespace kvp {

namespace {

class TovaPress : public ScorerPress {
 public:
  using ScorerPress::ScorerPress;
  std::string name() const override { return "tova"; }
  nlohmann::json params() const override { return nlohmann::json::object(); }

  std::string score_identity(const LayerView&) const override {
    return identity_from_params(*this);
  }

  Scores score(LayerView& view) override {
    const int64_t n = snapkv_rows(view, "tova");
    const int H = view.cache->n_segments();
    Scores s{H, n, std::vector<float>(static_cast<size_t>(H * n), 1.f)};
    if (n <= 1) return s;
    // The last query (window of 1) against every row; its own row is dropped afterwards.
    const std::vector<float> sums = window_attention_sums(view, 1);
    const double inv = 1.0 / static_cast<double>(view.queries->dim(1));
    float best = -INFINITY;
    for (int64_t j = 0; j < n - 1; ++j) {
      double acc = 0;
      for (int h = 0; h < H; ++h) acc += sums[static_cast<size_t>(h * n + j)];
      const float v = static_cast<float>(acc * inv);
      for (int h = 0; h < H; ++h) s.at(h, j) = v;
      best = std::max(best, v);
    }
    for (int h = 0; h < H; ++h) s.at(h, n - 1) = best + 1.f;
    return s;
  }
};

const PressRegistration registration(
    {"tova",
     "keep the keys the last token attends to most (averaged over all query heads)",
     {},
     [](double ratio, PressArgs&) { return std::make_unique<TovaPress>(ratio); }});

}  // namespace

}  // namespace kvp
