// chunkkv: keep whole chunks of consecutive tokens, ranked by the inner press's scores summed
// over kv heads and averaged over the chunk; every kv head keeps the same tokens (kvpress's
// ChunkKVPress).
#include <algorithm>

#include "core/error.h"
#include "presses/press_util.h"

namespace kvp {

namespace {

// The scores summed over kv heads, then averaged over each chunk of `chunk` rows (the last
// chunk may be shorter): [1, n_chunks].
Tensor chunk_means(Backend& be, const Scores& s, int64_t chunk) {
  const int64_t n = s.n_rows;
  Tensor summed = be.alloc(DType::F32, {n, 1});
  be.reduce(s.values, 0, Reduce::Sum, summed);
  const int64_t n_full = n / chunk, rem = n % chunk;
  Tensor means = be.alloc(DType::F32, {n_full + (rem > 0 ? 1 : 0), 1});
  if (n_full > 0) {
    Tensor head = means.row_slice(0, n_full, {n_full});
    be.reduce(summed.row_slice(0, n_full * chunk, {n_full, chunk}), 1, Reduce::Mean, head);
  }
  if (rem > 0) {
    Tensor tail = means.row_slice(n_full, n_full + 1, {1});
    be.reduce(summed.row_slice(n_full * chunk, n, {1, rem}), 1, Reduce::Mean, tail);
  }
  return means.reshaped({1, means.numel()});
}

class ChunkKvPress : public Press {
 public:
  ChunkKvPress(double ratio, int64_t chunk_length, std::unique_ptr<ScorerPress> inner)
      : ratio_(ratio), chunk_(chunk_length), inner_(std::move(inner)) {
    check_ratio(ratio, "chunkkv");
    check(chunk_length > 0, "chunkkv: chunk_length must be > 0");
  }
  std::string name() const override { return "chunkkv"; }
  double compression_ratio() const override { return ratio_; }
  nlohmann::json params() const override {
    return {{"press", inner_->name()}, {"chunk_length", chunk_}, {"inner", inner_->params()}};
  }

  KeepPlan plan(LayerView& view) override {
    const int H = view.cache->n_segments();
    const int64_t n = uniform_length(view, name());
    if (ratio_ == 0 || n < chunk_)
      return inner_->plan(view);  // kvpress delegates to the inner press
    const Scores s = inner_->score(view);
    check(s.n_heads == H && s.n_rows == n, "chunkkv: the inner score has the wrong shape");
    const Tensor chunk_scores = chunk_means(*view.backend, s, chunk_);
    const int64_t n_chunks = chunk_scores.numel();
    const int64_t n_kept_chunks = n_kept(n_chunks, ratio_);
    std::vector<int32_t> chosen = top_k_row(chunk_scores, n_kept_chunks);
    std::sort(chosen.begin(), chosen.end());
    std::vector<int32_t> rows;
    for (int32_t c : chosen)
      for (int64_t j = c * chunk_; j < std::min(n, (c + 1) * chunk_); ++j)
        rows.push_back(static_cast<int32_t>(j));
    return KeepPlan(static_cast<size_t>(H), rows);
  }

 private:
  double ratio_;
  int64_t chunk_;
  std::unique_ptr<ScorerPress> inner_;
};

const PressRegistration registration(
    {"chunkkv",
     "keep whole chunks of consecutive tokens ranked by the inner press's mean score (same "
     "tokens in every kv head)",
     {{"press", "press", "snapkv", "the scorer press ranking the tokens"},
      {"chunk_length", "int", "20", "tokens per chunk"}},
     [](double ratio, PressArgs& a) {
       const std::string inner = a.get_string("press", "snapkv");
       const int64_t c = a.get_int("chunk_length", 20);
       return std::make_unique<ChunkKvPress>(ratio, c,
                                             make_inner_scorer("chunkkv", inner, ratio, a));
     }});

}  // namespace

}  // namespace kvp
