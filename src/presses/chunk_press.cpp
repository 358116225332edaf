// chunk: the inner press applied to consecutive chunks of the context, each keeping its own
// share (kvpress's ChunkPress). Like kvpress, the inner press sees each chunk's hidden
// states, keys and values but the whole context's RoPE tables (spec 3.11): queries of the
// chunk are rotated as if the chunk ended at the context's last position.
#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "presses/press_util.h"

namespace kvp {

namespace {

class ChunkPress : public Press {
 public:
  ChunkPress(double ratio, int64_t chunk_length, std::unique_ptr<ScorerPress> inner)
      : ratio_(ratio), chunk_(chunk_length), inner_(std::move(inner)) {
    check_ratio(ratio, "chunk");
    check(chunk_length > 0, "chunk: chunk_length must be > 0");
  }
  std::string name() const override { return "chunk"; }
  double compression_ratio() const override { return ratio_; }
  nlohmann::json params() const override {
    return {{"press", inner_->name()}, {"chunk_length", chunk_}, {"inner", inner_->params()}};
  }

  KeepPlan plan(LayerView& view) override {
    const int H = view.cache->n_segments();
    const int64_t n = uniform_length(view, name());
    KeepPlan keep(static_cast<size_t>(H));
    if (ratio_ == 0) {
      for (auto& k : keep) {
        k.resize(static_cast<size_t>(n));
        for (int64_t j = 0; j < n; ++j) k[static_cast<size_t>(j)] = static_cast<int32_t>(j);
      }
      return keep;
    }
    const int64_t T = view.n_tokens;
    check(n == T,
          "chunk: the cache must hold the whole, uncompressed context (use chunk as the first "
          "stage)");
    const ModelConfig& c = *view.config;
    const int64_t D = c.head_dim, Hq = c.n_heads;
    for (int64_t start = 0; start < n; start += chunk_) {
      const int64_t len = std::min(chunk_, n - start);
      // The chunk's keys and values in a cache of their own (only this layer is allocated).
      KVCache sub(*view.backend, view.layer + 1, H, static_cast<int>(D), len);
      KeepPlan rows(static_cast<size_t>(H), std::vector<int32_t>(static_cast<size_t>(len)));
      for (auto& r : rows) std::iota(r.begin(), r.end(), static_cast<int32_t>(start));
      sub.copy_kept(view.layer, *view.cache, rows, 0);
      // Positions as kvpress's unchanged position_embeddings give them to a chunk of len
      // tokens: its last rows take the context's last positions.
      std::vector<int32_t> pos(static_cast<size_t>(len));
      for (int64_t t = 0; t < len; ++t)
        pos[static_cast<size_t>(t)] = static_cast<int32_t>(T - len + t);
      const Tensor hs = view.hidden_states->row_slice(start, start + len, {len, c.hidden});
      Tensor q_kept;  // the chunk's rows of the forward's pre-RoPE queries
      if (view.queries_prerope)
        q_kept = view.queries_prerope->row_slice(start * Hq, (start + len) * Hq, {len, Hq, D});
      LayerView sv = view;
      sv.hidden_states = &hs;
      sv.queries_prerope = view.queries_prerope ? &q_kept : nullptr;
      sv.n_tokens = len;
      sv.positions = pos.data();
      sv.cache = &sub;
      Tensor q = prerope_queries(sv, 0, len);
      view.backend->rope(q, pos.data(), c.rope);
      check(q.dim(1) == Hq, "chunk: query shape");
      sv.queries = &q;
      const Scores s = inner_->score(sv);
      check(s.n_heads == H && s.n_rows == len, "chunk: the inner score has the wrong shape");
      const KeepPlan chunk_keep = top_k_plan(s.values, n_kept(len, ratio_));
      for (int h = 0; h < H; ++h) {
        for (int32_t j : chunk_keep[static_cast<size_t>(h)])
          keep[static_cast<size_t>(h)].push_back(static_cast<int32_t>(start + j));
      }
    }
    return keep;
  }

 private:
  double ratio_;
  int64_t chunk_;
  std::unique_ptr<ScorerPress> inner_;
};

const PressRegistration registration(
    {"chunk",
     "the inner press on consecutive chunks of the context, each keeping its share",
     {{"press", "press", "snapkv", "the scorer press applied to each chunk"},
      {"chunk_length", "int", "1024",
       "tokens per chunk (with snapkv every chunk must exceed its window)"}},
     [](double ratio, PressArgs& a) {
       const std::string inner = a.get_string("press", "snapkv");
       const int64_t c = a.get_int("chunk_length", 1024);
       return std::make_unique<ChunkPress>(ratio, c, make_inner_scorer("chunk", inner, ratio, a));
     }});

}  // namespace

}  // namespace kvp
