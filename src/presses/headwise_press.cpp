// HeadwisePress (AdaKV's allocation), adakv, ada_snapkv, ada_expected_attention and
// critical_adakv.
#include "presses/headwise_press.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "presses/press_util.h"
#include "presses/registry.h"
#include "presses/value_norms.h"

namespace kvp {

namespace {

constexpr float kFloatMax = std::numeric_limits<float>::max();

}  // namespace

int64_t n_safe_for(int64_t n_kept, double alpha) {
  int64_t n = static_cast<int64_t>(static_cast<double>(n_kept) * alpha);
  if (alpha > 0 && n_kept > 0) n = std::max<int64_t>(n, 1);
  return std::min(n, n_kept);
}

void check_alpha_safeguard(double alpha, const std::string& press) {
  check(std::isfinite(alpha) && alpha >= 0 && alpha <= 1,
        press + ": alpha_safeguard must be in [0, 1], got " + std::to_string(alpha));
}

HeadwisePress::HeadwisePress(double ratio, double alpha_safeguard)
    : ratio_(ratio), alpha_(alpha_safeguard) {
  check_ratio(ratio, "head-wise press");
  check_alpha_safeguard(alpha_safeguard, "head-wise press");
}

void HeadwisePress::set_compression_ratio(double r) {
  check_ratio(r, name());
  ratio_ = r;
}

int64_t HeadwisePress::layer_budget(int64_t n_rows, int n_heads) const {
  return static_cast<int64_t>(n_heads) * n_kept(n_rows, ratio_);
}

KeepPlan headwise_allocate(Scores& scores, int64_t n_safe, int64_t budget) {
  Backend& be = scores.backend();
  const int H = scores.n_heads;
  const int64_t n = scores.n_rows;
  check(scores.values.numel() == H * n, "head-wise press: scores have the wrong shape");
  n_safe = std::clamp<int64_t>(n_safe, 0, n);
  budget = std::clamp<int64_t>(budget, H * n_safe, H * n);
  Tensor safe = be.alloc(DType::I32, {H, n_safe});
  if (n_safe > 0) be.top_k(scores.values, n_safe, safe);
  // The layer's ranking, position-major ([n, H]) so that equal scores go to lower positions,
  // then lower heads (ties shared across heads, not all given to head 0). Protected rows
  // rank first: +inf there, above any finite score (float max included).
  be.scatter_value(scores.values, safe, INFINITY);
  Tensor by_position = be.alloc(DType::F32, {n, H});
  be.transpose(scores.values, by_position);
  be.scatter_value(scores.values, safe, kFloatMax);  // what select() sees, as kvpress
  Tensor best = be.alloc(DType::I32, {1, budget});
  be.top_k(by_position.reshaped({1, n * H}), budget, best);
  // Read back: the plan. Each head's rows come out in descending score order.
  KeepPlan keep(static_cast<size_t>(H));
  for (int32_t flat : download_i32(best)) keep[static_cast<size_t>(flat % H)].push_back(flat / H);
  return keep;
}

KeepPlan HeadwisePress::plan(LayerView& view) {
  if (ratio_ == 0) return keep_everything(view);  // kvpress: no-op
  return plan_from_scores(view, score(view));
}

KeepPlan HeadwisePress::plan_from_scores(LayerView& view, const Scores& scores) {
  const int H = view.cache->n_segments();
  const int64_t n = view.cache->length(view.layer, 0);
  for (int h = 1; h < H; ++h)
    check(view.cache->length(view.layer, h) == n,
          name() +
              ": a head-wise press needs every kv head at one length (it runs on the context "
              "prefill)");
  if (ratio_ == 0) return keep_everything(view);
  check(scores.n_heads == H && scores.n_rows == n && scores.values.numel() == H * n,
        name() + ": score has the wrong shape");
  Scores s = copy_scores(scores);  // the allocation marks the protected rows in its own copy
  const int64_t kept = n_kept(n, ratio_);
  KeepPlan keep = headwise_allocate(s, n_safe_for(kept, alpha_), layer_budget(n, H));
  return select(view, s, std::move(keep));
}

// ---- AdaKV -------------------------------------------------------------------------------

AdaKVPress::AdaKVPress(std::unique_ptr<Press> inner, double alpha_safeguard, std::string name)
    : HeadwisePress(inner ? inner->compression_ratio() : 0.0, alpha_safeguard),
      inner_(as_scorer_press(std::move(inner), name)),
      name_(std::move(name)) {}

nlohmann::json AdaKVPress::params() const {
  return {
      {"press", inner_->name()}, {"press_params", inner_->params()}, {"alpha_safeguard", alpha_}};
}

void AdaKVPress::set_compression_ratio(double r) {
  HeadwisePress::set_compression_ratio(r);
  inner_->set_compression_ratio(r);
}

// ---- CriticalAdaKV -----------------------------------------------------------------------

CriticalAdaKVPress::CriticalAdaKVPress(std::unique_ptr<Press> inner, double alpha_safeguard,
                                       double epsilon, double first_stage_ratio)
    : AdaKVPress(std::move(inner), alpha_safeguard, "critical_adakv"),
      epsilon_(epsilon),
      first_stage_ratio_(first_stage_ratio) {
  check(std::isfinite(epsilon), "critical_adakv: epsilon must be finite");
  check(std::isfinite(first_stage_ratio) && first_stage_ratio >= 0 && first_stage_ratio <= 1,
        "critical_adakv: first_stage_ratio must be in [0, 1], got " +
            std::to_string(first_stage_ratio));
}

nlohmann::json CriticalAdaKVPress::params() const {
  nlohmann::json j = AdaKVPress::params();
  j["epsilon"] = epsilon_;
  j["first_stage_ratio"] = first_stage_ratio_;
  return j;
}

KeepPlan CriticalAdaKVPress::select(LayerView& view, const Scores& scores, KeepPlan allocation) {
  Backend& be = *view.backend;
  const Scores vnorm = output_value_norms(view);
  check(vnorm.n_heads == scores.n_heads && vnorm.n_rows == scores.n_rows,
        "critical_adakv: value norms have the wrong shape");
  Scores s2 = copy_scores(scores);
  // Stage 1: each head's top int(B_h * first_stage_ratio) by the protected scores. B_h is
  // the head's budget from the allocation (host counts).
  for (int h = 0; h < scores.n_heads; ++h) {
    const auto budget = static_cast<int64_t>(allocation[static_cast<size_t>(h)].size());
    const auto b1 = static_cast<int64_t>(static_cast<double>(budget) * first_stage_ratio_);
    if (b1 == 0) continue;
    Tensor first = be.alloc(DType::I32, {1, b1});
    be.top_k(scores.head(h), b1, first);
    Tensor row = s2.head(h);
    be.scatter_value(row, first, kFloatMax);
  }
  // Stage 2: (s' + eps) * vnorm in f32 (max * vnorm may overflow to inf, as in kvpress).
  be.affine(s2.values, 1.f, static_cast<float>(epsilon_));
  be.mul(s2.values, vnorm.values);
  for (int h = 0; h < scores.n_heads; ++h) {
    auto& rows = allocation[static_cast<size_t>(h)];
    rows = top_k_row(s2.head(h), static_cast<int64_t>(rows.size()));
  }
  return allocation;
}

// ---- Registration ------------------------------------------------------------------------

namespace {

const PressParam kAlpha{
    "alpha_safeguard", "float", "0.2",
    "fraction of n_kept protected in every head (each head keeps at least that)"};

std::unique_ptr<Press> make_adakv(const std::string& name, const std::string& inner_name,
                                  double ratio, PressArgs& a) {
  const double alpha = a.get_double("alpha_safeguard", 0.2);
  check_alpha_safeguard(alpha, name);
  return std::make_unique<AdaKVPress>(make_inner_press(name, inner_name, ratio, a), alpha, name);
}

const PressRegistration adakv(
    {"adakv",
     "head-wise budgets (AdaKV): protect each head's top alpha*n_kept, then keep the "
     "top H*n_kept scores of the layer; the inner scorer's parameters pass through",
     {{"press", "press", "snapkv", "the scorer press that supplies the scores"}, kAlpha},
     [](double ratio, PressArgs& a) {
       return make_adakv("adakv", a.get_string("press", "snapkv"), ratio, a);
     }});

const PressRegistration ada_snapkv({"ada_snapkv",
                                    "adakv(snapkv): head-wise budgets from SnapKV scores",
                                    {{"window_size", "int", "64", "SnapKV's observation window"},
                                     {"kernel_size", "int", "5", "SnapKV's pooling kernel"},
                                     kAlpha},
                                    [](double ratio, PressArgs& a) {
                                      return make_adakv("ada_snapkv", "snapkv", ratio, a);
                                    }});

const PressRegistration ada_expected_attention(
    {"ada_expected_attention",
     "adakv(expected_attention): head-wise budgets from ExpectedAttention scores",
     {{"n_future_positions", "int", "512", "ExpectedAttention's future positions"},
      {"n_sink", "int", "4", "ExpectedAttention's sink tokens"},
      {"use_covariance", "bool", "true", "ExpectedAttention's covariance term"},
      {"use_vnorm", "bool", "true", "ExpectedAttention's value-norm weighting"},
      {"epsilon", "float", "0", "ExpectedAttention's epsilon"},
      kAlpha},
     [](double ratio, PressArgs& a) {
       return make_adakv("ada_expected_attention", "expected_attention", ratio, a);
     }});

const PressRegistration critical_adakv(
    {"critical_adakv",
     "AdaKV's head budgets, then CriticalKV's two stages inside each head",
     {{"press", "press", "snapkv", "the scorer press that supplies the scores"},
      kAlpha,
      {"epsilon", "float", "1e-4", "added to the scores before the value-norm rescaling"},
      {"first_stage_ratio", "float", "0.5",
       "fraction of each head's budget chosen by the raw scores"}},
     [](double ratio, PressArgs& a) -> std::unique_ptr<Press> {
       const std::string inner = a.get_string("press", "snapkv");
       const double alpha = a.get_double("alpha_safeguard", 0.2);
       check_alpha_safeguard(alpha, "critical_adakv");
       const double eps = a.get_double("epsilon", 1e-4);
       const double fsr = a.get_double("first_stage_ratio", 0.5);
       return std::make_unique<CriticalAdaKVPress>(
           make_inner_press("critical_adakv", inner, ratio, a), alpha, eps, fsr);
     }});

}  // namespace

}  // namespace kvp
