// knorm: keys with a small L2 norm draw more attention, so keep the smallest norms.
#include <cmath>

#include "presses/registry.h"

namespace kvp {

namespace {

class KnormPress : public ScorerPress {
 public:
  using ScorerPress::ScorerPress;
  std::string name() const override { return "knorm"; }
  nlohmann::json params() const override { return nlohmann::json::object(); }

  std::string score_identity(const LayerView&) const override {
    return identity_from_params(*this);
  }

  Scores score(LayerView& view) override {
    const KVCache& cache = *view.cache;
    const int D = cache.head_dim();
    Scores s{cache.n_segments(), cache.length(view.layer, 0), {}};
    s.values.resize(static_cast<size_t>(s.n_heads * s.n_rows));
    for (int h = 0; h < s.n_heads; ++h) {
      const Tensor keys = cache.rows_f32(view.layer, h, KVCache::Part::K, 0, s.n_rows);
      for (int64_t j = 0; j < s.n_rows; ++j) {
        const float* k = keys.ptr<float>() + j * D;
        double sum = 0;
        for (int d = 0; d < D; ++d) sum += static_cast<double>(k[d]) * k[d];
        s.at(h, j) = -static_cast<float>(std::sqrt(sum));
      }
    }
    return s;
  }
};

}  // namespace

namespace {

const PressRegistration registration(
    {"knorm", "keep the keys with the smallest L2 norm", {}, [](double ratio, PressArgs&) {
       return std::make_unique<KnormPress>(ratio);
     }});

}  // namespace

}  // namespace kvp
