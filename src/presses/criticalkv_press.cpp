// criticalkv: two-stage selection (kvpress's CriticalKVPress). Stage 1 keeps the inner
// press's top int((1 - r) T first_stage_ratio) tokens outright; the rest compete on the inner
// score rescaled by how much each value moves the output: (s + epsilon) * mean over the
// group's query heads q of ||v_j W_o^(q)||_1.
#include <cfloat>
#include <cmath>

#include "core/error.h"
#include "presses/press_util.h"

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
    const std::vector<float> vnorm = projected_value_norms(view, n);
    for (int h = 0; h < H; ++h) {
      const std::vector<int32_t> first = top_k(s.values.data() + h * n, n, budget);
      for (int64_t j = 0; j < n; ++j)
        s.at(h, j) =
            (s.at(h, j) + static_cast<float>(epsilon_)) * vnorm[static_cast<size_t>(h * n + j)];
      for (int32_t j : first) s.at(h, j) = FLT_MAX;
    }
    return s;
  }

 private:
  // [H, n]: mean over the G query heads of kv head h of ||v_j W_o^(q)||_1, where W_o^(q) is
  // head q's slice of o_proj (columns q*d .. q*d+d-1), without bias.
  static std::vector<float> projected_value_norms(LayerView& view, int64_t n) {
    const ModelConfig& c = *view.config;
    Backend& be = *view.backend;
    const int64_t Hq = c.n_heads, D = c.head_dim, hidden = c.hidden;
    const KvSegments kv = view.cache->view(view.layer);
    const int64_t H = kv.n_segments, G = Hq / H;
    const Tensor wo = dequantized(be, view.weights->wo);  // [hidden, Hq * D]
    check(wo.rows() == hidden && wo.cols() == Hq * D, "criticalkv: unexpected o_proj shape");
    Tensor slice = Tensor::empty(DType::F32, {hidden, D});
    Tensor out = Tensor::empty(DType::F32, {n, hidden});
    std::vector<float> norms(static_cast<size_t>(H * n), 0.f);
    for (int64_t q = 0; q < Hq; ++q) {
      const int64_t h = q / G;
      for (int64_t o = 0; o < hidden; ++o)
        std::copy(wo.ptr<float>() + o * Hq * D + q * D, wo.ptr<float>() + o * Hq * D + (q + 1) * D,
                  slice.ptr<float>() + o * D);
      const Tensor values =
          Tensor::view(DType::F32, {n, D}, const_cast<float*>(kv.v) + kv.offset[h] * D);
      be.matmul(values, slice, out);
      for (int64_t j = 0; j < n; ++j) {
        float l1 = 0;
        for (int64_t o = 0; o < hidden; ++o) l1 += std::fabs(out.ptr<float>()[j * hidden + o]);
        norms[static_cast<size_t>(h * n + j)] += l1;
      }
    }
    for (float& x : norms) x /= static_cast<float>(G);
    return norms;
  }

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
