// keydiff: keep the keys least similar (cosine) to the mean of the head's normalised keys
// (docs/kvpress-semantics.md 3.8).
#include <algorithm>
#include <cmath>

#include "presses/registry.h"
#include "presses/snapkv_press.h"

namespace kvp {

namespace {

class KeyDiffPress : public ScorerPress {
 public:
  using ScorerPress::ScorerPress;
  std::string name() const override { return "keydiff"; }
  nlohmann::json params() const override { return nlohmann::json::object(); }

  std::string score_identity(const LayerView&) const override {
    return identity_from_params(*this);
  }

  Scores score(LayerView& view) override {
    const int64_t n = snapkv_rows(view, "keydiff");
    const KVCache& cache = *view.cache;
    const int D = cache.head_dim();
    Scores s{cache.n_segments(), n,
             std::vector<float>(static_cast<size_t>(cache.n_segments() * n))};
    std::vector<double> anchor(static_cast<size_t>(D)), norm(static_cast<size_t>(n));
    for (int h = 0; h < s.n_heads; ++h) {
      const Tensor keys = cache.rows_f32(view.layer, h, KVCache::Part::K, 0, n);
      const float* K = keys.ptr<float>();
      // anchor = mean_j k_j / max(||k_j||, 1e-12)   (F.normalize, then mean)
      std::fill(anchor.begin(), anchor.end(), 0.0);
      for (int64_t j = 0; j < n; ++j) {
        double sq = 0;
        for (int d = 0; d < D; ++d) sq += static_cast<double>(K[j * D + d]) * K[j * D + d];
        norm[static_cast<size_t>(j)] = std::sqrt(sq);
        const double inv = 1.0 / std::max(norm[static_cast<size_t>(j)], 1e-12);
        for (int d = 0; d < D; ++d) anchor[static_cast<size_t>(d)] += K[j * D + d] * inv;
      }
      double anorm = 0;
      for (int d = 0; d < D; ++d) {
        anchor[static_cast<size_t>(d)] /= static_cast<double>(n);
        anorm += anchor[static_cast<size_t>(d)] * anchor[static_cast<size_t>(d)];
      }
      anorm = std::max(std::sqrt(anorm), 1e-8);
      // score = -cosine_similarity(k_j, anchor), each norm clamped at 1e-8 separately
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += K[j * D + d] * anchor[static_cast<size_t>(d)];
        s.at(h, j) =
            static_cast<float>(-dot / (std::max(norm[static_cast<size_t>(j)], 1e-8) * anorm));
      }
    }
    return s;
  }
};

const PressRegistration registration(
    {"keydiff",
     "keep the keys least similar to the head's mean (normalised) key",
     {},
     [](double ratio, PressArgs&) { return std::make_unique<KeyDiffPress>(ratio); }});

}  // namespace

}  // namespace kvp
