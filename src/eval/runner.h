#pragma once
// The evaluation loop: rows grouped by context, one grid prefill per context for every
// (press, ratio) cell plus the baseline, a few contexts answering at once, per-row results
// appended to DIR/cells.jsonl as each context finishes (so an interrupted run resumes where
// it stopped), then the reports.
#include <cstdint>
#include <string>
#include <vector>

#include "eval/dataset.h"
#include "eval/report.h"
#include "pipeline/pipeline.h"

namespace kvp {

struct EvalConfig {
  std::vector<std::string> presses;  // the baseline is always added
  std::vector<double> ratios;
  // "key=value" goes to every press that has the parameter; "press:key=value" to one press.
  std::vector<std::string> press_args;
  int max_new_tokens = 0;  // > 0 overrides every row's own limit; rows without one use 64
  std::string out_dir = "eval_out";
  std::string model_id;   // part of the resume key
  bool separate = false;  // one prefill per cell instead of the grid (for speed comparisons)
  // Contexts whose cells answer at once in the same batched forwards (run_grid_stream): more
  // rows per decode step, at the memory of that many full caches.
  int context_batch = 8;
  bool progress = true;  // progress bar on stderr
  // What the reports say about the run, so that results.md and results.json read alone.
  std::string dataset;     // "builtin:ruler" or the JSONL path
  int context_length = 0;  // builtin: tokens per context (0: the rows' own)
  int samples = 0;         // rows per task asked for (0: all)
  int64_t seed = -1;       // builtin: the generator's seed (-1: none)
  BudgetRounding budget_rounding = BudgetRounding::Nearest;  // every cell's presses
};

// ETA text for the progress line: "?" until the first batch of contexts has finished. With
// continuous batching the first contexts finish together after about one batch's time, so
// extrapolating from the first one overstates the rest by up to the batch size.
std::string eta_text(int done, int total, double elapsed_s, int batch);

struct EvalSummary {
  std::vector<TaskScore> scores;
  int contexts = 0;
  int contexts_run = 0;        // the rest were already in cells.jsonl
  int64_t context_tokens = 0;  // over the contexts run
  double wall_s = 0;
  double prefill_s = 0;
  double answer_s = 0;  // question prefills and decoding
  double compress_s = 0;
};

struct CellSpec {
  std::string press;  // "baseline": no press
  double ratio = 0;
  std::vector<std::string> args;  // this press's key=value parameters
  BudgetRounding rounding = BudgetRounding::Nearest;
};

// The grid's cells (baseline first), with each press's parameters resolved; throws Error for
// unknown presses, bad ratios or a parameter no press in the grid takes.
std::vector<CellSpec> grid_cells(const EvalConfig& config);

// Runs (or resumes) the evaluation and writes results.csv, results.json, results.md and
// results.svg into config.out_dir.
EvalSummary run_eval(LoadedModel& loaded, const std::vector<EvalRow>& rows,
                     const EvalConfig& config, const std::string& title_note = "");

}  // namespace kvp
