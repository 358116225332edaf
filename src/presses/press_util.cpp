#include "presses/press_util.h"

#include <numeric>

#include "core/error.h"

namespace kvp {

Tensor prerope_queries(const LayerView& view, int64_t begin, int64_t end) {
  const ModelConfig& c = *view.config;
  const LayerWeights& w = *view.weights;
  Backend& be = *view.backend;
  const int64_t n = end - begin;
  check(begin >= 0 && n > 0 && end <= view.hidden_states->rows(),
        "prerope_queries: rows out of range");
  const int64_t Hq = c.n_heads, D = c.head_dim;
  if (view.queries_prerope) {  // kept by the forward pass: a copy of the rows asked for
    const Tensor& kept = *view.queries_prerope;
    check(kept.ndim() == 3 && kept.dim(0) >= end && kept.dim(1) == Hq && kept.dim(2) == D,
          "prerope_queries: the kept queries have the wrong shape");
    Tensor q = be.alloc(DType::F32, {n, Hq, D});
    be.copy(kept, static_cast<size_t>(begin * Hq) * kept.row_bytes(), q, 0, q.nbytes());
    return q;
  }
  const Tensor hs = view.hidden_states->row_slice(begin, end, {n, c.hidden});
  Tensor q = be.alloc(DType::F32, {n, Hq * D});
  be.matmul(hs, w.wq, q);
  if (c.qkv_bias) be.add_bias(q, w.bq);
  if (c.qk_norm) {
    Tensor rows = q.reshaped({n * Hq, D});
    be.rms_norm(rows, w.q_norm, c.rms_eps, rows);
  }
  return q.reshaped({n, Hq, D});
}

Tensor prerope_query_rows(const LayerView& view, int64_t begin, int64_t end) {
  if (!view.queries_prerope) return prerope_queries(view, begin, end);
  const Tensor& kept = *view.queries_prerope;
  const int64_t Hq = view.config->n_heads, D = view.config->head_dim;
  check(begin >= 0 && begin < end && end <= kept.dim(0) && kept.ndim() == 3 && kept.dim(1) == Hq &&
            kept.dim(2) == D,
        "prerope_query_rows: rows out of range or kept queries of the wrong shape");
  return kept.row_slice(begin * Hq, end * Hq, {end - begin, Hq, D});
}

Tensor dequantized(Backend& backend, const Tensor& weight) {
  const int64_t rows = weight.rows(), cols = weight.cols();
  if (weight.dtype() == DType::F32) return weight;
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  std::iota(ids.begin(), ids.end(), 0);
  Tensor out = backend.alloc(DType::F32, {rows, cols});
  backend.embed(weight, ids.data(), rows, out);
  return out;
}

std::unique_ptr<ScorerPress> make_inner_scorer(const std::string& wrapper, const std::string& inner,
                                               double ratio, PressArgs& args) {
  std::unique_ptr<Press> p = make_inner_press(wrapper, inner, ratio, args);
  check(!p->is_headwise(), wrapper + ": the inner press '" + inner +
                               "' is head-wise (kv heads keep different lengths); " + wrapper +
                               " needs one length per layer");
  return as_scorer_press(std::move(p), wrapper);
}

std::unique_ptr<ScorerPress> as_scorer_press(std::unique_ptr<Press> press,
                                             const std::string& wrapper) {
  check(press != nullptr, wrapper + ": no inner press");
  auto* scorer = dynamic_cast<ScorerPress*>(press.get());
  check(scorer != nullptr,
        wrapper + ": the inner press '" + press->name() +
            "' does not score rows (it must be a scorer press, like snapkv or knorm)");
  press.release();
  return std::unique_ptr<ScorerPress>(scorer);
}

int64_t uniform_length(const LayerView& view, const std::string& press) {
  const int64_t n = view.cache->length(view.layer, 0);
  for (int h = 1; h < view.cache->n_segments(); ++h)
    check(view.cache->length(view.layer, h) == n,
          press +
              ": kv heads hold different lengths (after a head-wise press); it needs one length "
              "per layer");
  return n;
}

}  // namespace kvp
