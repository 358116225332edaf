// One prefill for the whole grid: every (press, ratio) cell answers exactly as a run of the
// pipeline with that press alone, and the baseline as the uncompressed pipeline.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "backend/factory.h"
#include "core/error.h"
#include "eval/grid.h"
#include "pipeline/pipeline.h"
#include "presses/registry.h"
#include "support/test_paths.h"

namespace kvp {

TEST(EvalGrid, SamePredictionsAsSeparateRuns) {
  KVP_REQUIRE_DEFAULT_MODEL();
  auto backend = make_backend("cpu", 2);
  LoadedModel m = load(test::default_model_path(), *backend);
  const std::string context =
      "The lighthouse keeper wrote in his notebook every evening. On Monday the wind came from the "
      "north "
      "and a fishing boat named Aurora sheltered in the bay. The secret code of the lighthouse is "
      "4719. "
      "On Tuesday the fog was so thick that the keeper lit the lamp at noon. Remember the code.";
  const std::vector<std::string> questions = {"What is the secret code of the lighthouse?",
                                              "What was the name of the fishing boat?"};
  PipelineOptions options;
  options.max_new_tokens = 8;

  struct Spec {
    std::string name;
    double ratio;
    std::vector<std::string> args;
  };
  const std::vector<Spec> specs = {{"knorm", 0.5, {}},
                                   {"streaming_llm", 0.25, {"n_sink=4"}},
                                   {"snapkv", 0.5, {"window_size=8"}},
                                   {"ada_snapkv", 0.5, {"window_size=8"}}};
  std::vector<std::unique_ptr<Press>> grid_presses;
  std::vector<Press*> cells = {nullptr};
  for (const auto& s : specs) {
    grid_presses.push_back(make_press(s.name, s.ratio, s.args));
    cells.push_back(grid_presses.back().get());
  }
  std::vector<GridQuestion> gq;
  for (const auto& q : questions) gq.push_back({q, "", options.max_new_tokens});
  const GridContextResult grid = run_grid_context(m, context, gq, cells);
  ASSERT_EQ(grid.cells.size(), cells.size());

  Pipeline pipeline(m);
  for (size_t c = 0; c < cells.size(); ++c) {
    std::unique_ptr<Press> own =
        c == 0 ? nullptr : make_press(specs[c - 1].name, specs[c - 1].ratio, specs[c - 1].args);
    const PipelineResult single = pipeline.run(context, questions, options, own.get());
    const std::string label = c == 0 ? "baseline" : specs[c - 1].name;
    EXPECT_EQ(grid.context_tokens, single.context_tokens);
    int64_t kept = 0;
    for (const auto& layer : single.head_lens) {
      for (int64_t len : layer) kept += len;
    }
    EXPECT_EQ(grid.cells[c].kept_rows, kept) << label;
    for (size_t q = 0; q < questions.size(); ++q) {
      EXPECT_EQ(grid.cells[c].answers[q], single.answers[q].text) << label << ", question " << q;
    }
  }
  EXPECT_FALSE(grid.cells[0].answers[0].empty());
}

// Continuous batching: however many contexts answer at once, and in whatever order they
// finish, every context gets the answers it gets on its own; on_done sees each context once.
TEST(EvalGrid, StreamedContextsAnswerAsAlone) {
  KVP_REQUIRE_DEFAULT_MODEL();
  auto backend = make_backend("cpu", 2);
  LoadedModel m = load(test::default_model_path(), *backend);
  const std::vector<std::string> texts = {
      "The harbour master counts 41 boats. The red boat is called Petrel.",
      "Anna keeps her bicycle in the blue shed behind the bakery on Elm Street.",
      "The museum opens at nine. Its oldest map shows a river that no longer exists. The "
      "guide's name is Tomas."};
  // Different answer limits, so contexts finish out of order.
  const std::vector<int> limits = {3, 9, 6};
  std::vector<std::unique_ptr<Press>> owned;
  std::vector<GridContext> contexts;
  for (size_t i = 0; i < texts.size(); ++i) {
    GridContext c;
    c.context = texts[i];
    c.questions = {{"What is written above?", "", limits[i]}, {"Name one thing.", "It is", 2}};
    c.cells = {nullptr};
    for (const char* press : {"knorm", "streaming_llm"}) {
      owned.push_back(make_press(press, 0.5, {}));
      c.cells.push_back(owned.back().get());
    }
    c.label = "context " + std::to_string(i);
    contexts.push_back(std::move(c));
  }
  std::vector<GridContextResult> alone;
  for (const GridContext& c : contexts) alone.push_back(run_grid_contexts(m, {c})[0]);
  for (size_t live : {1, 2, 3}) {
    std::vector<int> seen(contexts.size(), 0);
    std::vector<GridContextResult> got(contexts.size());
    run_grid_stream(m, contexts, live, [&](size_t i, GridContextResult&& r) {
      ASSERT_LT(i, contexts.size());
      ++seen[i];
      got[i] = std::move(r);
    });
    for (size_t i = 0; i < contexts.size(); ++i) {
      EXPECT_EQ(seen[i], 1) << "live " << live << ", context " << i;
      ASSERT_EQ(got[i].cells.size(), alone[i].cells.size());
      EXPECT_EQ(got[i].context_tokens, alone[i].context_tokens);
      for (size_t c = 0; c < got[i].cells.size(); ++c) {
        EXPECT_EQ(got[i].cells[c].answers, alone[i].cells[c].answers)
            << "live " << live << ", context " << i << ", cell " << c;
        EXPECT_EQ(got[i].cells[c].kept_rows, alone[i].cells[c].kept_rows);
      }
      EXPECT_GT(got[i].answer_s, 0) << "each context is charged its share of the steps";
    }
  }
  EXPECT_THROW(run_grid_stream(m, contexts, 0, [](size_t, GridContextResult&&) {}), Error);
  // A bad context names itself.
  contexts[1].context.clear();
  try {
    run_grid_stream(m, contexts, 2, [](size_t, GridContextResult&&) {});
    ADD_FAILURE() << "an empty context must be an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context 1"), std::string::npos) << e.what();
  }
}

}  // namespace kvp
