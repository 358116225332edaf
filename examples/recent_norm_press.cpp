// recent_norm: an example of a custom press in one function (see docs/writing-a-press.md).
// A made-up score that mixes two cheap signals: recent tokens matter more, and keys with a
// small L2 norm tend to draw more attention (the knorm observation). For row j of a head,
//   score_j = recency * position_j / (T - 1) - ||k_j|| / mean_i ||k_i||
// Higher = keep. recency = 0 gives knorm's ranking; a large recency gives a recent window.
#include <cmath>

#include "presses/registry.h"

namespace kvp {
namespace {

class RecentNormPress : public ScorerPress {
 public:
  RecentNormPress(double ratio, double recency) : ScorerPress(ratio), recency_(recency) {}
  std::string name() const override { return "recent_norm"; }
  nlohmann::json params() const override { return {{"recency", recency_}}; }

  Scores score(LayerView& view) override {
    const KVCache& cache = *view.cache;
    const int64_t n = cache.length(view.layer, 0);
    const int D = cache.head_dim();
    Scores s{cache.n_segments(), n,
             std::vector<float>(static_cast<size_t>(cache.n_segments() * n))};
    const double last = std::max<double>(1, static_cast<double>(view.n_tokens - 1));
    for (int h = 0; h < s.n_heads; ++h) {
      const int32_t* pos = view.cache->positions(view.layer, h);  // rows may be in any order
      const Tensor keys = cache.rows_f32(view.layer, h, KVCache::Part::K, 0, n);
      std::vector<double> norm(static_cast<size_t>(s.n_rows));
      double mean = 0;
      for (int64_t j = 0; j < s.n_rows; ++j) {
        const float* k = keys.ptr<float>() + j * D;
        double sq = 0;
        for (int d = 0; d < D; ++d) sq += static_cast<double>(k[d]) * k[d];
        mean += (norm[static_cast<size_t>(j)] = std::sqrt(sq)) / static_cast<double>(s.n_rows);
      }
      for (int64_t j = 0; j < s.n_rows; ++j)
        s.at(h, j) = static_cast<float>(recency_ * pos[j] / last -
                                        norm[static_cast<size_t>(j)] / std::max(mean, 1e-12));
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
