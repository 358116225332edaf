// my_ada_press: the seed notebook's MyAdaPress, an example of a custom head-wise press in one
// `score` function. Heads 0 and 1 score the maximum everywhere (they want to keep every
// token); the other heads score like StreamingLLM: the first 4 tokens (sinks) at the
// maximum, then increasing with position. HeadwisePress turns the scores into head-specific
// lengths: each head's top int(alpha * n_kept) rows are protected, then the best H * n_kept
// rows of the layer are kept, and the cache re-packs every head to its own length.
#include <limits>

#include "presses/headwise_press.h"
#include "presses/registry.h"

namespace kvp {
namespace {

class MyAdaPress : public HeadwisePress {
 public:
  using HeadwisePress::HeadwisePress;
  std::string name() const override { return "my_ada_press"; }

  Scores score(LayerView& view) override {
    constexpr float kMax = std::numeric_limits<float>::max();
    constexpr int32_t kSinks = 4;
    const KvSegments kv = view.cache->view(view.layer);
    const int64_t n = kv.len[0];
    // Scores from the rows' positions alone (host bookkeeping), made here and uploaded.
    std::vector<float> v(static_cast<size_t>(kv.n_segments * n), kMax);
    for (int h = 2; h < kv.n_segments; ++h) {
      const int32_t* pos = view.cache->positions(view.layer, h);  // token position of each row
      for (int64_t j = 0; j < n; ++j)
        v[static_cast<size_t>(h * n + j)] = pos[j] < kSinks ? kMax : static_cast<float>(pos[j]);
    }
    Scores s = upload_scores(*view.backend, kv.n_segments, n, v);
    return s;
  }
};

const PressRegistration registration(
    {"my_ada_press",
     "example head-wise press: heads 0 and 1 keep everything they can, the others keep sinks + "
     "recent tokens",
     {{"alpha_safeguard", "float", "0.2", "fraction of n_kept protected in every head"}},
     [](double ratio, PressArgs& a) {
       return std::make_unique<MyAdaPress>(ratio, a.get_double("alpha_safeguard", 0.2));
     }});

}  // namespace
}  // namespace kvp
