#pragma once
// Evaluation results: per (press, ratio, task) scores, and their CSV, JSON, Markdown and SVG
// renderings.
#include <string>
#include <vector>

namespace kvp {

struct TaskScore {
  std::string press;  // "baseline" for the uncompressed cache
  double ratio = 0;
  std::string task;
  double score = 0;  // mean row score, in percent
  int n = 0;         // rows
};

struct CellAverage {
  std::string press;
  double ratio = 0;
  double score = 0;  // mean over tasks of the task scores, in percent
  int tasks = 0;
};

// Averages over tasks per (press, ratio), in the order cells first appear.
std::vector<CellAverage> cell_averages(const std::vector<TaskScore>& scores);

std::string format_ratio(double ratio);  // "0.25"
std::string results_csv(const std::vector<TaskScore>& scores);
// Press x ratio table of averages over tasks, then press@ratio x task.
std::string results_markdown(const std::vector<TaskScore>& scores);
// A table cell: '|' escaped and line breaks folded, so a name cannot break the table.
std::string markdown_cell(const std::string& text);
// Average score vs compression ratio, one line per press (each starting at the baseline).
std::string results_svg(const std::vector<TaskScore>& scores, const std::string& title,
                        const std::string& subtitle);

}  // namespace kvp
