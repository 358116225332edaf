#pragma once
// Compares a press against kvpress's goldens (tests/golden/presses, made by
// tools/reference/press_goldens/make_press_goldens.py): the kept rows per layer and kv head,
// the head lengths, and the greedy answers to the two questions, on the default model.
//
// Kept sets must equal kvpress's exactly. The only disagreements excused are near ties: a
// row whose kvpress score (the golden score files, float16) is within near_tie_tolerance()
// of the score at the kept/dropped boundary that it would have to cross. Each cell says how
// its boundary is found (a NearTies rule below); a cell without one must agree exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/factory.h"
#include "core/error.h"
#include "core/half.h"
#include "io/json_file.h"
#include "model/model.h"
#include "pipeline/pipeline.h"
#include "presses/registry.h"
#include "support/test_paths.h"

namespace kvp::test {

// ---- Budget rounding: the one place that chooses it for golden cells --------------------
//
// kvpress keeps int(T * (1 - r)) rows; our default rounds the dropped count to nearest. The
// two differ when T * r has a fraction in (0, 0.5) (per_layer's ratios, the 0.75 cells), so
// every golden cell runs under kvpress's rule: tests create golden presses with
// make_golden_press (the rounding is a press parameter, given to every inner press too), and
// check_press_cell refuses a press made with another rule.
inline constexpr BudgetRounding kGoldenBudgetRounding = BudgetRounding::Kvpress;

inline std::unique_ptr<Press> make_golden_press(const std::string& name, double ratio,
                                                const std::vector<std::string>& args = {}) {
  return make_press(name, ratio, args, kGoldenBudgetRounding);
}

// kvpress's n_kept (ScorerPress.compute_n_kept), written out for the tests' own arithmetic.
inline int64_t kvpress_n_kept(int64_t n_rows, double ratio) {
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(n_rows) * (1.0 - ratio)));
}

// ---- The model and the golden files ----------------------------------------------------

struct PressGoldenModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  nlohmann::json context;
};

inline PressGoldenModel& press_golden_model() {
  static PressGoldenModel m = [] {
    PressGoldenModel g;
    g.backend = make_backend("cpu", 2);
    g.model = load_model(default_model_path(), *g.backend);
    g.context = read_json_file(source_path("tests/golden/presses/context.json"));
    return g;
  }();
  return m;
}

// The golden context's token count, and its prefill at positions 0..T-1 into `cache` (with
// `hook` after each layer's attention, when given).
inline int64_t golden_context_tokens() {
  return static_cast<int64_t>(press_golden_model().context.at("context_ids").size());
}
inline void prefill_golden_context(KVCache& cache, LayerHook* hook = nullptr) {
  PressGoldenModel& g = press_golden_model();
  const auto ids = g.context.at("context_ids").get<std::vector<int32_t>>();
  const auto T = static_cast<int64_t>(ids.size());
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  g.model->forward(ids.data(), pos.data(), T, cache, hook);
}

inline nlohmann::json press_golden_cell(const std::string& cell) {
  return read_json_file(source_path("tests/golden/presses/" + cell + ".json"));
}

// A golden score file: kvpress's scores as float16 [layers, kv heads, T] (shape from
// manifest.json). A missing or ill-sized file throws, which fails the test.
struct GoldenScores {
  std::string file;
  int n_layers = 0, n_heads = 0;
  int64_t n_tokens = 0;
  std::vector<float> values;
  const float* row(int layer, int head) const {
    return values.data() + (static_cast<int64_t>(layer) * n_heads + head) * n_tokens;
  }
};

inline GoldenScores read_golden_scores(const std::string& file) {
  const nlohmann::json manifest = read_json_file(source_path("tests/golden/presses/manifest.json"));
  if (!manifest.at("score_files").contains(file))
    throw Error("tests/golden/presses/manifest.json lists no score file '" + file + "'");
  const auto shape = manifest.at("score_files").at(file).at("shape").get<std::vector<int64_t>>();
  if (shape.size() != 3) throw Error(file + ": the manifest's shape is not [L, H, T]");
  GoldenScores s;
  s.file = file;
  s.n_layers = static_cast<int>(shape[0]);
  s.n_heads = static_cast<int>(shape[1]);
  s.n_tokens = shape[2];
  const std::string path = source_path("tests/golden/presses/" + file);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read the golden score file " + path);
  const std::vector<char> raw((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
  const auto n = static_cast<size_t>(shape[0] * shape[1] * shape[2]);
  if (raw.size() != 2 * n)
    throw Error(path + ": " + std::to_string(raw.size()) + " bytes, the manifest's shape needs " +
                std::to_string(2 * n));
  s.values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    uint16_t h = 0;
    std::memcpy(&h, raw.data() + 2 * i, 2);  // little-endian, as written
    s.values[i] = f16_to_f32(h);
  }
  return s;
}

// The score file recorded with a (ratio-0.5) cell; throws if the cell has none.
inline GoldenScores golden_scores_of(const std::string& cell) {
  const nlohmann::json j = press_golden_cell(cell);
  if (!j.contains("scores_file") || !j.at("scores_file").is_string())
    throw Error("golden cell " + cell + " has no scores_file");
  return read_golden_scores(j.at("scores_file").get<std::string>());
}

// ---- Near ties ---------------------------------------------------------------------------
//
// A disagreement is a near tie when its golden score is within
//     tol(a, b) = 2^-10 * (|a| + |b|) + 2^-23
// of the boundary score b it would have to cross (a = its own score). Why this size:
//  - Storage: the golden scores are float16, so each stored value is kvpress's float32 score
//    to within half an f16 step, 2^-11 |s| (normal range) or 2^-25 (subnormals: snapkv, tova
//    and expected_attention boundaries reach 1e-6 in some layers, below f16's 6.1e-5 normal
//    range). A stored gap is off from kvpress's by up to 2^-11 (|a| + |b|) + 2^-24.
//  - Our port: our scores are not kvpress's bit for bit (other summation orders, the model's
//    Q4_1 weights dequantised to f32 by us instead of by transformers). Measured at ratio 0.5
//    on the golden context (all 96,390 scores of knorm, snapkv, expected_attention, tova,
//    observed_attention, keydiff, qfilter and criticalkv): 99.5-99.97% of our float32 scores
//    round to exactly kvpress's stored float16, and none is further from it than 1.08 half f16
//    steps (keydiff: 1.23), so our own error is at most about a tenth (a quarter) of a half
//    step. A pair of rows can swap order only if their true gap is below the sum of both
//    rows' port errors; we allow a whole half step per row (2^-11 |s|, 2^-25 absolute),
//    4-10 times what was measured, so the limit is not tuned to the current data.
//  Together: 2^-10 (|a| + |b|) relative, 2^-23 absolute. In f16 steps this excuses gaps of
//  about two steps at the boundary's magnitude: the finest resolution the files have.
inline double near_tie_tolerance(double a, double b) {
  return std::ldexp(std::fabs(a) + std::fabs(b), -10) + std::ldexp(1.0, -23);
}

// One keep/drop decision where we and kvpress differ.
struct Disagreement {
  int head = 0;
  int32_t token = 0;
  bool kvpress_keeps = false;  // true: kvpress keeps the row and we drop it
};

// How far a disagreement is from a tie: the score gap to the boundary it crosses, and the
// tolerance for that pair of scores. gap = inf: no score can excuse it.
struct TieGap {
  double gap = std::numeric_limits<double>::infinity();
  double tolerance = 0;
  bool excused() const { return gap <= tolerance; }
};

inline TieGap tie_gap(double score, double boundary, bool kvpress_keeps) {
  if (!std::isfinite(score) || !std::isfinite(boundary)) return {};
  return {kvpress_keeps ? score - boundary : boundary - score, near_tie_tolerance(score, boundary)};
}

inline TieGap closer(const TieGap& a, const TieGap& b) {
  if (a.excused() != b.excused()) return a.excused() ? a : b;
  return a.gap / std::max(a.tolerance, 1e-300) <= b.gap / std::max(b.tolerance, 1e-300) ? a : b;
}

// The golden kept sets of a cell, per layer and head, as membership masks.
struct GoldenKept {
  int64_t n_tokens = 0;
  std::vector<std::vector<std::vector<char>>> keeps;  // [layer][head][token]
  std::vector<std::vector<int64_t>> lengths;          // kept_lengths
  explicit GoldenKept(const nlohmann::json& golden) {
    n_tokens = golden.at("n_tokens").get<int64_t>();
    lengths = golden.at("kept_lengths").get<std::vector<std::vector<int64_t>>>();
    for (const auto& layer : golden.at("kept")) {
      keeps.emplace_back();
      for (const auto& head : layer) {
        std::vector<char> k(static_cast<size_t>(n_tokens), 0);
        for (int32_t t : head.get<std::vector<int32_t>>()) k[static_cast<size_t>(t)] = 1;
        keeps.back().push_back(std::move(k));
      }
    }
  }
  bool kept(int l, int h, int64_t t) const {
    return keeps[static_cast<size_t>(l)][static_cast<size_t>(h)][static_cast<size_t>(t)] != 0;
  }
};

// Rows of one head in descending score order, ties to the lower position (kvpress's topk
// order, up to ties, which are near ties by definition).
inline std::vector<int32_t> descending(const float* s, int64_t n) {
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
  return idx;
}

// A rule that finds the boundary each disagreement of one layer crosses.
class NearTies {
 public:
  virtual ~NearTies() = default;
  virtual std::string describe() const = 0;
  // One TieGap per disagreement of `layer`; `our_lengths` are our rows per head there.
  virtual std::vector<TieGap> gaps(int layer, const std::vector<Disagreement>& d,
                                   const std::vector<int64_t>& our_lengths) const = 0;
};

// kvpress kept the top n of the scores per (layer, head), or per consecutive segment of
// `segment` rows (ChunkPress): the boundary of a row kvpress dropped is the lowest kept
// score of its (layer, head, segment); of a row kvpress kept, the highest dropped one.
class TopKNearTies : public NearTies {
 public:
  TopKNearTies(const GoldenKept& kept, GoldenScores scores, int64_t segment)
      : scores_(std::move(scores)), segment_(segment > 0 ? segment : kept.n_tokens) {
    const int64_t T = kept.n_tokens;
    const int64_t n_seg = (T + segment_ - 1) / segment_;
    lo_kept_.resize(kept.keeps.size());
    hi_dropped_.resize(kept.keeps.size());
    for (size_t l = 0; l < kept.keeps.size(); ++l) {
      for (size_t h = 0; h < kept.keeps[l].size(); ++h) {
        const float* s = scores_.row(static_cast<int>(l), static_cast<int>(h));
        std::vector<double> lo(static_cast<size_t>(n_seg), std::numeric_limits<double>::infinity());
        std::vector<double> hi(static_cast<size_t>(n_seg),
                               -std::numeric_limits<double>::infinity());
        for (int64_t t = 0; t < T; ++t) {
          const auto c = static_cast<size_t>(t / segment_);
          if (kept.kept(static_cast<int>(l), static_cast<int>(h), t))
            lo[c] = std::min<double>(lo[c], s[t]);
          else
            hi[c] = std::max<double>(hi[c], s[t]);
        }
        lo_kept_[l].push_back(std::move(lo));
        hi_dropped_[l].push_back(std::move(hi));
      }
    }
  }
  std::string describe() const override {
    return scores_.file + ", top-k per head" +
           (segment_ < scores_.n_tokens ? " and chunk of " + std::to_string(segment_) : "");
  }
  std::vector<TieGap> gaps(int layer, const std::vector<Disagreement>& d,
                           const std::vector<int64_t>&) const override {
    std::vector<TieGap> out;
    for (const Disagreement& x : d) {
      const auto c = static_cast<size_t>(x.token / segment_);
      const auto l = static_cast<size_t>(layer);
      const auto h = static_cast<size_t>(x.head);
      const double b = x.kvpress_keeps ? hi_dropped_[l][h][c] : lo_kept_[l][h][c];
      out.push_back(tie_gap(scores_.row(layer, x.head)[x.token], b, x.kvpress_keeps));
    }
    return out;
  }

 private:
  GoldenScores scores_;
  int64_t segment_;
  std::vector<std::vector<std::vector<double>>> lo_kept_, hi_dropped_;  // [layer][head][segment]
};

// AdaKV (kvpress's AdaKVPress): each head's top n_safe = max(1, int(alpha n_kept)) rows are
// protected, then the layer keeps its top H n_kept scores over all heads together. A row
// kvpress dropped was either near the layer's lowest kept unprotected score or near its
// head's lowest protected one; a row kvpress kept was near the layer's highest dropped score
// (and, if kvpress protected it, also near its head's highest unprotected score).
class AdaKvNearTies : public NearTies {
 public:
  AdaKvNearTies(const GoldenKept& kept, GoldenScores scores, double alpha)
      : scores_(std::move(scores)) {
    const int64_t T = kept.n_tokens;
    for (size_t l = 0; l < kept.keeps.size(); ++l) {
      const int H = static_cast<int>(kept.keeps[l].size());
      const int64_t total =
          std::accumulate(kept.lengths[l].begin(), kept.lengths[l].end(), int64_t{0});
      const int64_t n_kept = total / H;
      const int64_t n_safe = std::min<int64_t>(
          n_kept, std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(n_kept) * alpha)));
      Layer ly;
      ly.lo_kept = std::numeric_limits<double>::infinity();
      ly.hi_dropped = -std::numeric_limits<double>::infinity();
      for (int h = 0; h < H; ++h) {
        const float* s = scores_.row(static_cast<int>(l), h);
        const auto order = descending(s, T);
        std::vector<char> prot(static_cast<size_t>(T), 0);
        for (int64_t i = 0; i < n_safe; ++i)
          prot[static_cast<size_t>(order[static_cast<size_t>(i)])] = 1;
        ly.lo_protected.push_back(n_safe > 0 ? s[order[static_cast<size_t>(n_safe - 1)]]
                                             : std::numeric_limits<double>::infinity());
        ly.hi_unprotected.push_back(n_safe < T ? s[order[static_cast<size_t>(n_safe)]]
                                               : -std::numeric_limits<double>::infinity());
        for (int64_t t = 0; t < T; ++t) {
          if (!kept.kept(static_cast<int>(l), h, t))
            ly.hi_dropped = std::max<double>(ly.hi_dropped, s[t]);
          else if (!prot[static_cast<size_t>(t)])
            ly.lo_kept = std::min<double>(ly.lo_kept, s[t]);
        }
        ly.protected_rows.push_back(std::move(prot));
      }
      layers_.push_back(std::move(ly));
    }
  }
  std::string describe() const override { return scores_.file + ", AdaKV's layer-wide top-k"; }
  std::vector<TieGap> gaps(int layer, const std::vector<Disagreement>& d,
                           const std::vector<int64_t>&) const override {
    const Layer& ly = layers_[static_cast<size_t>(layer)];
    std::vector<TieGap> out;
    for (const Disagreement& x : d) {
      const auto h = static_cast<size_t>(x.head);
      const double s = scores_.row(layer, x.head)[x.token];
      if (!x.kvpress_keeps) {  // we kept it: by the layer's threshold or by protection
        out.push_back(closer(tie_gap(s, ly.lo_kept, false), tie_gap(s, ly.lo_protected[h], false)));
      } else if (ly.protected_rows[h][static_cast<size_t>(x.token)]) {
        // we dropped a row kvpress protected: it lost protection and fell below the layer's
        // threshold, so both gaps must be small
        const TieGap a = tie_gap(s, ly.hi_unprotected[h], true);
        const TieGap b = tie_gap(s, ly.hi_dropped, true);
        out.push_back(a.excused() && b.excused() ? (a.gap >= b.gap ? a : b) : TieGap{});
      } else {
        out.push_back(tie_gap(s, ly.hi_dropped, true));
      }
    }
    return out;
  }

 private:
  struct Layer {
    double lo_kept = 0, hi_dropped = 0;                // unprotected kept / dropped, all heads
    std::vector<double> lo_protected, hi_unprotected;  // per head
    std::vector<std::vector<char>> protected_rows;     // [head][token]
  };
  GoldenScores scores_;
  std::vector<Layer> layers_;
};

// CriticalAdaKV: AdaKV's allocation B_h per head (from the inner scores, which the goldens
// store), then each head keeps its own top B_h by (s' + epsilon) * vnorm, which the goldens
// do not store. So the only disagreements that can be excused are those that a near tie in
// the allocation explains: a head that got d more rows than kvpress's keeps kvpress's rows
// plus exactly d more (d fewer: a subset), and the scores at the moved allocation boundary
// (the d-th unallocated row of a gaining head, the d-th last allocated row of a losing one)
// are a near tie. Any other disagreement fails.
class CriticalAdaKvNearTies : public NearTies {
 public:
  CriticalAdaKvNearTies(const GoldenKept& kept, GoldenScores scores, double alpha)
      : kept_(kept), scores_(std::move(scores)), alpha_(alpha) {}
  std::string describe() const override {
    return scores_.file + ", CriticalAdaKV's allocation between heads";
  }
  std::vector<TieGap> gaps(int layer, const std::vector<Disagreement>& d,
                           const std::vector<int64_t>& ours) const override {
    const auto& want = kept_.lengths[static_cast<size_t>(layer)];
    const int H = static_cast<int>(want.size());
    const int64_t T = kept_.n_tokens;
    std::vector<TieGap> none(d.size());
    // Every head's disagreements must be |D_h| rows, all on the side its length moved.
    for (int h = 0; h < H; ++h) {
      const int64_t D = ours[static_cast<size_t>(h)] - want[static_cast<size_t>(h)];
      int64_t n = 0;
      for (const Disagreement& x : d) {
        if (x.head != h) continue;
        ++n;
        if (x.kvpress_keeps != (D < 0)) return none;
      }
      if (n != std::abs(D)) return none;
    }
    const int64_t n_kept = std::accumulate(want.begin(), want.end(), int64_t{0}) / H;
    const int64_t n_safe =
        std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(n_kept) * alpha_));
    TieGap worst{-std::numeric_limits<double>::infinity(), 0};
    bool any = false;
    for (int g = 0; g < H; ++g) {  // g gains
      const int64_t dg = ours[static_cast<size_t>(g)] - want[static_cast<size_t>(g)];
      if (dg <= 0) continue;
      const float* sg = scores_.row(layer, g);
      const auto og = descending(sg, T);
      const int64_t ig = want[static_cast<size_t>(g)] + dg - 1;
      if (ig >= T) return none;
      for (int k = 0; k < H; ++k) {  // k loses
        const int64_t dk = want[static_cast<size_t>(k)] - ours[static_cast<size_t>(k)];
        if (dk <= 0) continue;
        const float* sk = scores_.row(layer, k);
        const auto ok = descending(sk, T);
        const int64_t ik = want[static_cast<size_t>(k)] - dk;
        if (ik < n_safe) return none;  // a protected row cannot lose its place
        const TieGap t =
            tie_gap(sk[ok[static_cast<size_t>(ik)]], sg[og[static_cast<size_t>(ig)]], true);
        if (!t.excused()) return none;
        if (!any || t.gap > worst.gap) worst = t;
        any = true;
      }
    }
    if (!any) return none;  // equal lengths: a disagreement inside a head (no scores for it)
    return std::vector<TieGap>(d.size(), worst);
  }

 private:
  const GoldenKept& kept_;
  GoldenScores scores_;
  double alpha_;
};

// ComposedPress([Knorm(r), StreamingLLM(r)]): the second stage keeps the first n_sink and the
// last n2 - n_sink rows of the first stage's cache, which kvpress holds in descending score
// order. So a row's fate depends on its rank in the first stage's scores, and the
// boundaries are the ranks n_sink, n1 - n2 + n_sink and n1 (n1 rows after the first stage,
// n2 after the second). A disagreement is a near tie if the row is within tolerance of the
// score at one of those ranks (on the side it would cross to).
class ComposedRankNearTies : public NearTies {
 public:
  ComposedRankNearTies(const GoldenKept& kept, GoldenScores scores, int64_t n1, int64_t n_sink)
      : kept_(kept), scores_(std::move(scores)), n1_(n1), n_sink_(n_sink) {
    for (int l = 0; l < scores_.n_layers; ++l) {
      orders_.emplace_back();
      for (int h = 0; h < scores_.n_heads; ++h)
        orders_.back().push_back(descending(scores_.row(l, h), scores_.n_tokens));
    }
  }
  std::string describe() const override {
    return scores_.file + ", ranks " + std::to_string(n_sink_) + ", n1 - n2 + " +
           std::to_string(n_sink_) + " and " + std::to_string(n1_) + " of the first stage";
  }
  std::vector<TieGap> gaps(int layer, const std::vector<Disagreement>& d,
                           const std::vector<int64_t>&) const override {
    std::vector<TieGap> out;
    for (const Disagreement& x : d) {
      const auto& order = orders_[static_cast<size_t>(layer)][static_cast<size_t>(x.head)];
      const float* s = scores_.row(layer, x.head);
      const int64_t n2 = kept_.lengths[static_cast<size_t>(layer)][static_cast<size_t>(x.head)];
      const auto rank =
          static_cast<int64_t>(std::find(order.begin(), order.end(), x.token) - order.begin());
      TieGap best;
      for (int64_t r : {n_sink_, n1_ - n2 + n_sink_, n1_}) {
        if (r <= 0 || r >= scores_.n_tokens) continue;
        // Above rank r the row must fall to the score at rank r; below it, rise to r - 1's.
        const TieGap g =
            rank < r ? TieGap{s[x.token] - s[order[static_cast<size_t>(r)]],
                              near_tie_tolerance(s[x.token], s[order[static_cast<size_t>(r)]])}
                     : TieGap{s[order[static_cast<size_t>(r - 1)]] - s[x.token],
                              near_tie_tolerance(s[x.token], s[order[static_cast<size_t>(r - 1)]])};
        best = closer(best, g);
      }
      out.push_back(best);
    }
    return out;
  }

 private:
  const GoldenKept& kept_;
  GoldenScores scores_;
  int64_t n1_, n_sink_;
  std::vector<std::vector<std::vector<int32_t>>> orders_;  // [layer][head] descending
};

// CriticalKVPress over a scorer: stage 1 keeps the inner press's top b1 = int((1 - r) T fsr);
// the rest compete on (s + eps) * vnorm. The goldens store the inner scores (snapkv) and, at
// 0.5, the final scores: (s + eps) * vnorm, except +inf on 0.5's stage-1 rows (the top 267).
// Both are ratio-independent where finite, and at r <= 0.5 every +inf row is inside stage 1
// (b1 >= 267), so the two files give both stages' scores at 0.25 and 0.5. A disagreement is
// a near tie at the stage-1 boundary (inner scores, rank b1) or at the stage-2 boundary (the
// lowest kept / highest dropped final score outside stage 1); a stage-1 near tie also moves
// one stage-2 place, so in a head with one the stage-2 boundary row itself is excused too.
class CriticalKvNearTies : public NearTies {
 public:
  CriticalKvNearTies(const GoldenKept& kept, GoldenScores inner, GoldenScores final_scores,
                     int64_t b1)
      : kept_(kept), inner_(std::move(inner)), final_(std::move(final_scores)), b1_(b1) {}
  std::string describe() const override {
    return inner_.file + " (stage 1, top " + std::to_string(b1_) + ") and " + final_.file +
           " (stage 2)";
  }
  std::vector<TieGap> gaps(int layer, const std::vector<Disagreement>& d,
                           const std::vector<int64_t>&) const override {
    const int64_t T = kept_.n_tokens;
    std::vector<TieGap> out;
    if (b1_ < 1 || b1_ >= T) return std::vector<TieGap>(d.size());  // no stage-1 boundary
    std::vector<char> head_has_stage1_tie(static_cast<size_t>(inner_.n_heads), 0);
    std::vector<TieGap> s1(d.size()), s2(d.size());
    std::vector<char> at_s2_boundary(d.size(), 0);
    for (size_t i = 0; i < d.size(); ++i) {
      const Disagreement& x = d[i];
      const float* s = inner_.row(layer, x.head);
      const float* c = final_.row(layer, x.head);
      // Stage 1 by the inner scores, with the final file's +inf rows (kvpress's own stage 1
      // at 0.5, inside stage 1 at 0.25) first, so float16 ties cannot reorder them.
      std::vector<int32_t> order = descending(s, T);
      std::stable_partition(order.begin(), order.end(),
                            [&](int32_t t) { return std::isinf(c[t]); });
      std::vector<char> first(static_cast<size_t>(T), 0);
      for (int64_t k = 0; k < b1_; ++k)
        first[static_cast<size_t>(order[static_cast<size_t>(k)])] = 1;
      const bool in_first = first[static_cast<size_t>(x.token)] != 0;
      // Stage 1: the row would have to cross rank b1 of the inner scores.
      s1[i] = in_first ? tie_gap(s[x.token], s[order[static_cast<size_t>(b1_)]], true)
                       : tie_gap(s[x.token], s[order[static_cast<size_t>(b1_ - 1)]], false);
      // Stage 2: kvpress's lowest kept and highest dropped final score outside stage 1.
      double lo = std::numeric_limits<double>::infinity();
      double hi = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < T; ++t) {
        if (first[static_cast<size_t>(t)]) continue;
        if (kept_.kept(layer, x.head, t))
          lo = std::min<double>(lo, c[t]);
        else
          hi = std::max<double>(hi, c[t]);
      }
      if (!in_first) {
        s2[i] = tie_gap(c[x.token], x.kvpress_keeps ? hi : lo, x.kvpress_keeps);
        at_s2_boundary[i] = c[x.token] == (x.kvpress_keeps ? lo : hi);
      }
      if (s1[i].excused()) head_has_stage1_tie[static_cast<size_t>(x.head)] = 1;
    }
    for (size_t i = 0; i < d.size(); ++i) {
      TieGap g = closer(s1[i], s2[i]);
      if (!g.excused() && at_s2_boundary[i] &&
          head_has_stage1_tie[static_cast<size_t>(d[i].head)]) {
        for (size_t j = 0; j < d.size(); ++j)  // report the stage-1 tie that moved it
          if (d[j].head == d[i].head && s1[j].excused()) g = s1[j];
      }
      out.push_back(g);
    }
    return out;
  }

 private:
  const GoldenKept& kept_;
  GoldenScores inner_, final_;
  int64_t b1_;
};

// ChunkKVPress: the inner scores are summed over kv heads and averaged per chunk of
// `chunk_length` tokens (the last one partial); kvpress keeps whole chunks, the top ones by
// that mean, the same for every head. The boundary is in chunk means.
class ChunkKvNearTies : public NearTies {
 public:
  ChunkKvNearTies(const GoldenKept& kept, GoldenScores scores, int64_t chunk_length)
      : kept_(kept), scores_(std::move(scores)), chunk_(chunk_length) {}
  std::string describe() const override {
    return scores_.file + ", chunk means over " + std::to_string(chunk_) + " tokens";
  }
  std::vector<TieGap> gaps(int layer, const std::vector<Disagreement>& d,
                           const std::vector<int64_t>&) const override {
    const int64_t T = kept_.n_tokens;
    const int64_t n_chunks = (T + chunk_ - 1) / chunk_;
    std::vector<double> mean(static_cast<size_t>(n_chunks), 0);
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t end = std::min(T, (c + 1) * chunk_);
      for (int h = 0; h < scores_.n_heads; ++h)
        for (int64_t t = c * chunk_; t < end; ++t)
          mean[static_cast<size_t>(c)] += scores_.row(layer, h)[t];
      mean[static_cast<size_t>(c)] /= static_cast<double>(end - c * chunk_);
    }
    double lo = std::numeric_limits<double>::infinity();
    double hi = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < n_chunks; ++c) {
      if (kept_.kept(layer, 0, c * chunk_))
        lo = std::min(lo, mean[static_cast<size_t>(c)]);
      else
        hi = std::max(hi, mean[static_cast<size_t>(c)]);
    }
    std::vector<TieGap> out;
    for (const Disagreement& x : d) {
      const double m = mean[static_cast<size_t>(x.token / chunk_)];
      out.push_back(tie_gap(m, x.kvpress_keeps ? hi : lo, x.kvpress_keeps));
    }
    return out;
  }

 private:
  const GoldenKept& kept_;
  GoldenScores scores_;
  int64_t chunk_;
};

// What a cell's disagreements are measured against. `strict()`: nothing is excused.
struct NearTieRule {
  // Builds the rule from the cell's golden kept sets (null: strict).
  std::function<std::unique_ptr<NearTies>(const GoldenKept&)> make;
  std::string why_strict;  // for the log when `make` is empty

  static NearTieRule strict(std::string why) { return {nullptr, std::move(why)}; }
  // Top-k per head of the scores stored with `scores_cell` (a ratio-0.5 cell of a press whose
  // scores do not depend on the ratio), optionally per chunk of `segment` rows.
  static NearTieRule top_k(const std::string& scores_cell, int64_t segment = 0) {
    return {[=](const GoldenKept& k) {
              return std::make_unique<TopKNearTies>(k, golden_scores_of(scores_cell), segment);
            },
            ""};
  }
  static NearTieRule adakv(const std::string& scores_cell, double alpha = 0.2) {
    return {[=](const GoldenKept& k) {
              return std::make_unique<AdaKvNearTies>(k, golden_scores_of(scores_cell), alpha);
            },
            ""};
  }
  static NearTieRule critical_adakv(const std::string& scores_cell, double alpha = 0.2) {
    return {[=](const GoldenKept& k) {
              return std::make_unique<CriticalAdaKvNearTies>(k, golden_scores_of(scores_cell),
                                                             alpha);
            },
            ""};
  }
  static NearTieRule composed(const std::string& scores_cell, int64_t n1, int64_t n_sink) {
    return {[=](const GoldenKept& k) {
              return std::make_unique<ComposedRankNearTies>(k, golden_scores_of(scores_cell), n1,
                                                            n_sink);
            },
            ""};
  }
  static NearTieRule criticalkv(const std::string& inner_cell, const std::string& final_cell,
                                int64_t b1) {
    return {[=](const GoldenKept& k) {
              return std::make_unique<CriticalKvNearTies>(k, golden_scores_of(inner_cell),
                                                          golden_scores_of(final_cell), b1);
            },
            ""};
  }
  static NearTieRule chunkkv(const std::string& scores_cell, int64_t chunk_length) {
    return {[=](const GoldenKept& k) {
              return std::make_unique<ChunkKvNearTies>(k, golden_scores_of(scores_cell),
                                                       chunk_length);
            },
            ""};
  }
};

// ---- The check ---------------------------------------------------------------------------

struct PressGoldenResult {
  int64_t decisions = 0;
  int64_t disagreements = 0;
  int64_t excused = 0;
  double max_excused_gap = 0;     // in score units
  double max_excused_of_tol = 0;  // the largest gap / tolerance among the excused
  std::vector<std::vector<int64_t>> head_lens;
};

// Prefills the golden context with `press` (under the golden budget rounding), then checks
//  - every kept set (as original token positions) against the cell's: each disagreement must
//    be a near tie under `rule`;
//  - every head length against the cell's kept_lengths: exactly, except a head-wise press's
//    head whose every differing row was excused (a near tie moves rows between heads; the
//    layer total must still match);
//  - the answers' token ids against kvpress's (unless check_answers is false).
inline PressGoldenResult check_press_cell(const std::string& cell, Press& press,
                                          const NearTieRule& rule, bool check_answers = true) {
  EXPECT_EQ(press.budget_rounding(), kGoldenBudgetRounding)
      << cell << ": make golden presses with make_golden_press";
  PressGoldenModel& g = press_golden_model();
  const nlohmann::json golden = press_golden_cell(cell);
  const GoldenKept want(golden);
  const std::unique_ptr<NearTies> near_ties = rule.make ? rule.make(want) : nullptr;
  const int64_t T = golden_context_tokens();
  EXPECT_EQ(want.n_tokens, T) << cell;
  const int max_new = g.context.at("max_new_tokens").get<int>();
  const auto questions = g.context.at("question_ids").get<std::vector<std::vector<int32_t>>>();
  int64_t longest = 0;
  for (const auto& q : questions)
    longest = std::max<int64_t>(longest, static_cast<int64_t>(q.size()));
  const int64_t reserve = longest + max_new;

  PressHook hook(press, reserve);

  KVCache cache = g.model->make_cache(T + reserve);
  prefill_golden_context(cache, &hook);

  PressGoldenResult r;
  r.head_lens = cache.lengths();
  EXPECT_EQ(want.keeps.size(), static_cast<size_t>(cache.n_layers())) << cell;
  int reported = 0;
  for (int l = 0; l < cache.n_layers() && l < static_cast<int>(want.keeps.size()); ++l) {
    std::vector<Disagreement> diffs;
    for (int h = 0; h < cache.n_segments(); ++h) {
      std::vector<char> ours(static_cast<size_t>(T), 0);
      // The cache remembers the token position of every kept row.
      for (int64_t i = 0; i < cache.length(l, h); ++i)
        ours[static_cast<size_t>(cache.positions(l, h)[i])] = 1;
      for (int64_t t = 0; t < T; ++t) {
        ++r.decisions;
        const bool theirs = want.kept(l, h, t);
        if ((ours[static_cast<size_t>(t)] != 0) != theirs)
          diffs.push_back({h, static_cast<int32_t>(t), theirs});
      }
    }
    r.disagreements += static_cast<int64_t>(diffs.size());
    std::vector<TieGap> gaps(diffs.size());
    if (near_ties && !diffs.empty())
      gaps = near_ties->gaps(l, diffs, r.head_lens[static_cast<size_t>(l)]);
    std::vector<char> head_all_excused(static_cast<size_t>(cache.n_segments()), 1);
    for (size_t i = 0; i < diffs.size(); ++i) {
      const Disagreement& x = diffs[i];
      if (gaps[i].excused()) {
        ++r.excused;
        r.max_excused_gap = std::max(r.max_excused_gap, gaps[i].gap);
        r.max_excused_of_tol =
            std::max(r.max_excused_of_tol, gaps[i].gap / std::max(gaps[i].tolerance, 1e-300));
        continue;
      }
      head_all_excused[static_cast<size_t>(x.head)] = 0;
      if (++reported <= 20)
        ADD_FAILURE() << cell << ": layer " << l << " head " << x.head << " token " << x.token
                      << (x.kvpress_keeps ? ": kvpress keeps it, we drop it"
                                          : ": we keep it, kvpress drops it")
                      << (near_ties ? "; not a near tie: gap " + std::to_string(gaps[i].gap) +
                                          " > tolerance " + std::to_string(gaps[i].tolerance)
                                    : "; no near tie is excused here (" + rule.why_strict + ")");
    }
    // Head lengths.
    const auto& ours = r.head_lens[static_cast<size_t>(l)];
    const auto& theirs = want.lengths[static_cast<size_t>(l)];
    EXPECT_EQ(ours.size(), theirs.size()) << cell << " layer " << l;
    EXPECT_EQ(std::accumulate(ours.begin(), ours.end(), int64_t{0}),
              std::accumulate(theirs.begin(), theirs.end(), int64_t{0}))
        << cell << ": layer " << l << " keeps a different total than kvpress";
    for (size_t h = 0; h < std::min(ours.size(), theirs.size()); ++h) {
      if (ours[h] == theirs[h]) continue;
      const bool excused = press.is_headwise() && head_all_excused[h];
      EXPECT_TRUE(excused) << cell << ": layer " << l << " head " << h << " keeps " << ours[h]
                           << " rows, kvpress " << theirs[h];
    }
  }
  if (reported > 20) ADD_FAILURE() << cell << ": " << reported - 20 << " more not excused";
  std::printf(
      "[ info ] %s: %lld of %lld keep/drop decisions differ from kvpress; %lld excused as near "
      "ties (max gap %.4g, %.2f of its tolerance), %lld not; near ties by %s\n",
      cell.c_str(), static_cast<long long>(r.disagreements), static_cast<long long>(r.decisions),
      static_cast<long long>(r.excused), r.max_excused_gap, r.max_excused_of_tol,
      static_cast<long long>(r.disagreements - r.excused),
      near_ties ? near_ties->describe().c_str() : ("none (" + rule.why_strict + ")").c_str());

  if (check_answers) {
    const auto lens = cache.lengths();
    const int64_t first_position = press.rerotates_keys() ? lens[0][0] : T;
    const auto want_ids = golden.at("answer_ids").get<std::vector<std::vector<int32_t>>>();
    const auto eos = g.context.at("eos_token_ids").get<std::vector<int32_t>>();
    for (size_t q = 0; q < questions.size(); ++q) {
      const auto got = greedy_answer(
          *g.model, cache, questions[q], first_position, max_new,
          [&](int32_t id) { return std::find(eos.begin(), eos.end(), id) != eos.end(); });
      EXPECT_EQ(got, want_ids[q]) << cell << ": answer " << q << " differs from kvpress's";
      cache.truncate(lens);
    }
  }
  return r;
}

}  // namespace kvp::test
