#include "presses/press.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"

namespace kvp {

void check_ratio(double ratio, const std::string& press) {
  check(std::isfinite(ratio) && ratio >= 0 && ratio < 1,
        press + ": compression ratio must be in [0, 1), got " + std::to_string(ratio));
}

BudgetRounding parse_budget_rounding(const std::string& name) {
  if (name == "nearest") return BudgetRounding::Nearest;
  if (name == "kvpress") return BudgetRounding::Kvpress;
  throw Error("budget rounding must be 'nearest' or 'kvpress', got '" + name + "'");
}

const char* budget_rounding_name(BudgetRounding rounding) {
  return rounding == BudgetRounding::Nearest ? "nearest" : "kvpress";
}

int64_t n_kept_for(int64_t n_rows, double ratio, BudgetRounding rounding) {
  const double t = static_cast<double>(n_rows);
  int64_t kept = 0;
  if (rounding == BudgetRounding::Kvpress) {
    kept = static_cast<int64_t>(t * (1.0 - ratio));
  } else {
    kept = n_rows - static_cast<int64_t>(std::floor(t * ratio + 0.5));
  }
  return std::max<int64_t>(1, kept);
}

void Press::compress(LayerView& view, int64_t reserve) {
  KeepPlan keep = plan(view);
  view.cache->compact(view.layer, keep, reserve);
}

std::string Press::score_identity(const LayerView&) const {
  return {};
}

Scores Press::score(LayerView&) {
  throw Error(name() + ": this press does not expose its scores");
}

int64_t Press::ranked_prefix(const LayerView&) const {
  return -1;
}

int64_t ScorerPress::ranked_prefix(const LayerView& view) const {
  if (ratio_ == 0) return -1;
  return std::min(view.cache->length(view.layer, 0),
                  n_kept(view.cache->length(view.layer, 0), ratio_));
}

KeepPlan Press::plan_from_scores(LayerView&, const Scores&) {
  throw Error(name() + ": this press does not plan from given scores");
}

std::string identity_from_params(const Press& press) {
  return press.name() + press.params().dump();
}

// Every row of every head, in place: what a ratio of 0 keeps (kvpress scores nothing then).
KeepPlan keep_everything(const LayerView& view) {
  const int H = view.cache->n_segments();
  KeepPlan keep(static_cast<size_t>(H));
  for (int h = 0; h < H; ++h) {
    keep[static_cast<size_t>(h)].resize(static_cast<size_t>(view.cache->length(view.layer, h)));
    std::iota(keep[static_cast<size_t>(h)].begin(), keep[static_cast<size_t>(h)].end(), 0);
  }
  return keep;
}

ScorerPress::ScorerPress(double ratio) : ratio_(ratio) {
  check_ratio(ratio, "press");
}

void ScorerPress::set_compression_ratio(double r) {
  check_ratio(r, name());
  ratio_ = r;
}

KeepPlan ScorerPress::plan(LayerView& view) {
  if (ratio_ == 0) return keep_everything(view);  // kvpress leaves the cache untouched
  return plan_from_scores(view, score(view));
}

KeepPlan ScorerPress::plan_from_scores(LayerView& view, const Scores& s) {
  if (ratio_ == 0) return keep_everything(view);
  const int H = view.cache->n_segments();
  const int64_t n = view.cache->length(view.layer, 0);
  check(s.n_heads == H && s.n_rows == n && s.values.numel() == H * n,
        name() + ": score has the wrong shape");
  return top_k_plan(s.values, n_kept(n, ratio_));
}

void PressHook::after_attention(LayerView& view) {
  // On a device the layer's own work may still be running: wait for it, so that the time
  // counted is the press's alone (and its last kernels are counted too).
  if (view.backend) view.backend->synchronize();
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  if (time_phases_) {
    const KeepPlan keep = press_.plan(view);
    if (view.backend) view.backend->synchronize();
    plan_seconds_ += std::chrono::duration<double>(clock::now() - t0).count();
    view.cache->compact(view.layer, keep, reserve_);
  } else {
    press_.compress(view, reserve_);
  }
  if (view.backend) view.backend->synchronize();
  seconds_ += std::chrono::duration<double>(clock::now() - t0).count();
}

}  // namespace kvp
