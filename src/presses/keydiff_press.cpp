// keydiff: keep the keys least similar (cosine) to the mean of the head's normalised keys
// (docs/kvpress-semantics.md 3.8).
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

  // -cos(k_j, anchor), anchor = the mean of the head's normalised keys (F.normalize clamps
  // each norm at 1e-12; cosine_similarity clamps both at 1e-8, as torch's).
  Scores score(LayerView& view) override {
    const int64_t n = uniform_length(view, "keydiff");
    const KVCache& cache = *view.cache;
    Backend& be = *view.backend;
    Scores s = alloc_scores(be, cache.n_segments(), n);
    Tensor normed = be.alloc(DType::F32, {n, cache.head_dim()});
    Tensor anchor = be.alloc(DType::F32, {cache.head_dim()});
    for (int h = 0; h < s.n_heads; ++h) {
      const Tensor keys = cache.rows(view.layer, h, KVCache::Part::K, 0, n);
      be.normalize_rows(keys, 1e-12f, normed);
      be.reduce(normed, 0, Reduce::Mean, anchor);
      Tensor out = s.head(h);
      be.cosine_similarity(keys, anchor, 1e-8f, out);
    }
    be.affine(s.values, -1.f, 0.f);
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
