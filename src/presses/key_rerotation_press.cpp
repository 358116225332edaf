// key_rerotation: the inner press's kept rows, sorted by position, with their keys re-rotated
// as if the kept tokens sat at positions 0..n_kept-1 (kvpress's KeyRerotationPress). New
// tokens then continue from n_kept, so the context looks contiguous to the model.
#include <algorithm>

#include "core/error.h"
#include "presses/press_util.h"

namespace kvp {

namespace {

class KeyRerotationPress : public Press {
 public:
  KeyRerotationPress(double ratio, std::unique_ptr<ScorerPress> inner)
      : ratio_(ratio), inner_(std::move(inner)) {
    check_ratio(ratio, "key_rerotation");
  }
  std::string name() const override { return "key_rerotation"; }
  double compression_ratio() const override { return ratio_; }
  nlohmann::json params() const override {
    return {{"press", inner_->name()}, {"inner", inner_->params()}};
  }
  bool rerotates_keys() const override { return true; }

  // Top n_kept rows of the inner scores, sorted ascending (row order = position order when
  // this press runs on the fresh context).
  KeepPlan plan(LayerView& view) override {
    const int H = view.cache->n_segments();
    const int64_t n = uniform_length(view, name());
    KeepPlan keep(static_cast<size_t>(H));
    if (ratio_ == 0) {  // kvpress returns the cache untouched
      for (auto& k : keep) {
        k.resize(static_cast<size_t>(n));
        for (int64_t j = 0; j < n; ++j) k[static_cast<size_t>(j)] = static_cast<int32_t>(j);
      }
      return keep;
    }
    const Scores s = inner_->score(view);
    check(s.n_heads == H && s.n_rows == n, "key_rerotation: the inner score has the wrong shape");
    keep = top_k_plan(s.values, n_kept(n, ratio_));
    for (auto& rows : keep) std::sort(rows.begin(), rows.end());
    return keep;
  }

  void compress(LayerView& view, int64_t reserve) override {
    const KeepPlan keep = plan(view);
    view.cache->compact(view.layer, keep, reserve);
    if (ratio_ == 0) return;
    // Rotate the kept key at rank i, taken from row p_i, by (i - p_i) * inv_freq: RoPE is
    // additive in the angle, so this is the backend's rope at "position" i - p_i. kvpress
    // uses the row index (the position when this press runs first), as we do.
    KVCache& cache = *view.cache;
    const int64_t D = cache.head_dim();
    for (int h = 0; h < cache.n_segments(); ++h) {
      const auto& rows = keep[static_cast<size_t>(h)];
      const int64_t n = static_cast<int64_t>(rows.size());
      std::vector<int32_t> delta(rows.size());
      for (size_t i = 0; i < rows.size(); ++i) delta[i] = static_cast<int32_t>(i) - rows[i];
      const Tensor keys = cache.rows_f32(view.layer, h, KVCache::Part::K, 0, n);
      Tensor heads = keys.reshaped({n, 1, D});
      view.backend->rope(heads, delta.data(), view.config->rope);
      cache.write_rows(view.layer, h, KVCache::Part::K, 0, keys);
    }
  }

 private:
  double ratio_;
  std::unique_ptr<ScorerPress> inner_;
};

const PressRegistration registration(
    {"key_rerotation",
     "the inner press's kept tokens, re-rotated to positions 0..n_kept-1 (new tokens continue "
     "from n_kept)",
     {{"press", "press", "snapkv", "the scorer press choosing the kept tokens"}},
     [](double ratio, PressArgs& a) {
       const std::string inner = a.get_string("press", "snapkv");
       return std::make_unique<KeyRerotationPress>(
           ratio, make_inner_scorer("key_rerotation", inner, ratio, a));
     }});

}  // namespace

}  // namespace kvp
