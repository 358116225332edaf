// criticalkv: two-stage selection (kvpress's CriticalKVPress). Stage 1 keeps the inner
// press's top int((1 - r) T first_stage_ratio) tokens outright; the rest compete on the inner
// score rescaled by how much each value moves the output: (s + epsilon) * mean over the
// group's query heads q of ||v_j W_o^(q)||_1.
#include <cfloat>

#include "core/error.h"
#include "presses/press_util.h"
#include "presses/value_norms.h"

namespace kvp {

namespace {

class CriticalKvPress : public ScorerPress {
 public:
  CriticalKvPress(double ratio, double epsilon, double first_stage_ratio,
                  std::unique_ptr<ScorerPress> inner)
      : ScorerPress(ratio),
        epsilon_(epsilon),
        first_stage_ratio_(first_stage_ratio),
        inner_(std::move(inner)) {
    check(first_stage_ratio >= 0 && first_stage_ratio <= 1,
          "criticalkv: first_stage_ratio must be in [0, 1]");
  }
  std::string name() const override { return "criticalkv"; }
  nlohmann::json params() const override {
    return {{"press", inner_->name()},
            {"epsilon", epsilon_},
            {"first_stage_ratio", first_stage_ratio_},
            {"inner", inner_->params()}};
  }

  Scores score(LayerView& view) override {
    Scores s = inner_->score(view);
    const int H = s.n_heads;
    const int64_t n = s.n_rows;
    // Stage 1 budget, evaluated as Python does: int((1 - r) * T * fsr).
    int64_t budget =
        static_cast<int64_t>((1.0 - ratio_) * static_cast<double>(n) * first_stage_ratio_);
    if (first_stage_ratio_ > 0 && ratio_ < 1) budget = std::max<int64_t>(budget, 1);
    Backend& be = *view.backend;
    const Scores vnorm = output_value_norms(view);
    Tensor first = be.alloc(DType::I32, {H, budget});
    if (budget > 0) be.top_k(s.values, budget, first);
    be.affine(s.values, 1.f, static_cast<float>(epsilon_));
    be.mul(s.values, vnorm.values);
    be.scatter_value(s.values, first, FLT_MAX);
    return s;
  }

 private:
  double epsilon_, first_stage_ratio_;
  std::unique_ptr<ScorerPress> inner_;
};

const PressRegistration registration(
    {"criticalkv",
     "two stages: keep the inner press's best half of the budget, rank the rest by the score "
     "times the value's L1 norm through the output projection",
     {{"press", "press", "snapkv", "the scorer press giving the first scores"},
      {"epsilon", "float", "0.0001", "added to the scores before the value-norm rescaling"},
      {"first_stage_ratio", "float", "0.5",
       "share of the budget chosen by the inner scores alone"}},
     [](double ratio, PressArgs& a) {
       const std::string inner = a.get_string("press", "snapkv");
       const double eps = a.get_double("epsilon", 1e-4),
                    fsr = a.get_double("first_stage_ratio", 0.5);
       return std::make_unique<CriticalKvPress>(ratio, eps, fsr,
                                                make_inner_scorer("criticalkv", inner, ratio, a));
     }});

}  // namespace

}  // namespace kvp
