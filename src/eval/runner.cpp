#include "eval/runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "eval/grid.h"
#include "presses/press.h"
#include "presses/registry.h"

namespace kvp {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  }
  return buf;
}

}  // namespace

std::string eta_text(int done, int total, double elapsed_s, int batch) {
  if (done >= total) return duration(0);
  if (done <= 0 || done < std::min(std::max(batch, 1), total)) return "?";
  return duration(elapsed_s / done * (total - done));
}

namespace {

class Progress {
 public:
  Progress(int total, bool enabled, int batch)
      : total_(total), batch_(batch), enabled_(enabled && total > 0), tty_(isatty(2) != 0) {}
  void update(int done, double elapsed, const std::string& note) {
    if (!enabled_) return;
    const int width = 28;
    const int fill = total_ ? done * width / total_ : width;
    std::string bar(static_cast<size_t>(fill), '#');
    bar += std::string(static_cast<size_t>(width - fill), '.');
    const std::string eta = eta_text(done, total_, elapsed, batch_);
    std::fprintf(stderr, "%s[%s] %d/%d contexts  %s elapsed  ETA %s  %s%s", tty_ ? "\r" : "",
                 bar.c_str(), done, total_, duration(elapsed).c_str(), eta.c_str(), note.c_str(),
                 tty_ ? "\x1b[K" : "\n");
    if (tty_ && done == total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  int total_, batch_;
  bool enabled_, tty_;
};

std::string row_fingerprint(const EvalRow& r, int max_new_tokens) {
  nlohmann::json j = {{"c", r.context}, {"q", r.question}, {"p", r.answer_prefix}, {"a", r.answers},
                      {"m", r.metric},  {"t", r.task},     {"n", max_new_tokens}};
  return stable_hash(j.dump());
}

std::string cell_key(const std::string& model_id, const CellSpec& c, const std::string& row_hash) {
  std::string args;
  for (const auto& a : c.args) args += a + ";";
  return stable_hash(model_id + "|" + c.press + "|" + format_ratio(c.ratio) + "|" + args + "|" +
                     budget_rounding_name(c.rounding) + "|" + row_hash);
}

int row_max_new_tokens(const EvalRow& r, const EvalConfig& config) {
  if (config.max_new_tokens > 0) return config.max_new_tokens;
  return r.max_new_tokens > 0 ? r.max_new_tokens : 64;
}

// Each task's metric (rows of one task share it; a task with mixed metrics lists them all).
std::map<std::string, std::string> task_metrics(const std::vector<EvalRow>& rows) {
  std::map<std::string, std::string> out;
  for (const auto& r : rows) {
    std::string& m = out[r.task];
    if (m.empty())
      m = r.metric;
    else if (("," + m + ",").find("," + r.metric + ",") == std::string::npos)
      m += "," + r.metric;
  }
  return out;
}

// The title and the settings of results.md, so the file reads alone.
std::string report_header(const EvalConfig& c, const std::map<std::string, std::string>& metrics) {
  std::string md = "# kvpress eval: score against KV-cache compression ratio\n\n";
  md += "- model: `" + markdown_cell(c.model_id) + "`\n";
  md += "- dataset: `" + markdown_cell(c.dataset) + "`";
  if (c.context_length > 0) md += ", " + std::to_string(c.context_length) + "-token contexts";
  if (c.samples > 0) md += ", " + std::to_string(c.samples) + " samples per task";
  if (c.seed >= 0) md += ", seed " + std::to_string(c.seed);
  md += "\n- budget rounding: " + std::string(budget_rounding_name(c.budget_rounding)) + "\n";
  // RULER's names: "all" scores the share of the references found in the answer, "any" 1 when
  // any one is.
  const auto label = [](const std::string& m) {
    return m == "all"   ? std::string("string_match_all")
           : m == "any" ? std::string("string_match_any")
                        : m;
  };
  std::map<std::string, std::vector<std::string>> by_metric;
  for (const auto& [task, metric] : metrics) by_metric[label(metric)].push_back(task);
  md += "- score: the mean row score per task, in percent (metric";
  md += by_metric.size() == 1 ? " " + by_metric.begin()->first : "s by task:";
  if (by_metric.size() > 1)
    for (const auto& [metric, tasks] : by_metric) {
      md += " " + metric + " for";
      for (const auto& t : tasks) md += " " + markdown_cell(t);
      md += ";";
    }
  md += "); averages are over tasks\n\n";
  return md;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  check(static_cast<bool>(out), "cannot write " + path.string());
}

}  // namespace

std::vector<CellSpec> grid_cells(const EvalConfig& config) {
  check(!config.presses.empty(), "--press is required (one or more press names, comma-separated)");
  check(!config.ratios.empty(), "--ratio is required (one or more ratios, comma-separated)");
  for (double r : config.ratios) check_ratio(r, "--ratio");
  // Which press takes which parameter.
  std::map<std::string, std::vector<std::string>> per_press;
  for (const auto& item : config.press_args) {
    const size_t eq = item.find('=');
    check(eq != std::string::npos && eq > 0,
          "--press-arg '" + item + "' is not key=value or press:key=value");
    const size_t colon = item.find(':');
    if (colon != std::string::npos && colon < eq) {
      const std::string press = item.substr(0, colon);
      check(std::find(config.presses.begin(), config.presses.end(), press) != config.presses.end(),
            "--press-arg '" + item + "' names the press '" + press + "', which is not in --press");
      per_press[press].push_back(item.substr(colon + 1));
      continue;
    }
    const std::string key = item.substr(0, eq);
    bool used = false;
    for (const auto& name : config.presses) {
      for (const auto& info : press_catalog()) {
        if (info.name != name) continue;
        for (const auto& p : info.params) {
          if (p.name == key) {
            per_press[name].push_back(item);
            used = true;
          }
        }
      }
    }
    check(used, "--press-arg '" + item + "': no press in the grid has a parameter '" + key + "'");
  }
  std::vector<CellSpec> cells = {{"baseline", 0, {}, config.budget_rounding}};
  for (const auto& name : config.presses) {
    check(name != "baseline", "'baseline' is always in the grid; leave it out of --press");
    check(std::count(config.presses.begin(), config.presses.end(), name) == 1,
          "--press lists '" + name + "' twice");
    for (double r : config.ratios) {
      make_press(name, r, per_press[name]);  // validates name and parameters now
      cells.push_back({name, r, per_press[name], config.budget_rounding});
    }
  }
  return cells;
}

namespace {

using Records = std::map<std::string, nlohmann::json>;  // cells.jsonl: key -> record

// Creates config.out_dir; returns the path of its cells.jsonl.
std::filesystem::path records_path(const EvalConfig& config) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(config.out_dir, ec);
  check(!ec && fs::is_directory(config.out_dir),
        "cannot create the output directory '" + config.out_dir + "'");
  return fs::path(config.out_dir) / "cells.jsonl";
}

// Per-row results from earlier runs.
Records read_records(const std::filesystem::path& path) {
  Records done;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.is_object() && j.contains("key") && j.contains("score"))
        done[j["key"].get<std::string>()] = j;
    } catch (const nlohmann::json::exception&) {
      // a line cut short by an interrupted run: that row is simply run again
    }
  }
  return done;
}

// What a run has to do: the dataset's rows grouped by context, and per group the cells that
// still lack a record for one of its rows.
struct EvalPlan {
  std::vector<std::vector<std::string>> keys;   // per row and cell: its key in cells.jsonl
  std::vector<std::vector<size_t>> groups;      // rows sharing a context, answered from one prefill
  std::vector<std::vector<size_t>> todo_cells;  // per group
  std::vector<size_t> pending;                  // the groups with cells to run
};

EvalPlan plan_eval(const std::vector<EvalRow>& rows, const std::vector<CellSpec>& cells,
                   const EvalConfig& config, const Records& done) {
  EvalPlan plan;
  plan.keys.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string h = row_fingerprint(rows[i], row_max_new_tokens(rows[i], config));
    for (const auto& c : cells) plan.keys[i].push_back(cell_key(config.model_id, c, h));
  }
  std::map<std::string, size_t> by_context;
  for (size_t i = 0; i < rows.size(); ++i) {
    auto [it, fresh] = by_context.emplace(rows[i].context, plan.groups.size());
    if (fresh) plan.groups.emplace_back();
    plan.groups[it->second].push_back(i);
  }
  plan.todo_cells.resize(plan.groups.size());
  for (size_t g = 0; g < plan.groups.size(); ++g) {
    for (size_t c = 0; c < cells.size(); ++c) {
      bool missing = false;
      for (size_t i : plan.groups[g]) missing = missing || !done.count(plan.keys[i][c]);
      if (missing) plan.todo_cells[g].push_back(c);
    }
    if (!plan.todo_cells[g].empty()) plan.pending.push_back(g);
  }
  return plan;
}

// Every pending context's grid input, with its presses (small objects: settings only), which
// `owned` keeps.
std::vector<GridContext> grid_inputs(const std::vector<EvalRow>& rows,
                                     const std::vector<CellSpec>& cells, const EvalConfig& config,
                                     const EvalPlan& plan,
                                     std::vector<std::unique_ptr<Press>>& owned) {
  std::vector<GridContext> inputs;
  for (size_t g : plan.pending) {
    GridContext in;
    const EvalRow& first = rows[plan.groups[g].front()];
    in.context = first.context;
    in.label = first.line > 0 ? "line " + std::to_string(first.line) : "task " + first.task;
    for (size_t i : plan.groups[g]) {
      in.questions.push_back(
          {rows[i].question, rows[i].answer_prefix, row_max_new_tokens(rows[i], config)});
    }
    for (size_t c : plan.todo_cells[g]) {
      const CellSpec& spec = cells[c];
      if (spec.press == "baseline") {
        in.cells.push_back(nullptr);
      } else {
        owned.push_back(make_press(spec.press, spec.ratio, spec.args, spec.rounding));
        in.cells.push_back(owned.back().get());
      }
    }
    inputs.push_back(std::move(in));
  }
  return inputs;
}

// Runs the inputs, each context through run_grid_stream (or, with config.separate, one
// prefill per cell), and calls record(k, result) as context k finishes.
void run_contexts(LoadedModel& loaded, const std::vector<GridContext>& inputs,
                  const EvalConfig& config,
                  const std::function<void(size_t, const GridContextResult&)>& record) {
  if (!config.separate) {
    run_grid_stream(loaded, inputs, static_cast<size_t>(config.context_batch),
                    [&](size_t k, GridContextResult&& r) { record(k, r); });
    return;
  }
  // One prefill per cell: the reference the grid is measured against.
  for (size_t k = 0; k < inputs.size(); ++k) {
    GridContextResult all;
    for (Press* p : inputs[k].cells) {
      GridContext one = inputs[k];
      one.cells = {p};
      GridContextResult r = std::move(run_grid_contexts(loaded, {one})[0]);
      all.prefill_s += r.prefill_s;
      all.answer_s += r.answer_s;
      all.context_tokens = r.context_tokens;
      all.cells.push_back(std::move(r.cells[0]));
    }
    record(k, all);
  }
}

// The records of a finished context: its rows go to cells.jsonl at once (so a run that stops
// resumes after the last context written), and into `done` and the summary's totals.
class Recorder {
 public:
  Recorder(const std::vector<EvalRow>& rows, const std::vector<CellSpec>& cells,
           const EvalPlan& plan, std::ofstream& out, Records& done, EvalSummary& summary)
      : rows_(rows), cells_(cells), plan_(plan), out_(out), done_(done), summary_(summary) {}

  void record(size_t k, const GridContextResult& r) {
    const size_t g = plan_.pending[k];
    summary_.prefill_s += r.prefill_s;
    summary_.answer_s += r.answer_s;
    summary_.context_tokens += r.context_tokens;
    for (size_t c = 0; c < r.cells.size(); ++c) {
      summary_.compress_s += r.cells[c].compress_s;
      const size_t cell = plan_.todo_cells[g][c];
      for (size_t q = 0; q < plan_.groups[g].size(); ++q)
        write(plan_.groups[g][q], cell, r.cells[c].answers[q]);
    }
    out_.flush();
    ++summary_.contexts_run;
  }

 private:
  void write(size_t row, size_t cell, const std::string& answer) {
    const EvalRow& r = rows_[row];
    nlohmann::json j = {{"key", plan_.keys[row][cell]},
                        {"press", cells_[cell].press},
                        {"ratio", cells_[cell].ratio},
                        {"task", r.task},
                        {"row", row},
                        {"answer", answer},
                        {"references", r.answers},
                        {"score", score_answer(answer, r.answers, r.metric)}};
    out_ << j.dump() << "\n";
    done_[j["key"].get<std::string>()] = j;
  }

  const std::vector<EvalRow>& rows_;
  const std::vector<CellSpec>& cells_;
  const EvalPlan& plan_;
  std::ofstream& out_;
  Records& done_;
  EvalSummary& summary_;
};

// Tasks in order of first appearance.
std::vector<std::string> task_order(const std::vector<EvalRow>& rows) {
  std::vector<std::string> tasks;
  for (const auto& r : rows) {
    if (std::find(tasks.begin(), tasks.end(), r.task) == tasks.end()) tasks.push_back(r.task);
  }
  return tasks;
}

// Scores per (cell, task), in grid order then task order, from every row's record.
std::vector<TaskScore> task_scores(const std::vector<EvalRow>& rows,
                                   const std::vector<CellSpec>& cells, const EvalPlan& plan,
                                   const Records& done) {
  const std::vector<std::string> tasks = task_order(rows);
  std::vector<TaskScore> scores;
  for (size_t c = 0; c < cells.size(); ++c) {
    for (const auto& t : tasks) {
      TaskScore s{cells[c].press, cells[c].ratio, t, 0, 0};
      for (size_t i = 0; i < rows.size(); ++i) {
        if (rows[i].task != t) continue;
        s.score += done.at(plan.keys[i][c])["score"].get<double>();
        ++s.n;
      }
      s.score = s.n ? 100.0 * s.score / s.n : 0;
      scores.push_back(s);
    }
  }
  return scores;
}

// The plot's subtitle: model, tasks, rows per task and the caller's note.
std::string plot_subtitle(const EvalConfig& config, const std::vector<EvalRow>& rows,
                          const std::vector<TaskScore>& scores, const std::string& title_note) {
  int per_task = 0, fewest = 1 << 30;
  for (const auto& s : scores) {
    per_task = std::max(per_task, s.n);
    fewest = std::min(fewest, s.n);
  }
  const std::string rows_each = per_task == 1 ? "1 row each"
                                : fewest == per_task
                                    ? std::to_string(per_task) + " rows each"
                                    : "up to " + std::to_string(per_task) + " rows each";
  const size_t tasks = task_order(rows).size();
  return (config.model_id.empty()
              ? std::string()
              : std::filesystem::path(config.model_id).filename().string() + ", ") +
         std::to_string(tasks) + " task" + (tasks == 1 ? "" : "s") + ", " + rows_each +
         (title_note.empty() ? "" : ", " + title_note);
}

nlohmann::json results_json(const EvalConfig& config, const EvalSummary& summary,
                            const std::map<std::string, std::string>& metrics) {
  nlohmann::json j;
  j["model"] = config.model_id;
  j["dataset"] = config.dataset;
  j["context_length"] =
      config.context_length > 0 ? nlohmann::json(config.context_length) : nlohmann::json();
  j["samples_per_task"] = config.samples > 0 ? nlohmann::json(config.samples) : nlohmann::json();
  j["seed"] = config.seed >= 0 ? nlohmann::json(config.seed) : nlohmann::json();
  j["metrics"] = metrics;
  j["score"] = "mean row score per task, in percent; averages are over tasks";
  j["budget_rounding"] = budget_rounding_name(config.budget_rounding);
  j["results"] = nlohmann::json::array();
  for (const auto& s : summary.scores) {
    j["results"].push_back(
        {{"press", s.press}, {"ratio", s.ratio}, {"task", s.task}, {"score", s.score}, {"n", s.n}});
  }
  j["averages"] = nlohmann::json::array();
  for (const auto& c : cell_averages(summary.scores)) {
    j["averages"].push_back(
        {{"press", c.press}, {"ratio", c.ratio}, {"score", c.score}, {"tasks", c.tasks}});
  }
  j["run"] = {{"contexts", summary.contexts},
              {"contexts_run", summary.contexts_run},
              {"context_tokens", summary.context_tokens},
              {"wall_s", summary.wall_s},
              {"prefill_s", summary.prefill_s},
              {"compress_s", summary.compress_s},
              {"answer_s", summary.answer_s},
              {"mode", config.separate ? "separate" : "grid"},
              {"context_batch", config.separate ? 1 : config.context_batch}};
  return j;
}

// results.csv, results.md, results.svg and results.json in config.out_dir.
void write_reports(const EvalConfig& config, const std::vector<EvalRow>& rows,
                   const EvalSummary& summary, const std::string& title_note) {
  const std::filesystem::path dir(config.out_dir);
  write_file(dir / "results.csv", results_csv(summary.scores));
  const std::map<std::string, std::string> metrics = task_metrics(rows);
  write_file(dir / "results.md", report_header(config, metrics) + results_markdown(summary.scores));
  write_file(dir / "results.svg",
             results_svg(summary.scores, "Score vs KV-cache compression",
                         plot_subtitle(config, rows, summary.scores, title_note)));
  write_file(dir / "results.json", results_json(config, summary, metrics).dump(2) + "\n");
}

}  // namespace

EvalSummary run_eval(LoadedModel& loaded, const std::vector<EvalRow>& rows,
                     const EvalConfig& config, const std::string& title_note) {
  const auto t_start = std::chrono::steady_clock::now();
  const std::vector<CellSpec> cells = grid_cells(config);
  check(!rows.empty(), "the dataset has no rows");
  const std::filesystem::path path = records_path(config);
  Records done = read_records(path);
  const EvalPlan plan = plan_eval(rows, cells, config, done);

  EvalSummary summary;
  summary.contexts = static_cast<int>(plan.groups.size());
  Progress progress(static_cast<int>(plan.pending.size()), config.progress,
                    config.separate ? 1 : config.context_batch);
  const auto t_loop = std::chrono::steady_clock::now();
  progress.update(0, 0, "");
  std::ofstream records(path, std::ios::app);
  check(static_cast<bool>(records), "cannot write " + path.string());
  check(config.context_batch >= 1, "the context batch must be at least 1");
  std::vector<std::unique_ptr<Press>> owned;
  const std::vector<GridContext> inputs = grid_inputs(rows, cells, config, plan, owned);
  Recorder recorder(rows, cells, plan, records, done, summary);
  run_contexts(loaded, inputs, config, [&](size_t k, const GridContextResult& r) {
    recorder.record(k, r);
    progress.update(summary.contexts_run, seconds_since(t_loop), "");
  });

  summary.scores = task_scores(rows, cells, plan, done);
  summary.wall_s = seconds_since(t_start);
  write_reports(config, rows, summary, title_note);
  return summary;
}

}  // namespace kvp
