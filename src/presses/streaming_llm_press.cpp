// streaming_llm: keep the first n_sink rows (attention sinks) and the most recent ones.
#include <algorithm>

#include "core/error.h"
#include "presses/registry.h"

namespace kvp {

namespace {

class StreamingLlmPress : public ScorerPress {
 public:
  StreamingLlmPress(double ratio, int64_t n_sink) : ScorerPress(ratio), n_sink_(n_sink) {
    check(n_sink >= 0, "streaming_llm: n_sink must be >= 0");
  }
  std::string name() const override { return "streaming_llm"; }
  nlohmann::json params() const override { return {{"n_sink", n_sink_}}; }

  // Its scores depend on the ratio (through n_pruned), so only equal cells share them; the
  // identity still lets the eval grid plan on the full cache and copy only the kept rows.
  std::string score_identity(const LayerView& view) const override {
    const int64_t n = view.cache->length(view.layer, 0);
    return identity_from_params(*this) + "pruned=" + std::to_string(n - n_kept(n, ratio_));
  }

  Scores score(LayerView& view) override {
    const KvSegments kv = view.cache->view(view.layer);
    const int64_t n = kv.len[0];
    check(n > n_sink_,
          "streaming_llm: the context (" + std::to_string(n) + " rows) must be longer than n_sink");
    const int64_t n_pruned = n - n_kept(n, ratio_);
    // Scores from positions alone, made on the host: 0 for the pruned rows after the sinks.
    std::vector<float> v(static_cast<size_t>(kv.n_segments * n), 1.f);
    for (int h = 0; h < kv.n_segments; ++h)
      for (int64_t j = n_sink_; j < std::min(n, n_sink_ + n_pruned); ++j)
        v[static_cast<size_t>(h * n + j)] = 0.f;
    Scores s = upload_scores(*view.backend, kv.n_segments, n, v);
    return s;
  }

 private:
  int64_t n_sink_;
};

}  // namespace

namespace {

const PressRegistration registration({"streaming_llm",
                                      "keep the first n_sink tokens and the most recent ones",
                                      {{"n_sink", "int", "4", "attention-sink tokens always kept"}},
                                      [](double ratio, PressArgs& a) {
                                        return std::make_unique<StreamingLlmPress>(
                                            ratio, a.get_int("n_sink", 4));
                                      }});

}  // namespace

}  // namespace kvp
