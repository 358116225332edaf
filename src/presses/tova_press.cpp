// tova: the last token's attention over the earlier tokens, averaged over all query heads;
// every kv head gets the same scores, and the last token is always kept
// (docs/kvpress-semantics.md 3.6).
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
    const int64_t n = uniform_length(view, "tova");
    const int H = view.cache->n_segments();
    Backend& be = *view.backend;
    if (n <= 1) return full_scores(be, H, n, 1.f);
    // The last query (window of 1) against every row, averaged over all query heads; its own
    // row is then ranked above the rest.
    const Tensor sums = window_attention_sums(view, 1);
    Tensor mean = be.alloc(DType::F32, {1, n});
    be.reduce(sums, 0, Reduce::Sum, mean);
    be.affine(mean, 1.f / static_cast<float>(view.queries->dim(1)), 0.f);
    be.set_cols_to_max(mean, n - 1, n, 1.f);
    Scores s = alloc_scores(be, H, n);  // every kv head gets the same scores
    for (int h = 0; h < H; ++h) be.copy(mean, 0, s.values, h * mean.nbytes(), mean.nbytes());
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
