#pragma once
// Head-wise presses (kvpress's AdaKV family): every kv head of a layer ends with its own
// number of rows, and the cache re-packs each head to its own length, so the memory is
// really freed (kvpress only masks the pruned rows).
//
// The allocation (docs/kvpress-semantics.md 4.1): within each head the top
// n_safe = int(n_kept * alpha_safeguard) rows (>= 1 when alpha > 0) are protected; then the
// top layer_budget() rows over all heads together are kept (H * n_kept, as kvpress).
//
// Writing a head-wise press is one `score` function:
//
//   class MyPress : public HeadwisePress {
//    public:
//     using HeadwisePress::HeadwisePress;  // (ratio, alpha_safeguard)
//     std::string name() const override { return "my_press"; }
//     Scores score(LayerView& view) override;  // [H_kv, T], comparable across heads
//   };
//
// and any registered ScorerPress becomes head-wise with AdaKVPress (press name "adakv").
#include <memory>

#include "presses/press.h"

namespace kvp {

// n_safe = int(n_kept * alpha), at least 1 when alpha > 0 and n_kept > 0.
int64_t n_safe_for(int64_t n_kept, double alpha);
// Validates alpha_safeguard in [0, 1].
void check_alpha_safeguard(double alpha, const std::string& press);

class HeadwisePress : public Press {
 public:
  HeadwisePress(double ratio, double alpha_safeguard);
  double compression_ratio() const override { return ratio_; }
  virtual void set_compression_ratio(double r);
  double alpha_safeguard() const { return alpha_; }
  bool is_headwise() const override { return true; }
  nlohmann::json params() const override { return {{"alpha_safeguard", alpha_}}; }

  // Higher = keep: one score per cached row of each kv head ([H_kv, T]). Unlike a
  // ScorerPress's, these scores are compared across the heads of the layer.
  Scores score(LayerView& view) override = 0;
  // Rows kept over the whole layer (all heads together). kvpress: H * n_kept.
  virtual int64_t layer_budget(int64_t n_rows, int n_heads) const;

  // AdaKV's allocation, then select().
  KeepPlan plan(LayerView& view) override;
  KeepPlan plan_from_scores(LayerView& view, const Scores& scores) override;

 protected:
  // Chooses the rows inside each head's budget (allocation[h].size()). `scores` are the
  // scores with each head's protected rows at float max. AdaKV keeps `allocation` as is;
  // CriticalAdaKV re-chooses them.
  virtual KeepPlan select(LayerView& view, const Scores& scores, KeepPlan allocation) {
    return allocation;
  }

  double ratio_;
  double alpha_;
};

// The allocation alone, for tests and for presses built on it: protect each head's top
// n_safe (set to float max in `scores`), then keep the top `budget` (h, j) pairs. Among
// equal scores protected rows win, then lower positions, then lower heads (so ties are
// shared across heads instead of all going to head 0; torch.topk leaves the order
// unspecified); NaN ranks last. Each head's rows come out in descending score order (ties:
// lower j). Backend ops throughout; the kept indices are read back.
KeepPlan headwise_allocate(Scores& scores, int64_t n_safe, int64_t budget);

// AdaKV over any ScorerPress: the inner press supplies the scores.
class AdaKVPress : public HeadwisePress {
 public:
  // `name`: ada_snapkv and ada_expected_attention are adakv with a fixed inner press, and
  // report their own names.
  AdaKVPress(std::unique_ptr<Press> inner, double alpha_safeguard, std::string name = "adakv");
  std::string name() const override { return name_; }
  nlohmann::json params() const override;
  void set_compression_ratio(double r) override;
  Scores score(LayerView& view) override { return inner_->score(view); }
  // The inner scorer's: ada_snapkv shares its scores with snapkv of the same window.
  std::string score_identity(const LayerView& view) const override {
    return inner_->score_identity(view);
  }
  ScorerPress& inner() { return *inner_; }

 protected:
  std::unique_ptr<ScorerPress> inner_;

 private:
  std::string name_;
};

// CriticalAdaKV (docs/kvpress-semantics.md 4.2): AdaKV's budgets B_h, then inside each
// head CriticalKV's two stages: the top int(B_h * first_stage_ratio) by the protected
// scores are kept, the rest of the budget goes to the best (s + epsilon) * vnorm, where
// vnorm is the mean over the head's query group of ||v_j W_o^(q)||_1.
class CriticalAdaKVPress : public AdaKVPress {
 public:
  CriticalAdaKVPress(std::unique_ptr<Press> inner, double alpha_safeguard, double epsilon,
                     double first_stage_ratio);
  nlohmann::json params() const override;

 protected:
  KeepPlan select(LayerView& view, const Scores& scores, KeepPlan allocation) override;

 private:
  double epsilon_;
  double first_stage_ratio_;
};

}  // namespace kvp
