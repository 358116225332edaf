#pragma once
// Compares a press against kvpress's goldens (tests/golden/presses, made by
// tools/reference/press_goldens/make_press_goldens.py): the kept rows per layer and kv head,
// and the greedy answers to the two questions, on the default model.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <set>

#include "backend/backend.h"
#include "backend/factory.h"
#include "io/json_file.h"
#include "model/model.h"
#include "pipeline/pipeline.h"
#include "presses/registry.h"
#include "support/test_paths.h"

namespace kvp::test {

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

inline nlohmann::json press_golden_cell(const std::string& cell) {
  return read_json_file(source_path("tests/golden/presses/" + cell + ".json"));
}

struct PressGoldenResult {
  int64_t decisions = 0;
  int64_t disagreements = 0;
  std::vector<std::vector<int64_t>> head_lens;
};

// Prefills the golden context with `press`, compares kept sets (as sets of original token
// positions) with the cell and the answers' token ids with kvpress's. `min_agreement` is the
// fraction of (layer, head, token) keep/drop decisions that must agree.
inline PressGoldenResult check_press_cell(const std::string& cell, Press& press,
                                          double min_agreement = 0.99, bool check_answers = true) {
  PressGoldenModel& g = press_golden_model();
  const nlohmann::json golden = press_golden_cell(cell);
  const auto context_ids = g.context.at("context_ids").get<std::vector<int32_t>>();
  const int64_t T = static_cast<int64_t>(context_ids.size());
  const int max_new = g.context.at("max_new_tokens").get<int>();
  const auto questions = g.context.at("question_ids").get<std::vector<std::vector<int32_t>>>();
  int64_t longest = 0;
  for (const auto& q : questions)
    longest = std::max<int64_t>(longest, static_cast<int64_t>(q.size()));
  const int64_t reserve = longest + max_new;

  PressHook hook(press, reserve);

  KVCache cache = g.model->make_cache(T + reserve);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  g.model->forward(context_ids.data(), pos.data(), T, cache, &hook);

  PressGoldenResult r;
  r.head_lens = cache.lengths();
  const auto& kept = golden.at("kept");
  EXPECT_EQ(kept.size(), static_cast<size_t>(cache.n_layers())) << cell;
  for (int l = 0; l < cache.n_layers() && l < static_cast<int>(kept.size()); ++l) {
    for (int h = 0; h < cache.n_segments(); ++h) {
      std::vector<bool> ours(static_cast<size_t>(T), false), theirs(static_cast<size_t>(T), false);
      // The cache remembers the token position of every kept row.
      for (int64_t i = 0; i < cache.length(l, h); ++i)
        ours[static_cast<size_t>(cache.positions(l, h)[i])] = true;
      for (int32_t t : kept[l][h].get<std::vector<int32_t>>())
        theirs[static_cast<size_t>(t)] = true;
      for (int64_t t = 0; t < T; ++t) {
        ++r.decisions;
        r.disagreements += ours[static_cast<size_t>(t)] != theirs[static_cast<size_t>(t)];
      }
    }
  }
  const double agreement = 1.0 - static_cast<double>(r.disagreements) /
                                     static_cast<double>(std::max<int64_t>(1, r.decisions));
  std::printf(
      "[ info ] %s: %lld of %lld keep/drop decisions differ from kvpress (agreement %.5f)\n",
      cell.c_str(), static_cast<long long>(r.disagreements), static_cast<long long>(r.decisions),
      agreement);
  EXPECT_GE(agreement, min_agreement) << cell;

  if (check_answers) {
    const auto lens = cache.lengths();
    const int64_t first_position = press.rerotates_keys() ? lens[0][0] : T;
    const auto want = golden.at("answer_ids").get<std::vector<std::vector<int32_t>>>();
    const auto eos = g.context.at("eos_token_ids").get<std::vector<int32_t>>();
    for (size_t q = 0; q < questions.size(); ++q) {
      const auto got = greedy_answer(
          *g.model, cache, questions[q], first_position, max_new,
          [&](int32_t id) { return std::find(eos.begin(), eos.end(), id) != eos.end(); });
      EXPECT_EQ(got, want[q]) << cell << ": answer " << q << " differs from kvpress's";
      cache.truncate(lens);
    }
  }
  return r;
}

}  // namespace kvp::test
