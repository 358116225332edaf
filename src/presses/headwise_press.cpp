// HeadwisePress (AdaKV's allocation), adakv, ada_snapkv, ada_expected_attention and
// critical_adakv.
#include "presses/headwise_press.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "presses/registry.h"
#include "presses/value_norms.h"

namespace kvp {

namespace {

constexpr float kFloatMax = std::numeric_limits<float>::max();

std::unique_ptr<ScorerPress> as_scorer(std::unique_ptr<Press> inner, const std::string& wrapper) {
  check(inner != nullptr, wrapper + ": no inner press");
  auto* scorer = dynamic_cast<ScorerPress*>(inner.get());
  check(scorer != nullptr, wrapper + ": the inner press '" + inner->name() +
                               "' is not a scorer press (one score per row and head)");
  inner.release();
  return std::unique_ptr<ScorerPress>(scorer);
}

// Rows of one head in descending score order (ties: lower position first).
void sort_by_score(std::vector<int32_t>& rows, const float* s) {
  std::sort(rows.begin(), rows.end(),
            [&](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
}

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
  return static_cast<int64_t>(n_heads) * n_kept_for(n_rows, ratio_);
}

KeepPlan headwise_allocate(Scores& scores, int64_t n_safe, int64_t budget) {
  const int H = scores.n_heads;
  const int64_t n = scores.n_rows;
  check(scores.values.size() == static_cast<size_t>(H * n),
        "head-wise press: scores have the wrong shape");
  for (float x : scores.values) check(!std::isnan(x), "head-wise press: a score is NaN");
  n_safe = std::clamp<int64_t>(n_safe, 0, n);
  budget = std::clamp<int64_t>(budget, H * n_safe, H * n);

  // Protect each head's top n_safe.
  std::vector<uint8_t> prot(static_cast<size_t>(H * n), 0);
  for (int h = 0; h < H; ++h) {
    for (int32_t j : top_k(scores.values.data() + h * n, n, n_safe)) {
      prot[static_cast<size_t>(h * n + j)] = 1;
      scores.at(h, j) = kFloatMax;
    }
  }
  // Top `budget` of the layer: protected first, then score, then position, then head.
  std::vector<int64_t> idx(static_cast<size_t>(H * n));
  for (int64_t j = 0, i = 0; j < n; ++j)
    for (int h = 0; h < H; ++h) idx[static_cast<size_t>(i++)] = h * n + j;  // position-major
  const float* s = scores.values.data();
  auto better = [&](int64_t a, int64_t b) {
    if (prot[static_cast<size_t>(a)] != prot[static_cast<size_t>(b)])
      return prot[static_cast<size_t>(a)] > prot[static_cast<size_t>(b)];
    if (s[a] != s[b]) return s[a] > s[b];
    const int64_t ja = a % n, jb = b % n;
    return ja != jb ? ja < jb : a < b;
  };
  std::nth_element(idx.begin(), idx.begin() + budget, idx.end(), better);

  KeepPlan keep(static_cast<size_t>(H));
  for (int64_t i = 0; i < budget; ++i) {
    const int64_t flat = idx[static_cast<size_t>(i)];
    keep[static_cast<size_t>(flat / n)].push_back(static_cast<int32_t>(flat % n));
  }
  for (int h = 0; h < H; ++h) sort_by_score(keep[static_cast<size_t>(h)], s + h * n);
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
  check(scores.n_heads == H && scores.n_rows == n &&
            scores.values.size() == static_cast<size_t>(H * n),
        name() + ": score has the wrong shape");
  Scores s = scores;  // the allocation marks each head's protected rows in its own copy
  const int64_t n_kept = n_kept_for(n, ratio_);
  KeepPlan keep = headwise_allocate(s, n_safe_for(n_kept, alpha_), layer_budget(n, H));
  return select(view, s, std::move(keep));
}

// ---- AdaKV -------------------------------------------------------------------------------

AdaKVPress::AdaKVPress(std::unique_ptr<Press> inner, double alpha_safeguard, std::string name)
    : HeadwisePress(inner ? inner->compression_ratio() : 0.0, alpha_safeguard),
      inner_(as_scorer(std::move(inner), name)),
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
  const Scores vnorm = output_value_norms(view);
  const int64_t n = scores.n_rows;
  check(vnorm.n_heads == scores.n_heads && vnorm.n_rows == n,
        "critical_adakv: value norms have the wrong shape");
  const float eps = static_cast<float>(epsilon_);
  std::vector<float> s2(static_cast<size_t>(n));
  for (int h = 0; h < scores.n_heads; ++h) {
    const float* s = scores.values.data() + h * n;
    const int64_t budget = static_cast<int64_t>(allocation[static_cast<size_t>(h)].size());
    // Stage 1: the head's top int(B_h * first_stage_ratio) by the protected scores.
    std::copy(s, s + n, s2.begin());
    const auto b1 = static_cast<int64_t>(static_cast<double>(budget) * first_stage_ratio_);
    for (int32_t j : top_k(s, n, b1)) s2[static_cast<size_t>(j)] = kFloatMax;
    // Stage 2: (s' + eps) * vnorm in f32 (max * vnorm may overflow to inf, as in kvpress).
    for (int64_t j = 0; j < n; ++j)
      s2[static_cast<size_t>(j)] = (s2[static_cast<size_t>(j)] + eps) * vnorm.at(h, j);
    allocation[static_cast<size_t>(h)] = top_k(s2.data(), n, budget);
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
