#include "eval/grid.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>

#include "core/error.h"

namespace kvp {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Cell {
  Press* press = nullptr;
  KVCache* cache = nullptr;
  double compress_s = 0;
};

// After each layer's attention: every cell gets its compressed copy of the layer.
class GridHook : public LayerHook {
 public:
  GridHook(std::vector<Cell>& cells, int64_t reserve) : cells_(cells), reserve_(reserve) {}

  void after_attention(LayerView& view) override {
    // Cells whose presses share a score identity plan from one score() per layer on the
    // full cache (its cost is charged to the first such cell) and borrow their kept rows
    // from it in place; the others get the layer's rows in their own cache and compress it
    // themselves.
    std::map<std::string, Scores> scores;
    bool gathered = false;
    for (Cell& c : cells_) {
      const auto t0 = std::chrono::steady_clock::now();
      // (At ratio 0 a press scores nothing, as in kvpress: no shared scores to compute.)
      const std::string identity =
          c.press->compression_ratio() == 0 ? std::string() : c.press->score_identity(view);
      if (!identity.empty()) {
        auto it = scores.find(identity);
        if (it == scores.end()) it = scores.emplace(identity, c.press->score(view)).first;
        const KeepPlan keep = c.press->plan_from_scores(view, it->second);
        c.cache->borrow_kept(view.layer, *view.cache, keep, reserve_);
      } else {
        if (!gathered) gather(view);
        gathered = true;
        c.cache->append(view.layer, k_.data(), v_.data(), view.n_tokens, view.positions);
        LayerView own = view;
        own.cache = c.cache;
        c.press->compress(own, reserve_);
      }
      c.compress_s += seconds_since(t0);
    }
  }

 private:
  // The layer's T fresh rows of the shared (full) cache in append()'s [T, heads, D] layout.
  void gather(const LayerView& view) {
    const KvSegments full = view.cache->view(view.layer);
    const int64_t T = view.n_tokens;
    const int S = full.n_segments, D = full.head_dim;
    const size_t row = static_cast<size_t>(D);
    k_.resize(static_cast<size_t>(T) * S * row);
    v_.resize(k_.size());
    for (int s = 0; s < S; ++s) {
      check(full.len[s] == T, "eval grid: the shared cache must hold only this context");
      for (int64_t t = 0; t < T; ++t) {
        const size_t src = static_cast<size_t>(full.offset[s] + t) * row;
        const size_t dst = (static_cast<size_t>(t) * S + static_cast<size_t>(s)) * row;
        std::copy(full.k + src, full.k + src + row, k_.data() + dst);
        std::copy(full.v + src, full.v + src + row, v_.data() + dst);
      }
    }
  }

  std::vector<Cell>& cells_;
  int64_t reserve_;
  std::vector<float> k_, v_;
};

std::vector<int32_t> encode_context(const LoadedModel& m, const std::string& context) {
  const PromptParts parts = split_prompt(m.chat, *m.tokenizer, context);
  return m.tokenizer->encode(parts.context, true, m.chat.format() == ChatFormat::NONE);
}

}  // namespace

int64_t context_token_count(const LoadedModel& loaded, const std::string& context) {
  return static_cast<int64_t>(encode_context(loaded, context).size());
}

namespace {

// One context after its prefill: every cell's cache ready to answer.
struct PrefilledContext {
  std::vector<std::vector<int32_t>> question_ids;
  std::unique_ptr<KVCache> full;               // the baseline's cache, lent to the cells
  std::vector<std::unique_ptr<KVCache>> own;   // declared after `full`: destroyed first
  std::vector<KVCache*> caches;                // per cell
  std::vector<std::vector<std::vector<int64_t>>> lengths;  // per cell, before any question
  std::vector<int64_t> first_positions;        // per cell
};

PrefilledContext prefill_context(LoadedModel& loaded, const GridContext& in, GridContextResult& result) {
  Model& model = *loaded.model;
  const Tokenizer& tok = *loaded.tokenizer;
  const ModelConfig& cfg = model.config();
  const std::vector<Press*>& cells = in.cells;
  check(!in.context.empty(), "the context is empty");
  check(!in.questions.empty(), "no question given");

  // Token ids exactly as Pipeline::run builds them.
  const PromptParts parts = split_prompt(loaded.chat, tok, in.context);
  const std::vector<int32_t> context_ids =
      tok.encode(parts.context, true, loaded.chat.format() == ChatFormat::NONE);
  const int64_t T = static_cast<int64_t>(context_ids.size());
  check(T > 0, "the context is empty after tokenisation");
  PrefilledContext p;
  int64_t reserve = 0;
  for (const auto& q : in.questions) {
    check(q.max_new_tokens >= 0, "max_new_tokens must be >= 0");
    p.question_ids.push_back(
        tok.encode(q.question + parts.question_suffix + q.answer_prefix, true, false));
    reserve = std::max<int64_t>(
        reserve, static_cast<int64_t>(p.question_ids.back().size()) + q.max_new_tokens);
  }
  check(T + reserve <= cfg.max_positions,
        "context (" + std::to_string(T) + " tokens) + question and answer (" +
            std::to_string(reserve) + ") exceed the model's maximum of " +
            std::to_string(cfg.max_positions) + " positions");

  result.context_tokens = T;
  result.cells.resize(cells.size());
  std::vector<int32_t> positions(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) positions[static_cast<size_t>(i)] = static_cast<int32_t>(i);

  // Caches: the shared one (baseline) and one per press cell.
  p.full = std::make_unique<KVCache>(model.make_cache(T + reserve));
  p.own.resize(cells.size());
  std::vector<Cell> shared;  // cells served by the shared prefill
  for (size_t i = 0; i < cells.size(); ++i) {
    if (!cells[i]) continue;
    p.own[i] = std::make_unique<KVCache>(model.make_cache(T + reserve));
    if (cells[i]->needs_own_prefill()) continue;
    shared.push_back({cells[i], p.own[i].get(), 0});
  }
  auto t0 = std::chrono::steady_clock::now();
  GridHook hook(shared, reserve);
  model.forward(context_ids.data(), positions.data(), T, *p.full, shared.empty() ? nullptr : &hook);
  result.prefill_s = seconds_since(t0);
  for (size_t i = 0, j = 0; i < cells.size(); ++i) {
    if (!cells[i] || cells[i]->needs_own_prefill()) continue;
    result.cells[i].compress_s = shared[j++].compress_s;
  }

  // Own prefills, so that every cell's cache is ready before the batched answers.
  p.caches.resize(cells.size());
  p.lengths.resize(cells.size());
  p.first_positions.resize(cells.size());
  for (size_t i = 0; i < cells.size(); ++i) {
    Press* press = cells[i];
    p.caches[i] = press ? p.own[i].get() : p.full.get();
    GridCellAnswers& out = result.cells[i];
    if (press && press->needs_own_prefill()) {  // the press's own forward pass
      out.own_prefill = true;
      t0 = std::chrono::steady_clock::now();
      PressHook own_hook(*press, reserve);
      model.forward(context_ids.data(), positions.data(), T, *p.caches[i], &own_hook);
      out.compress_s = own_hook.seconds();
      result.prefill_s += seconds_since(t0);
    }
    p.lengths[i] = p.caches[i]->lengths();
    for (const auto& layer : p.lengths[i]) {
      for (int64_t len : layer) out.kept_rows += len;
    }
    // As Pipeline::run: positions continue from T, or from the kept length after re-rotation.
    p.first_positions[i] = press && press->rerotates_keys() ? p.lengths[i][0][0] : T;
  }
  return p;
}

}  // namespace

std::vector<GridContextResult> run_grid_contexts(LoadedModel& loaded,
                                                 const std::vector<GridContext>& contexts) {
  std::vector<GridContextResult> results(contexts.size());
  std::vector<PrefilledContext> ready;
  size_t rounds = 0;
  for (size_t c = 0; c < contexts.size(); ++c) {
    try {
      ready.push_back(prefill_context(loaded, contexts[c], results[c]));
    } catch (const Error& e) {
      if (contexts[c].label.empty()) throw;
      throw Error(contexts[c].label + ": " + e.what());
    }
    rounds = std::max(rounds, contexts[c].questions.size());
  }

  // Question q of every context, for every cell, in the same batched forwards: one read of
  // the weights per step serves all the caches, and more rows make the matmuls faster.
  const Tokenizer& tok = *loaded.tokenizer;
  const auto t0 = std::chrono::steady_clock::now();
  const auto is_stop = [&](int32_t id) { return tok.is_end_of_generation(id); };
  for (size_t q = 0; q < rounds; ++q) {
    std::vector<AnswerRequest> requests;
    for (size_t c = 0; c < contexts.size(); ++c) {
      if (q >= contexts[c].questions.size()) continue;
      const PrefilledContext& p = ready[c];
      for (size_t i = 0; i < p.caches.size(); ++i) {
        requests.push_back({p.caches[i], &p.question_ids[q], p.first_positions[i],
                            contexts[c].questions[q].max_new_tokens});
      }
    }
    const auto ids = greedy_answers_batched(*loaded.model, requests, is_stop);
    size_t k = 0;
    for (size_t c = 0; c < contexts.size(); ++c) {
      if (q >= contexts[c].questions.size()) continue;
      PrefilledContext& p = ready[c];
      for (size_t i = 0; i < p.caches.size(); ++i) {
        results[c].cells[i].answers.push_back(tok.decode(ids[k++]));
        p.caches[i]->truncate(p.lengths[i]);
      }
    }
  }
  const double answer_s = seconds_since(t0);
  for (auto& r : results) r.answer_s = answer_s / static_cast<double>(results.size());
  return results;
}

GridContextResult run_grid_context(LoadedModel& loaded, const std::string& context,
                                   const std::vector<GridQuestion>& questions,
                                   const std::vector<Press*>& cells) {
  return run_grid_contexts(loaded, {GridContext{context, questions, cells, ""}})[0];
}

}  // namespace kvp
