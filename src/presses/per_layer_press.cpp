// per_layer: the inner press with its own compression ratio in every layer (kvpress's
// PerLayerCompressionPress). Layers then hold different lengths.
#include <numeric>

#include "core/error.h"
#include "presses/press_util.h"

namespace kvp {

namespace {

class PerLayerPress : public Press {
 public:
  PerLayerPress(std::vector<double> ratios, std::unique_ptr<ScorerPress> inner)
      : ratios_(std::move(ratios)), inner_(std::move(inner)) {
    for (double r : ratios_) check_ratio(r, "per_layer");
  }
  std::string name() const override { return "per_layer"; }
  // The mean of the per-layer ratios, as kvpress reports it.
  double compression_ratio() const override {
    return std::accumulate(ratios_.begin(), ratios_.end(), 0.0) /
           static_cast<double>(ratios_.size());
  }
  nlohmann::json params() const override {
    return {
        {"press", inner_->name()}, {"compression_ratios", ratios_}, {"inner", inner_->params()}};
  }

  KeepPlan plan(LayerView& view) override {
    const int n_layers = view.config->n_layers;
    check(static_cast<int>(ratios_.size()) == n_layers,
          "per_layer: compression_ratios has " + std::to_string(ratios_.size()) +
              " ratios but the model has " + std::to_string(n_layers) + " layers");
    const double saved = inner_->compression_ratio();
    inner_->set_compression_ratio(ratios_[static_cast<size_t>(view.layer)]);
    KeepPlan keep;
    try {
      keep = inner_->plan(view);
    } catch (...) {
      inner_->set_compression_ratio(saved);
      throw;
    }
    inner_->set_compression_ratio(saved);
    return keep;
  }

 private:
  std::vector<double> ratios_;
  std::unique_ptr<ScorerPress> inner_;
};

const PressRegistration registration(
    {"per_layer",
     "the inner press with one compression ratio per layer (--ratio is ignored)",
     {{"press", "press", "snapkv", "the scorer press applied in every layer"},
      {"compression_ratios", "floats", "", "comma-separated ratios, exactly one per layer"}},
     [](double ratio, PressArgs& a) {
       const std::string inner = a.get_string("press", "snapkv");
       check(a.has("compression_ratios"),
             "per_layer: needs compression_ratios=R0,R1,... (one per layer)");
       std::vector<double> ratios = a.get_doubles("compression_ratios");
       check(!ratios.empty(), "per_layer: compression_ratios is empty");
       return std::make_unique<PerLayerPress>(std::move(ratios),
                                              make_inner_scorer("per_layer", inner, ratio, a));
     }});

}  // namespace

}  // namespace kvp
