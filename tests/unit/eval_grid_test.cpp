// One prefill for the whole grid: every (press, ratio) cell answers exactly as a run of the
// pipeline with that press alone, and the baseline as the uncompressed pipeline.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "eval/grid.h"
#include "pipeline/pipeline.h"
#include "presses/registry.h"
#include "support/test_paths.h"

namespace kvp {

TEST(EvalGrid, SamePredictionsAsSeparateRuns) {
  KVP_REQUIRE_DEFAULT_MODEL();
  auto backend = make_cpu_backend(2);
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

}  // namespace kvp
