// recent_norm: an example of a custom press in one function (see docs/writing-a-press.md).
// A made-up score that mixes two cheap signals: recent tokens matter more, and keys with a
// small L2 norm tend to draw more attention (the knorm observation). For row j of a head,
//   score_j = recency * position_j / (T - 1) - ||k_j|| / mean_i ||k_i||
// Higher = keep. recency = 0 gives knorm's ranking; a large recency gives a recent window.
#include <algorithm>

#include "presses/registry.h"

namespace kvp {
namespace {

class RecentNormPress : public ScorerPress {
 public:
  RecentNormPress(double ratio, double recency) : ScorerPress(ratio), recency_(recency) {}
  std::string name() const override { return "recent_norm"; }
  nlohmann::json params() const override { return {{"recency", recency_}}; }

  // Backend ops on the keys (a norm per row, their mean, a division); the recency term comes
  // from the rows' positions, host bookkeeping, and is uploaded.
  Scores score(LayerView& view) override {
    const KVCache& cache = *view.cache;
    Backend& be = *view.backend;
    const int64_t n = cache.length(view.layer, 0);
    Scores s = alloc_scores(be, cache.n_segments(), n);
    const double last = std::max<double>(1, static_cast<double>(view.n_tokens - 1));
    Tensor mean = be.alloc(DType::F32, {1});
    std::vector<float> recent(static_cast<size_t>(n));
    for (int h = 0; h < s.n_heads; ++h) {
      Tensor row = s.head(h);  // ||k_j|| / mean_i ||k_i||
      be.row_norms(cache.rows(view.layer, h, KVCache::Part::K, 0, n), Norm::L2, row);
      be.reduce(row, 1, Reduce::Mean, mean);
      be.div(row, mean);
      be.affine(row, -1.f, 0.f);
      const int32_t* pos = cache.positions(view.layer, h);  // rows may be in any order
      for (int64_t j = 0; j < n; ++j)
        recent[static_cast<size_t>(j)] = static_cast<float>(recency_ * pos[j] / last);
      be.add(row, upload_f32(be, recent).reshaped({1, n}));
    }
    return s;
  }

 private:
  double recency_;
};

const PressRegistration registration({"recent_norm",
                                      "example press: prefer recent tokens and small key norms",
                                      {{"recency", "float", "1.0", "weight of the recency term"}},
                                      [](double ratio, PressArgs& a) {
                                        return std::make_unique<RecentNormPress>(
                                            ratio, a.get_double("recency", 1.0));
                                      }});

}  // namespace
}  // namespace kvp
