// random: uniform random scores, the floor every press should beat. Every layer draws the
// same scores (kvpress re-seeds per call), from torch's CPU generator's stream.
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
    // torch.rand(1, H, T, generator=torch.Generator().manual_seed(seed)), as kvpress draws
    // them: MT19937 seeded with the seed's low 32 bits, each float the low 24 bits of one
    // draw times 2^-24, heads in order. So the kept sets are kvpress's, row for row. Drawn on
    // the host from the seed alone, then uploaded.
    std::mt19937 rng(static_cast<uint32_t>(seed_));
    std::vector<float> v(static_cast<size_t>(kv.n_segments * kv.len[0]));
    for (float& x : v) x = static_cast<float>(rng() & 0xffffffu) * 0x1p-24f;
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
