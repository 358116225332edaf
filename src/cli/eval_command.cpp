#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "backend/backend.h"
#include "backend/factory.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "eval/dataset.h"
#include "eval/grid.h"
#include "eval/ruler.h"
#include "eval/runner.h"
#include "pipeline/pipeline.h"

namespace kvp {

namespace {

const std::vector<OptionSpec> kSpecs = {
    {"model", "PATH", "GGUF file or Hugging Face directory (default: the fetched SmolLM2-135M)"},
    {"dataset", "builtin:ruler|FILE.jsonl",
     "the built-in RULER-style tasks, or a JSONL file (context, question, answers, optional "
     "answer_prefix, task, "
     "max_new_tokens, metric)"},
    {"press", "NAME[,NAME...]",
     "presses to evaluate (`kvpress presses` lists them); the baseline is always included"},
    {"ratio", "R[,R...]", "compression ratios, each in [0, 1)"},
    {"press-arg", "[PRESS:]KEY=VALUE",
     "a press parameter, for every press that has it or for one press", true},
    {"context-length", "N", "builtin: context length in tokens (default 1024)"},
    {"samples", "N", "rows per task (builtin: default 4; JSONL: the first N of each task)"},
    {"seed", "S", "builtin: random seed (default 42)"},
    {"tasks", "A,B,...", "only these tasks"},
    {"haystack", "FILE", "builtin: prose for the text haystack (default: the built-in text)"},
    {"max-new-tokens", "N", "answer length limit for every row (default: each task's own)"},
    {"budget-rounding", "nearest|kvpress",
     "rows kept out of T: nearest to T*(1-R) (default), or kvpress's int(T*(1-R))"},
    {"kv-dtype", "f32|f16|bf16",
     "how the KV cache stores its rows (default f32; f16 and bf16 halve it)"},
    {"device", "NAME",
     "where the model runs: cpu (default; `kvpress --version` lists this build's)"},
    {"threads", "N", "CPU threads (default: all cores)"},
    {"out", "DIR",
     "output directory (default eval_out); finished cells found there are not run again"},
    {"context-batch", "N",
     "contexts whose cells answer at once in batched forwards (default 8): a context that "
     "finishes makes room for the next, so decode steps stay full; memory: N full caches"},
    {"separate", "",
     "prefill the context once per cell instead of once for the whole grid (slower; for "
     "comparison)"},
    {"no-progress", "", "no progress bar"},
    {"json", "", "print results.json instead of the table"},
    {"help", "", "show this help"},
};

std::vector<std::string> split_list(const std::string& s, const std::string& what) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    check(!item.empty(), what + " has an empty item in '" + s + "'");
    out.push_back(item);
  }
  check(!out.empty() && s.back() != ',', what + " has an empty item in '" + s + "'");
  return out;
}

std::vector<double> parse_ratios(const std::string& s) {
  std::vector<double> out;
  for (const auto& item : split_list(s, "--ratio")) {
    size_t used = 0;
    double r = 0;
    try {
      r = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used == item.size(), "--ratio expects numbers, got '" + item + "'");
    check(r >= 0 && r < 1, "--ratio " + item + " is outside [0, 1)");
    check(std::find(out.begin(), out.end(), r) == out.end(), "--ratio lists " + item + " twice");
    out.push_back(r);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

int cmd_eval(const std::vector<std::string>& argv) {
  const Args args = Args::parse(argv, kSpecs);
  if (args.has("help")) {
    std::cout << format_help(
        "kvpress eval --dataset builtin:ruler|FILE.jsonl --press NAME[,NAME...] --ratio R[,R...] "
        "[options]",
        "Scores presses on long-context tasks. One prefill of each context serves the whole grid "
        "of presses and\n"
        "ratios (and the uncompressed baseline). Writes results.csv, results.json, results.md and "
        "results.svg\n"
        "into --out, keeping each finished row there so an interrupted run resumes.",
        kSpecs);
    return 0;
  }
  check(args.has("dataset"), "--dataset is required (builtin:ruler or a JSONL file)");
  check(args.has("press"), "--press is required (one or more press names, comma-separated)");
  check(args.has("ratio"), "--ratio is required (one or more ratios, comma-separated)");

  EvalConfig config;
  config.budget_rounding = parse_budget_rounding(args.get("budget-rounding", "nearest"));
  config.presses = split_list(args.get("press"), "--press");
  config.ratios = parse_ratios(args.get("ratio"));
  config.press_args = args.all("press-arg");
  config.max_new_tokens = args.get_int("max-new-tokens", 0, 1, 1 << 20);
  config.out_dir = args.get("out", "eval_out");
  config.separate = args.has("separate");
  config.context_batch = args.get_int("context-batch", 8, 1, 1024);
  config.progress = !args.has("no-progress");
  config.dataset = args.get("dataset");
  grid_cells(config);  // unknown presses and bad parameters fail before the model loads

  const std::string dataset = args.get("dataset");
  const bool builtin = dataset.rfind("builtin:", 0) == 0;
  std::vector<std::string> tasks;
  if (args.has("tasks")) tasks = split_list(args.get("tasks"), "--tasks");
  const int samples = args.get_int("samples", builtin ? 4 : 0, 1, 1 << 20);
  config.samples = samples;
  std::vector<EvalRow> rows;
  RulerOptions ruler;
  if (builtin) {
    check(dataset == "builtin:ruler",
          "unknown built-in dataset '" + dataset + "' (available: builtin:ruler)");
    for (const auto& t : tasks) check_ruler_task(t);
    ruler.context_length = args.get_int("context-length", 1024, 1, 1 << 30);
    ruler.samples = samples;
    ruler.seed = static_cast<uint64_t>(args.get_int("seed", 42, 0, 1 << 30));
    ruler.tasks = tasks;
    config.context_length = ruler.context_length;
    config.seed = static_cast<int64_t>(ruler.seed);
    if (args.has("haystack")) {
      ruler.haystack = read_text_argument("@" + args.get("haystack"), "haystack");
      check(!ruler.haystack.empty(), "the haystack file '" + args.get("haystack") + "' is empty");
    }
  } else {
    for (const char* o : {"context-length", "seed", "haystack"}) {
      check(!args.has(o), std::string("--") + o + " applies to builtin:ruler only");
    }
    rows = load_jsonl(dataset);
    if (!tasks.empty()) {
      std::vector<std::string> present;
      for (const auto& r : rows) {
        if (std::find(present.begin(), present.end(), r.task) == present.end())
          present.push_back(r.task);
      }
      for (const auto& t : tasks) {
        if (std::find(present.begin(), present.end(), t) != present.end()) continue;
        std::string list;
        for (const auto& p : present) list += (list.empty() ? "" : ", ") + p;
        throw Error("unknown task '" + t + "': " + dataset + " has the tasks " + list);
      }
      std::erase_if(rows, [&](const EvalRow& r) {
        return std::find(tasks.begin(), tasks.end(), r.task) == tasks.end();
      });
    }
    if (samples > 0) {
      std::map<std::string, int> seen;
      std::erase_if(rows, [&](const EvalRow& r) { return ++seen[r.task] > samples; });
    }
  }

  const int threads = args.get_int("threads", default_threads(), 1, 256);
  const std::string model_path = args.has("model") ? args.get("model") : default_model_path();
  auto backend = make_backend(args.get("device", "cpu"), threads);
  const DType kv_dtype = parse_kv_dtype(args.get("kv-dtype", "f32"));
  LoadedModel loaded = load(model_path, *backend);
  loaded.model->set_kv_dtype(kv_dtype);
  const int64_t max_positions = loaded.model->config().max_positions;
  const Tokenizer& tok = *loaded.tokenizer;
  config.model_id = model_path;

  std::string note;
  if (builtin) {
    // Room for the chat template, the question and the answer on top of the context.
    const int64_t overhead = context_token_count(loaded, "x") + 160;
    check(ruler.context_length + overhead <= max_positions,
          "--context-length " + std::to_string(ruler.context_length) +
              " does not fit the model: it holds " + std::to_string(max_positions) +
              " positions, and the template, question and answer need about " +
              std::to_string(overhead) + " more (use at most " +
              std::to_string(max_positions - overhead) + ")");
    rows = generate_ruler(ruler, [&](const std::string& text) {
      return static_cast<int64_t>(tok.encode(text).size());
    });
    note = std::to_string(ruler.context_length) + "-token contexts";
  } else {
    for (const auto& r : rows) {  // every row must fit before the first one runs
      const int64_t need =
          context_token_count(loaded, r.context) +
          static_cast<int64_t>(tok.encode(r.question + r.answer_prefix).size()) + 16 +
          (config.max_new_tokens > 0 ? config.max_new_tokens
                                     : (r.max_new_tokens > 0 ? r.max_new_tokens : 64));
      check(need <= max_positions, dataset + " line " + std::to_string(r.line) +
                                       ": context, question and answer need " +
                                       std::to_string(need) + " positions; the model holds " +
                                       std::to_string(max_positions));
    }
  }

  const EvalSummary s = run_eval(loaded, rows, config, note);
  if (args.has("json")) {
    std::ifstream in(std::filesystem::path(config.out_dir) / "results.json");
    std::cout << in.rdbuf();
  } else {
    const std::string md = results_markdown(s.scores);
    std::cout << md.substr(0, md.find("\n\n") + 1);
  }
  std::fprintf(stderr,
               "%d contexts (%d run, %d already in %s), %zu rows, %.1f s wall (prefill %.1f s, "
               "compression %.1f s, answers %.1f s)\n",
               s.contexts, s.contexts_run, s.contexts - s.contexts_run, config.out_dir.c_str(),
               rows.size(), s.wall_s, s.prefill_s, s.compress_s, s.answer_s);
  std::fprintf(stderr, "results in %s/: results.md, results.csv, results.json, results.svg\n",
               config.out_dir.c_str());
  return 0;
}

}  // namespace kvp
