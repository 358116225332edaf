#include "eval/runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
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

EvalSummary run_eval(LoadedModel& loaded, const std::vector<EvalRow>& rows,
                     const EvalConfig& config, const std::string& title_note) {
  namespace fs = std::filesystem;
  const auto t_start = std::chrono::steady_clock::now();
  const std::vector<CellSpec> cells = grid_cells(config);
  check(!rows.empty(), "the dataset has no rows");
  std::error_code ec;
  fs::create_directories(config.out_dir, ec);
  check(!ec && fs::is_directory(config.out_dir),
        "cannot create the output directory '" + config.out_dir + "'");
  const fs::path records_path = fs::path(config.out_dir) / "cells.jsonl";

  // Per-row results from earlier runs: key -> score.
  std::map<std::string, nlohmann::json> done;
  {
    std::ifstream in(records_path);
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
  }

  // Keys of every (row, cell).
  std::vector<std::vector<std::string>> keys(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string h = row_fingerprint(rows[i], row_max_new_tokens(rows[i], config));
    for (const auto& c : cells) keys[i].push_back(cell_key(config.model_id, c, h));
  }
  // Rows sharing a context are answered from one prefill.
  std::vector<std::vector<size_t>> groups;
  {
    std::map<std::string, size_t> by_context;
    for (size_t i = 0; i < rows.size(); ++i) {
      auto [it, fresh] = by_context.emplace(rows[i].context, groups.size());
      if (fresh) groups.emplace_back();
      groups[it->second].push_back(i);
    }
  }
  std::vector<std::vector<size_t>> todo_cells(groups.size());
  int to_run = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t c = 0; c < cells.size(); ++c) {
      bool missing = false;
      for (size_t i : groups[g]) missing = missing || !done.count(keys[i][c]);
      if (missing) todo_cells[g].push_back(c);
    }
    to_run += todo_cells[g].empty() ? 0 : 1;
  }

  EvalSummary summary;
  summary.contexts = static_cast<int>(groups.size());
  Progress progress(to_run, config.progress, config.separate ? 1 : config.context_batch);
  const auto t_loop = std::chrono::steady_clock::now();
  progress.update(0, 0, "");
  std::ofstream records(records_path, std::ios::app);
  check(static_cast<bool>(records), "cannot write " + records_path.string());
  check(config.context_batch >= 1, "the context batch must be at least 1");
  std::vector<size_t> pending;  // context groups with cells to run
  for (size_t g = 0; g < groups.size(); ++g) {
    if (!todo_cells[g].empty()) pending.push_back(g);
  }
  // Every pending context's grid input, with its presses (small objects: settings only).
  std::vector<std::unique_ptr<Press>> owned;
  std::vector<GridContext> inputs;
  for (size_t g : pending) {
    GridContext in;
    const EvalRow& first = rows[groups[g].front()];
    in.context = first.context;
    in.label = first.line > 0 ? "line " + std::to_string(first.line) : "task " + first.task;
    for (size_t i : groups[g]) {
      in.questions.push_back(
          {rows[i].question, rows[i].answer_prefix, row_max_new_tokens(rows[i], config)});
    }
    for (size_t c : todo_cells[g]) {
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
  // Records a finished context: its rows go to cells.jsonl at once, so a run that stops
  // resumes after the last context written.
  const auto record = [&](size_t k, const GridContextResult& r) {
    const size_t g = pending[k];
    summary.prefill_s += r.prefill_s;
    summary.answer_s += r.answer_s;
    summary.context_tokens += r.context_tokens;
    for (size_t c = 0; c < r.cells.size(); ++c) {
      const CellSpec& spec = cells[todo_cells[g][c]];
      summary.compress_s += r.cells[c].compress_s;
      for (size_t q = 0; q < groups[g].size(); ++q) {
        const size_t i = groups[g][q];
        const std::string& text = r.cells[c].answers[q];
        nlohmann::json j = {{"key", keys[i][todo_cells[g][c]]},
                            {"press", spec.press},
                            {"ratio", spec.ratio},
                            {"task", rows[i].task},
                            {"row", i},
                            {"answer", text},
                            {"references", rows[i].answers},
                            {"score", score_answer(text, rows[i].answers, rows[i].metric)}};
        records << j.dump() << "\n";
        done[j["key"].get<std::string>()] = j;
      }
    }
    records.flush();
    ++summary.contexts_run;
    progress.update(summary.contexts_run, seconds_since(t_loop), "");
  };
  if (config.separate) {  // one prefill per cell: the reference the grid is measured against
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
  } else {
    run_grid_stream(loaded, inputs, static_cast<size_t>(config.context_batch),
                    [&](size_t k, GridContextResult&& r) { record(k, r); });
  }

  // Scores per (cell, task), in grid order then task order of first appearance.
  std::vector<std::string> tasks;
  for (const auto& r : rows) {
    if (std::find(tasks.begin(), tasks.end(), r.task) == tasks.end()) tasks.push_back(r.task);
  }
  for (size_t c = 0; c < cells.size(); ++c) {
    for (const auto& t : tasks) {
      TaskScore s{cells[c].press, cells[c].ratio, t, 0, 0};
      for (size_t i = 0; i < rows.size(); ++i) {
        if (rows[i].task != t) continue;
        s.score += done.at(keys[i][c])["score"].get<double>();
        ++s.n;
      }
      s.score = s.n ? 100.0 * s.score / s.n : 0;
      summary.scores.push_back(s);
    }
  }
  summary.wall_s = seconds_since(t_start);

  // Reports.
  const fs::path dir(config.out_dir);
  write_file(dir / "results.csv", results_csv(summary.scores));
  const std::map<std::string, std::string> metrics = task_metrics(rows);
  write_file(dir / "results.md", report_header(config, metrics) + results_markdown(summary.scores));
  int per_task = 0, fewest = 1 << 30;
  for (const auto& s : summary.scores) {
    per_task = std::max(per_task, s.n);
    fewest = std::min(fewest, s.n);
  }
  const std::string rows_each = per_task == 1 ? "1 row each"
                                : fewest == per_task
                                    ? std::to_string(per_task) + " rows each"
                                    : "up to " + std::to_string(per_task) + " rows each";
  const std::string subtitle =
      (config.model_id.empty() ? std::string()
                               : fs::path(config.model_id).filename().string() + ", ") +
      std::to_string(tasks.size()) + " task" + (tasks.size() == 1 ? "" : "s") + ", " + rows_each +
      (title_note.empty() ? "" : ", " + title_note);
  write_file(dir / "results.svg",
             results_svg(summary.scores, "Score vs KV-cache compression", subtitle));
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
  write_file(dir / "results.json", j.dump(2) + "\n");
  return summary;
}

}  // namespace kvp
