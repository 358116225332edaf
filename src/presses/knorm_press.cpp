// knorm: keys with a small L2 norm draw more attention, so keep the smallest norms.
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

  // -||k_j|| per head: one row_norms op per kv head over its stored rows.
  Scores score(LayerView& view) override {
    const KVCache& cache = *view.cache;
    Backend& be = *view.backend;
    Scores s = alloc_scores(be, cache.n_segments(), cache.length(view.layer, 0));
    for (int h = 0; h < s.n_heads; ++h) {
      Tensor norms = s.head(h);
      be.row_norms(cache.rows(view.layer, h, KVCache::Part::K, 0, s.n_rows), Norm::L2, norms);
    }
    be.affine(s.values, -1.f, 0.f);
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
