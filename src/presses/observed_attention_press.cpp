// observed_attention: the attention each key receives from all the context's queries,
// divided by the number of queries that can see it, averaged over the G query heads of its
// kv head (docs/kvpress-semantics.md 3.7). kvpress reads eager attention; we recompute the
// causal probabilities from the layer's post-RoPE queries and cached keys (softmax in f32).
#include <algorithm>

#include "core/error.h"
#include "presses/registry.h"
#include "presses/snapkv_press.h"

namespace kvp {

namespace {

class ObservedAttentionPress : public ScorerPress {
 public:
  using ScorerPress::ScorerPress;
  std::string name() const override { return "observed_attention"; }
  nlohmann::json params() const override { return nlohmann::json::object(); }

  Scores score(LayerView& view) override {
    const int64_t n = uniform_length(view, "observed_attention");
    const int64_t Tq = view.n_tokens;
    check(Tq >= 1 && Tq <= n,
          "observed_attention: the cache must hold every query's row (use it as the first stage)");
    const int H = view.cache->n_segments();
    // Every query of the prefill: query t sees rows [0, n - Tq + t].
    Scores s{H, n, window_attention_sums(view, Tq)};
    // Divided by the queries that see row j (n - j when the queries are the whole cache, as
    // in kvpress) and the group's G heads: a host row of
    // counts.
    const int64_t G = view.queries->dim(1) / H;
    std::vector<float> seen(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j)
      seen[static_cast<size_t>(j)] = static_cast<float>(std::min(Tq, n - j) * G);
    view.backend->div(s.values, upload_f32(*view.backend, seen));
    return s;
  }
};

const PressRegistration registration(
    {"observed_attention",
     "keep the keys that received the most attention during the prefill (per seeing query)",
     {},
     [](double ratio, PressArgs&) { return std::make_unique<ObservedAttentionPress>(ratio); }});

}  // namespace

}  // namespace kvp
