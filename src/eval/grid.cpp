#include "eval/grid.h"

#include <algorithm>
#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <numeric>

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
    std::map<std::string, Group> groups;
    std::vector<Group*> shared(cells_.size(), nullptr);
    std::vector<int64_t> prefix(cells_.size(), -1);  // Press::ranked_prefix per shared cell
    for (size_t i = 0; i < cells_.size(); ++i) {
      Cell& c = cells_[i];
      const auto t0 = std::chrono::steady_clock::now();
      // (At ratio 0 a press scores nothing, as in kvpress: no shared scores to compute.)
      const std::string identity =
          c.press->compression_ratio() == 0 ? std::string() : c.press->score_identity(view);
      if (identity.empty()) continue;
      auto it = groups.find(identity);
      if (it == groups.end()) it = groups.emplace(identity, Group{c.press->score(view)}).first;
      shared[i] = &it->second;
      prefix[i] = c.press->ranked_prefix(view);
      it->second.longest = std::max(it->second.longest, prefix[i]);
      c.compress_s += seconds_since(t0);
    }
    for (size_t i = 0; i < cells_.size(); ++i) {
      if (!shared[i]) continue;
      Cell& c = cells_[i];
      const auto t0 = std::chrono::steady_clock::now();
      c.cache->borrow_kept(view.layer, *view.cache, plan(*shared[i], prefix[i], c, view), reserve_);
      c.compress_s += seconds_since(t0);
    }
    bool gathered = false;
    for (size_t i = 0; i < cells_.size(); ++i) {
      if (shared[i]) continue;
      Cell& c = cells_[i];
      const auto t0 = std::chrono::steady_clock::now();
      if (!gathered) all_rows(view);
      gathered = true;
      c.cache->copy_kept(view.layer, *view.cache, all_, reserve_);
      LayerView own = view;
      own.cache = c.cache;
      c.press->compress(own, reserve_);
      c.compress_s += seconds_since(t0);
    }
  }

 private:
  // One score identity's scores and, when its cells rank by them (Press::ranked_prefix), the
  // top `longest` rows of each head: one top-k for all of them, each cell taking a prefix.
  struct Group {
    Scores scores;
    int64_t longest = -1;
    KeepPlan ranked = {};
  };

  // The cell's plan: a prefix of the group's ranking when the press ranks (k >= 0).
  KeepPlan plan(Group& g, int64_t k, Cell& c, LayerView& view) {
    if (k < 0) return c.press->plan_from_scores(view, g.scores);
    if (g.ranked.empty()) g.ranked = top_k_plan(g.scores.values, g.longest);
    KeepPlan keep(g.ranked.size());
    for (size_t h = 0; h < keep.size(); ++h)
      keep[h].assign(g.ranked[h].begin(), g.ranked[h].begin() + k);
    return keep;
  }

  // Every row of the shared (full) cache's layer: the plan that copies it whole.
  void all_rows(const LayerView& view) {
    const int64_t T = view.n_tokens;
    all_.assign(static_cast<size_t>(view.cache->n_segments()),
                std::vector<int32_t>(static_cast<size_t>(T)));
    for (int s = 0; s < view.cache->n_segments(); ++s) {
      check(view.cache->length(view.layer, s) == T,
            "eval grid: the shared cache must hold only this context");
      std::iota(all_[static_cast<size_t>(s)].begin(), all_[static_cast<size_t>(s)].end(), 0);
    }
  }

  std::vector<Cell>& cells_;
  int64_t reserve_;
  KeepPlan all_;
};

// One context after its prefill: every cell's cache ready to answer.
struct PrefilledContext {
  Prompt prompt;                              // the context's and questions' ids
  std::unique_ptr<KVCache> full;              // the baseline's cache, lent to the cells
  std::vector<std::unique_ptr<KVCache>> own;  // declared after `full`: destroyed first
  std::vector<KVCache*> caches;               // per cell
  std::vector<std::vector<std::vector<int64_t>>> lengths;  // per cell, before any question
  std::vector<int64_t> first_positions;                    // per cell
};

PrefilledContext prefill_context(LoadedModel& loaded, const GridContext& in,
                                 GridContextResult& result) {
  Model& model = *loaded.model;
  const std::vector<Press*>& cells = in.cells;
  // Token ids, reserve and first positions exactly as Pipeline::run has them.
  PrefilledContext p;
  p.prompt = build_prompt(loaded, in.context, in.questions);
  const Prompt& prompt = p.prompt;
  const int64_t T = prompt.context_tokens();
  const int64_t reserve = prompt.reserve;

  result.context_tokens = T;
  result.cells.resize(cells.size());
  const std::vector<int32_t> positions = prompt.context_positions();
  const std::vector<int32_t>& context_ids = prompt.context_ids;

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
    p.first_positions[i] = prompt.first_position(press, *p.caches[i]);
  }
  return p;
}

}  // namespace

void run_grid_stream(LoadedModel& loaded, const std::vector<GridContext>& contexts,
                     size_t live_contexts,
                     const std::function<void(size_t, GridContextResult&&)>& on_done) {
  check(live_contexts >= 1, "at least one context must answer at a time");
  // A context from its prefill until its last cell has answered its last question.
  struct Live {
    size_t index = 0;
    PrefilledContext p;
    GridContextResult result;
    std::vector<size_t> question;  // per cell: the question it is answering
    size_t cells_left = 0;
  };
  struct Owner {
    Live* live;
    size_t cell;
  };
  const Tokenizer& tok = *loaded.tokenizer;
  DecodeBatcher batcher(*loaded.model, [&](int32_t id) { return tok.is_end_of_generation(id); });
  std::list<Live> live;
  std::map<size_t, Owner> owners;  // ticket -> the cell that asked
  const auto ask = [&](Live& l, size_t cell) {
    const GridQuestion& q = contexts[l.index].questions[l.question[cell]];
    const size_t ticket = batcher.add({l.p.caches[cell],
                                       &l.p.prompt.question_ids[l.question[cell]],
                                       l.p.first_positions[cell],
                                       q.max_new_tokens,
                                       {}});
    owners[ticket] = {&l, cell};
  };
  // Longest answers first: a context whose cells decode many tokens then overlaps with
  // several short ones, instead of decoding alone in small steps at the end.
  std::vector<size_t> order(contexts.size());
  std::iota(order.begin(), order.end(), 0);
  const auto longest_answer = [&](size_t i) {
    int n = 0;
    for (const GridQuestion& q : contexts[i].questions) n = std::max(n, q.max_new_tokens);
    return n;
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return longest_answer(a) > longest_answer(b); });
  size_t next = 0;
  for (;;) {
    // Keep `live_contexts` contexts answering: a finished one's place goes to the next, whose
    // questions join the decode steps of the others.
    while (live.size() < live_contexts && next < contexts.size()) {
      Live& l = live.emplace_back();
      l.index = order[next++];
      try {
        l.p = prefill_context(loaded, contexts[l.index], l.result);
      } catch (const Error& e) {
        if (contexts[l.index].label.empty()) throw;
        throw Error(contexts[l.index].label + ": " + e.what());
      }
      l.cells_left = l.p.caches.size();
      l.question.assign(l.cells_left, 0);
      for (size_t c = 0; c < l.cells_left; ++c) ask(l, c);
    }
    if (live.empty()) return;
    // Each step's time goes to the contexts in proportion to the rows they fed.
    std::map<Live*, int64_t> rows;
    int64_t total_rows = 0;
    for (const DecodeBatcher::Planned& r : batcher.planned()) {
      rows[owners.at(r.ticket).live] += r.rows;
      total_rows += r.rows;
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<DecodeBatcher::Finished> finished = batcher.step();
    const double step_s = seconds_since(t0);
    for (const auto& [l, n] : rows) {
      l->result.answer_s += step_s * static_cast<double>(n) / static_cast<double>(total_rows);
    }
    for (DecodeBatcher::Finished& f : finished) {
      const Owner o = owners.at(f.ticket);
      owners.erase(f.ticket);
      Live& l = *o.live;
      l.result.cells[o.cell].answers.push_back(tok.decode(f.tokens));
      l.p.caches[o.cell]->truncate(l.p.lengths[o.cell]);
      if (++l.question[o.cell] < contexts[l.index].questions.size()) {
        ask(l, o.cell);
      } else {
        --l.cells_left;
      }
    }
    for (auto it = live.begin(); it != live.end();) {
      if (it->cells_left > 0) {
        ++it;
        continue;
      }
      on_done(it->index, std::move(it->result));
      it = live.erase(it);
    }
  }
}

std::vector<GridContextResult> run_grid_contexts(LoadedModel& loaded,
                                                 const std::vector<GridContext>& contexts) {
  std::vector<GridContextResult> results(contexts.size());
  run_grid_stream(loaded, contexts, std::max<size_t>(1, contexts.size()),
                  [&](size_t i, GridContextResult&& r) { results[i] = std::move(r); });
  return results;
}

GridContextResult run_grid_context(LoadedModel& loaded, const std::string& context,
                                   const std::vector<GridQuestion>& questions,
                                   const std::vector<Press*>& cells) {
  return run_grid_contexts(loaded, {GridContext{context, questions, cells, ""}})[0];
}

}  // namespace kvp
