#pragma once
// Presses decide, right after a layer's attention during the context prefill, which cached
// rows each kv head keeps; the cache then re-packs them into a smaller allocation.
//
// A new press is usually one ScorerPress subclass with one `score` function. Head-wise
// presses (different budgets per head) are the HeadwisePress family.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/model.h"
#include "presses/scores.h"

namespace kvp {

// KeepPlan (kv_cache.h): kept rows per kv head, in the order they will sit in the cache.

// How a compression ratio becomes a count of kept rows out of T.
//  - Nearest (the default): the dropped count is T * ratio rounded to the nearest integer,
//    halves upward, so the achieved ratio is the closest one T allows (a 37-token prompt at
//    0.25 drops 9 rows: 0.243).
//  - Kvpress: n_kept = int(T * (1 - ratio)), kvpress's truncation, which drops up to one row
//    more than asked (37 tokens at 0.25 drop 10: 0.270). For exact parity with kvpress.
// The two agree whenever T * ratio is whole or its fraction is >= 0.5 (every ratio-0.5 run).
// A parameter of each press (Press::set_budget_rounding); make_press gives it to the press
// and to every inner press a wrapper builds, so all stages use one rule.
enum class BudgetRounding { Nearest, Kvpress };
// "nearest" or "kvpress"; anything else is an error naming the value.
BudgetRounding parse_budget_rounding(const std::string& name);
const char* budget_rounding_name(BudgetRounding rounding);
// Rows kept out of n_rows at `ratio` under `rounding`; at least 1.
int64_t n_kept_for(int64_t n_rows, double ratio, BudgetRounding rounding = BudgetRounding::Nearest);

class Press {
 public:
  virtual ~Press() = default;
  virtual std::string name() const = 0;
  // The fraction of the context's KV rows this press removes (as configured).
  virtual double compression_ratio() const = 0;
  virtual nlohmann::json params() const = 0;
  // Rows to keep for this layer (called once per layer during the context prefill).
  virtual KeepPlan plan(LayerView& view) = 0;
  // Whether the positions of new tokens continue from the compressed length (KeyRerotation)
  // instead of the original context length.
  virtual bool rerotates_keys() const { return false; }
  // Head-wise presses give kv heads different lengths; wrappers that need one length per
  // layer refuse them.
  virtual bool is_headwise() const { return false; }
  // Whether the press changes the forward pass itself (the hidden states or attention that
  // later layers see). The eval grid serves every other press from one shared prefill; a
  // press that answers true gets a prefill of its own there.
  virtual bool needs_own_prefill() const { return false; }
  // How this press turns its ratio into kept rows (make_press sets it on the press and on
  // the inner presses of a wrapper).
  void set_budget_rounding(BudgetRounding rounding) { rounding_ = rounding; }
  BudgetRounding budget_rounding() const { return rounding_; }

  // Plans, then re-packs the layer, leaving `reserve` free rows per head. Presses that also
  // change the kept rows (KeyRerotation) or compress in stages (Composed) override it.
  virtual void compress(LayerView& view, int64_t reserve);

  // Score sharing, for the eval grid, where many cells see the same layer. A press whose
  // plan is "rank the rows by score(view), then choose" may name what its scores are: two
  // presses with the same non-empty identity give equal scores on the same layer (knorm at
  // 0.25 and at 0.75; snapkv and ada_snapkv with equal windows), so the grid computes them
  // once and hands them to plan_from_scores. Empty (the default): the press plans alone.
  // A press with an identity must not override compress().
  virtual std::string score_identity(const LayerView& view) const;
  // Higher = keep, one per cached row of each kv head ([H_kv, rows]); presses with a
  // score_identity implement it (ScorerPress and HeadwisePress declare it pure).
  virtual Scores score(LayerView& view);
  // plan(view) == plan_from_scores(view, score(view)). A plan reads the view and the scores
  // and must not change them or anything presses share (the grid's cells plan from one
  // Scores).
  virtual KeepPlan plan_from_scores(LayerView& view, const Scores& scores);
  // n when plan_from_scores is "the top n rows of each head, in descending score order" (so
  // the eval grid ranks once for all the cells that share scores, each taking a prefix);
  // -1 (the default) for any other plan.
  virtual int64_t ranked_prefix(const LayerView& view) const;

 protected:
  // Rows kept out of n_rows at `ratio` under this press's rounding.
  int64_t n_kept(int64_t n_rows, double ratio) const {
    return n_kept_for(n_rows, ratio, rounding_);
  }

 private:
  BudgetRounding rounding_ = BudgetRounding::Nearest;
};

class ScorerPress : public Press {
 public:
  explicit ScorerPress(double ratio);
  double compression_ratio() const override { return ratio_; }
  void set_compression_ratio(double r);
  // Higher = keep. One score per cached row of each kv head of this layer.
  Scores score(LayerView& view) override = 0;
  // Top n_kept rows per head by score, in descending score order (kvpress's top-k order).
  KeepPlan plan(LayerView& view) override;
  KeepPlan plan_from_scores(LayerView& view, const Scores& scores) override;
  // n_kept of the layer, or -1 at ratio 0 (every row, in place).
  int64_t ranked_prefix(const LayerView& view) const override;

 protected:
  double ratio_;
};

// name() and params(): the score identity of a press whose scores depend on its parameters
// and the layer only (not on the ratio or on earlier calls).
std::string identity_from_params(const Press& press);

// Every cached row of every head, in place: what a ratio of 0 keeps (kvpress scores nothing).
KeepPlan keep_everything(const LayerView& view);
// Validates a compression ratio in [0, 1).
void check_ratio(double ratio, const std::string& press);

// The hook the model calls after each layer's attention during the context prefill.
class PressHook : public LayerHook {
 public:
  PressHook(Press& press, int64_t reserve) : press_(press), reserve_(reserve) {}
  void after_attention(LayerView& view) override;
  double seconds() const { return seconds_; }
  // Benchmarks: time the plan (scores and top-k) apart from the compaction, with a wait for
  // the device between them. Only for presses whose compress() is plan() then compact().
  void time_phases(bool on) { time_phases_ = on; }
  double plan_seconds() const { return plan_seconds_; }

 private:
  Press& press_;
  int64_t reserve_;
  double seconds_ = 0;
  bool time_phases_ = false;
  double plan_seconds_ = 0;
};

}  // namespace kvp
