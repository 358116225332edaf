// random: uniform random scores, the floor every press should beat. With a seed, every
// layer draws the same scores (kvpress re-seeds per call).
#include <random>

#include "presses/registry.h"

namespace kvp {

namespace {

class RandomPress : public ScorerPress {
 public:
  RandomPress(double ratio, int64_t seed) : ScorerPress(ratio), seed_(seed) {}
  std::string name() const override { return "random"; }
  nlohmann::json params() const override { return {{"seed", seed_}}; }

  Scores score(LayerView& view) override {
    const KvSegments kv = view.cache->view(view.layer);
    // Scores from a seed alone, drawn on the host.
    std::mt19937_64 rng(static_cast<uint64_t>(seed_));
    std::uniform_real_distribution<float> uniform(0.f, 1.f);
    std::vector<float> v(static_cast<size_t>(kv.n_segments * kv.len[0]));
    for (float& x : v) x = uniform(rng);
    Scores s = upload_scores(*view.backend, kv.n_segments, kv.len[0], v);
    return s;
  }

 private:
  int64_t seed_;
};

}  // namespace

namespace {

const PressRegistration registration(
    {"random",
     "uniform random scores (a baseline)",
     {{"seed", "int", "0", "random seed; every layer draws the same scores"}},
     [](double ratio, PressArgs& a) {
       return std::make_unique<RandomPress>(ratio, a.get_int("seed", 0));
     }});

}  // namespace

}  // namespace kvp
