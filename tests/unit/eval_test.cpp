// The evaluation harness without a model: the RULER-style generator (deterministic, fitted
// to the length, answers really in the context), the scorer, JSONL validation.
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "eval/dataset.h"
#include "eval/report.h"
#include "eval/ruler.h"
#include "eval/runner.h"

namespace kvp {

namespace {

// About four characters a token: enough to test fitting without a tokenizer.
int64_t fake_count(const std::string& text) {
  return static_cast<int64_t>(text.size() / 4);
}

std::vector<EvalRow> generate(uint64_t seed, int64_t length = 600, int samples = 2) {
  RulerOptions o;
  o.context_length = length;
  o.samples = samples;
  o.seed = seed;
  return generate_ruler(o, fake_count);
}

void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing: " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Ruler, SameSeedSameRowsOtherSeedOtherRows) {
  const auto a = generate(7), b = generate(7), c = generate(8);
  ASSERT_EQ(a.size(), ruler_tasks().size() * 2);
  ASSERT_EQ(a.size(), c.size());
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].context, b[i].context);
    EXPECT_EQ(a[i].question, b[i].question);
    EXPECT_EQ(a[i].answers, b[i].answers);
    differ += a[i].context != c[i].context ? 1 : 0;
    EXPECT_NE(a[i].answers, c[i].answers) << a[i].task;
  }
  EXPECT_EQ(differ, static_cast<int>(a.size()));
  // Two samples of one task differ too.
  EXPECT_NE(a[0].context, a[1].context);
}

TEST(Ruler, RowsFitTheLengthAndHoldTheirAnswers) {
  for (int64_t length : {300, 1200}) {
    const auto rows = generate(3, length, 1);
    std::set<std::string> tasks;
    for (const auto& r : rows) {
      tasks.insert(r.task);
      const int64_t n = fake_count(r.context);
      EXPECT_LE(n, length) << r.task;
      if (r.task != "cwe") {
        EXPECT_GE(n, length * 3 / 4) << r.task << " is far below the length";
      }
      ASSERT_FALSE(r.answers.empty()) << r.task;
      EXPECT_GT(r.max_new_tokens, 0);
      EXPECT_FALSE(r.question.empty());
      for (const auto& a : r.answers)
        EXPECT_NE(r.context.find(a), std::string::npos) << r.task << ": " << a;
    }
    EXPECT_EQ(tasks.size(), ruler_tasks().size());
  }
  const auto rows = generate(3, 600, 1);
  for (const auto& r : rows) {
    if (r.task == "niah_multivalue" || r.task == "niah_multiquery") {
      EXPECT_EQ(r.answers.size(), 4u) << r.task;
    }
    if (r.task == "vt") {
      EXPECT_EQ(r.answers.size(), 5u);
    }
    if (r.task == "cwe") {
      EXPECT_EQ(r.answers.size(), 10u);
    }
    if (r.task == "fwe") {
      EXPECT_EQ(r.answers.size(), 3u);
    }
    if (r.task == "niah_single_1") {
      EXPECT_NE(r.context.find("The grass is green."), std::string::npos);
    }
    if (r.task == "niah_single_3") {
      EXPECT_EQ(r.answers[0].size(), 36u);  // a UUID
    }
  }
}

TEST(Ruler, CustomHaystackAndErrors) {
  RulerOptions o;
  o.context_length = 400;
  o.samples = 1;
  o.tasks = {"niah_single_2"};
  o.haystack = "Zebras graze in the morning. Owls hunt at night. Rivers run to the sea.";
  const auto rows = generate_ruler(o, fake_count);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_NE(rows[0].context.find("Owls hunt at night."), std::string::npos);
  EXPECT_FALSE(default_haystack().empty());
  EXPECT_NE(default_haystack().find("lighthouse"), std::string::npos);

  o.tasks = {"niah_single_9"};
  expect_error([&] { generate_ruler(o, fake_count); }, "unknown task 'niah_single_9'");
  o.tasks = {"vt"};
  o.context_length = 20;
  expect_error([&] { generate_ruler(o, fake_count); },
               "--context-length 20 is too short for the task 'vt'");
}

TEST(Scorer, RulerStringMatch) {
  EXPECT_DOUBLE_EQ(score_answer(" 4719.", {"4719"}, "all"), 1.0);
  EXPECT_DOUBLE_EQ(score_answer("The code is 4718", {"4719"}, "all"), 0.0);
  EXPECT_DOUBLE_EQ(score_answer("apple, Banana", {"apple", "banana", "cherry", "date"}, "all"),
                   0.5);  // case-insensitive
  EXPECT_DOUBLE_EQ(score_answer("APPLE", {"apple", "banana"}, "any"), 1.0);
  EXPECT_DOUBLE_EQ(score_answer("kiwi", {"apple", "banana"}, "any"), 0.0);
  EXPECT_DOUBLE_EQ(score_answer("", {"a"}, "all"), 0.0);
  EXPECT_DOUBLE_EQ(score_answer("anything", {}, "all"), 0.0);
}

TEST(Jsonl, ValidRows) {
  const auto rows = parse_jsonl(
      R"({"context": "c1", "question": "q1", "answers": ["a"]}
)"
      "\n"
      R"({"context": "c2", "question": "q2", "answers": ["x", "y"], "answer_prefix": "A:", "task": "qa_x", "max_new_tokens": 5})",
      "d.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].task, "jsonl");
  EXPECT_EQ(rows[0].metric, "all");
  EXPECT_EQ(rows[1].line, 3);
  EXPECT_EQ(rows[1].metric, "any");  // qa tasks: any reference counts
  EXPECT_EQ(rows[1].max_new_tokens, 5);
  EXPECT_EQ(rows[1].answer_prefix, "A:");
}

TEST(Jsonl, ErrorsNameTheFirstBadLine) {
  const std::string good = R"({"context": "c", "question": "q", "answers": ["a"]})";
  auto bad = [&](const std::string& line, const std::string& fragment) {
    expect_error(
        [&] { parse_jsonl(good + "\n" + good + "\n" + line + "\n" + "{oops\n", "d.jsonl"); },
        "d.jsonl line 3: ");
    expect_error([&] { parse_jsonl(good + "\n" + line + "\n", "d.jsonl"); }, fragment);
  };
  bad("{not json", "not valid JSON");
  bad("[1, 2]", "expected a JSON object");
  bad(R"({"question": "q", "answers": ["a"]})", "missing \"context\"");
  bad(R"({"context": "", "question": "q", "answers": ["a"]})", "\"context\" is empty");
  bad(R"({"context": "c", "answers": ["a"]})", "missing \"question\"");
  bad(R"({"context": "c", "question": "q"})", "missing \"answers\"");
  bad(R"({"context": "c", "question": "q", "answers": []})", "non-empty list of strings");
  bad(R"({"context": "c", "question": "q", "answers": "a"})", "non-empty list of strings");
  bad(R"({"context": "c", "question": "q", "answers": [1]})", "non-empty list of strings");
  bad(R"({"context": 5, "question": "q", "answers": ["a"]})", "\"context\" must be a string");
  bad(R"({"context": "c", "question": "q", "answers": ["a"], "max_new_tokens": 0})",
      "positive integer");
  bad(R"({"context": "c", "question": "q", "answers": ["a"], "metric": "some"})",
      "\"metric\" must be");
  bad(R"({"context": "c", "question": "q", "answers": ["a"], "contxt": "c"})",
      "unknown field \"contxt\"");
  expect_error([] { parse_jsonl("\n  \n", "e.jsonl"); }, "e.jsonl: no rows");
  expect_error([] { load_jsonl("/nonexistent/d.jsonl"); }, "cannot read dataset file");
}

TEST(Report, TablesAndPlot) {
  const std::vector<TaskScore> s = {{"baseline", 0, "a", 100, 2}, {"baseline", 0, "b", 50, 2},
                                    {"knorm", 0.25, "a", 100, 2}, {"knorm", 0.25, "b", 0, 2},
                                    {"knorm", 0.5, "a", 50, 2},   {"knorm", 0.5, "b", 0, 2}};
  const auto avg = cell_averages(s);
  ASSERT_EQ(avg.size(), 3u);
  EXPECT_DOUBLE_EQ(avg[0].score, 75);
  EXPECT_DOUBLE_EQ(avg[2].score, 25);
  const std::string md = results_markdown(s);
  EXPECT_NE(md.find("| press | none | 0.25 | 0.5 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| baseline | 75.0 |  |  |"), std::string::npos) << md;
  EXPECT_NE(md.find("| knorm |  | 50.0 | 25.0 |"), std::string::npos) << md;
  EXPECT_EQ(results_csv(s).substr(0, 46), "press,ratio,task,score,n\nbaseline,0.0,a,100.00");
  const std::string svg = results_svg(s, "T <&>", "sub");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("T &lt;&amp;&gt;"), std::string::npos);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find("knorm"), std::string::npos);
}

TEST(Report, MarkdownCellsKeepTheTable) {
  EXPECT_EQ(markdown_cell("a|b"), "a\\|b");
  EXPECT_EQ(markdown_cell("two\nlines"), "two lines");
  const std::string md = results_markdown({{"baseline", 0, "x|y", 50, 1}});
  EXPECT_NE(md.find("| x\\|y |"), std::string::npos) << md;
}

// The progress line's ETA under continuous batching: 33 contexts, 8 live at once, each
// taking 10 s of the machine, so the first 8 finish together at 80 s and the rest follow
// one every 10 s. Extrapolating from the first finished context said 42m40s when 4m10s
// remained.
TEST(Progress, FirstEtaIsNotOffByTheBatchSize) {
  const int total = 33, batch = 8;
  const double per_context = 10;
  bool shown = false;
  for (int done = 1; done <= total; ++done) {
    const double t = done <= batch ? batch * per_context : (done)*per_context;
    const std::string eta = eta_text(done, total, t, batch);
    if (eta == "?") continue;
    if (!shown) {
      shown = true;
      const double truth = (total - done) * per_context;
      // "4m10s" -> seconds
      const double shown_s =
          std::stoi(eta.substr(0, eta.find('m'))) * 60.0 + std::stoi(eta.substr(eta.find('m') + 1));
      EXPECT_NEAR(shown_s, truth, 0.25 * truth) << eta << " at " << done;
    }
  }
  EXPECT_TRUE(shown);
  EXPECT_EQ(eta_text(0, 5, 0, 1), "?");
  EXPECT_EQ(eta_text(1, 5, 10, 1), "0m40s");  // no batching: plain extrapolation
}

}  // namespace kvp
