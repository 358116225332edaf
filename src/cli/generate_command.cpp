#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "backend/factory.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "pipeline/pipeline.h"
#include "presses/registry.h"

namespace kvp {

namespace {

std::string fixed(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

const std::vector<OptionSpec> kSpecs = {
    {"model", "PATH", "GGUF file or Hugging Face directory (default: the fetched SmolLM2-135M)"},
    {"context", "TEXT|@FILE", "the context to read (required; a file of at most 16 MiB)"},
    {"question", "TEXT", "a question about the context (required)", true},
    {"max-new-tokens", "N", "answer length limit in tokens (default 64)"},
    {"answer-prefix", "TEXT", "text the answer starts with (prefilled after the question)"},
    {"temperature", "T", "sample at this temperature, in [0, 100] (default 0: greedy)"},
    {"top-p", "P", "sample from the most likely tokens whose mass reaches P (default 1)"},
    {"top-k", "K", "sample from the K most likely tokens (default 0: all)"},
    {"seed", "N", "the sampler's seed; question i uses N + i (default 0)"},
    {"max-context-length", "N", "truncate the context to N tokens"},
    {"press", "NAME",
     "compress the context's KV cache with this press (`kvpress presses` lists them)"},
    {"ratio", "R", "fraction of the context's KV cache to remove, in [0, 1) (default 0.5)"},
    {"press-arg", "KEY=VALUE", "a press parameter", true},
    {"budget-rounding", "nearest|kvpress",
     "rows kept out of T: nearest to T*(1-R) (default), or kvpress's int(T*(1-R))"},
    {"no-chat-template", "", "feed the raw text, without the model's chat template"},
    {"kv-dtype", "f32|f16|bf16",
     "how the KV cache stores its rows (default f32; f16 and bf16 halve it)"},
    {"device", "NAME",
     "where the model runs: cpu (default; `kvpress --version` lists this build's)"},
    {"threads", "N", "CPU threads (default: all cores)"},
    {"json", "", "print one JSON object instead of text"},
    {"help", "", "show this help"},
};

// One line: the ratio, the context's bytes before and after, the reserve apart (it is part of
// what remains, not of the saving) and, for a head-wise press, the spread of kept rows per
// kv head (--json lists every head).
void print_compression_summary(const Press& press, const PipelineResult& r) {
  const double mib = 1024.0 * 1024.0;
  std::string line = "press " + press.name() + ": achieved ratio " + fixed(r.achieved_ratio, 3) +
                     ", context KV cache " + fixed(r.context_bytes_before / mib, 2) + " -> " +
                     fixed(r.context_bytes_after / mib, 2) + " MiB, plus " +
                     fixed(r.reserve_bytes / mib, 2) + " MiB reserved for the question and answer";
  std::vector<int64_t> lens;
  for (const auto& layer : r.head_lens) lens.insert(lens.end(), layer.begin(), layer.end());
  std::sort(lens.begin(), lens.end());
  if (!lens.empty() && lens.front() != lens.back())
    line += "; kept rows per kv head min/median/max " + std::to_string(lens.front()) + "/" +
            std::to_string(lens[lens.size() / 2]) + "/" + std::to_string(lens.back());
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace

int cmd_generate(const std::vector<std::string>& argv) {
  const Args args = Args::parse(argv, kSpecs);
  if (args.has("help")) {
    std::cout << format_help(
        "kvpress generate --context TEXT|@FILE --question TEXT [options]",
        "Reads the context once, then answers each question from the shared KV cache.", kSpecs);
    return 0;
  }
  check(args.has("context"), "--context is required (text, or @file to read it from a file)");
  check(args.has("question"), "at least one --question is required");
  const std::string context = read_text_argument(args.get("context"), "context");
  check(!context.empty(), "the context is empty");
  PipelineOptions options;
  options.max_new_tokens = args.get_int("max-new-tokens", 64, 0, 1 << 20);
  options.answer_prefix = args.get("answer-prefix");
  options.sampling.temperature = args.get_double("temperature", 0);
  options.sampling.top_p = args.get_double("top-p", 1);
  options.sampling.top_k = args.get_int("top-k", 0, 0, 1 << 30);
  options.sampling.seed = static_cast<uint64_t>(args.get_int("seed", 0, 0, INT32_MAX));
  options.sampling.validate();
  check(
      !options.sampling.greedy() || (!args.has("top-p") && !args.has("top-k") && !args.has("seed")),
      "--top-p, --top-k and --seed need --temperature above 0 (0 decodes greedily)");
  options.max_context_length = args.get_int("max-context-length", 0, 1, 1 << 30);
  const int threads = args.get_int("threads", default_threads(), 1, 256);
  const std::string model_path = args.has("model") ? args.get("model") : default_model_path();

  const BudgetRounding rounding = parse_budget_rounding(args.get("budget-rounding", "nearest"));
  std::unique_ptr<Press> press;
  if (args.has("press")) {
    press = make_press(args.get("press"), args.get_double("ratio", 0.5), args.all("press-arg"),
                       rounding);
  } else {
    check(!args.has("ratio") && !args.has("press-arg"), "--ratio and --press-arg need --press");
  }

  auto backend = make_backend(args.get("device", "cpu"), threads);
  const DType kv_dtype = parse_kv_dtype(args.get("kv-dtype", "f32"));
  LoadedModel loaded = load(model_path, *backend, !args.has("no-chat-template"));
  loaded.model->set_kv_dtype(kv_dtype);
  Pipeline pipeline(loaded);
  const PipelineResult r = pipeline.run(context, args.all("question"), options, press.get());

  const double decode_s = r.decode_s();
  const double tok_s = decode_s > 0 ? static_cast<double>(r.decode_tokens()) / decode_s : 0;
  if (args.has("json")) {
    nlohmann::json j;
    j["model"] = model_path;
    j["context_tokens"] = r.context_tokens;
    j["sampling"] = {{"temperature", options.sampling.temperature},
                     {"top_p", options.sampling.top_p},
                     {"top_k", options.sampling.top_k},
                     {"seed", options.sampling.seed}};
    j["answers"] = nlohmann::json::array();
    for (const auto& a : r.answers) {
      j["answers"].push_back(
          {{"question", a.question}, {"answer", a.text}, {"tokens", a.tokens.size()}});
    }
    j["timing"] = {{"prefill_s", r.context_prefill_s},
                   {"prefill_tokens_per_s", r.context_tokens / std::max(r.context_prefill_s, 1e-9)},
                   {"decode_s", decode_s},
                   {"decode_tokens_per_s", tok_s},
                   {"compress_s", r.compress_s},
                   {"threads", threads},
                   {"device", backend->name()}};
    if (press) {
      j["press"] = {{"name", press->name()},
                    {"ratio", press->compression_ratio()},
                    {"params", press->params()},
                    {"budget_rounding", budget_rounding_name(press->budget_rounding())}};
    }
    j["compression"] = {{"achieved_ratio", r.achieved_ratio},
                        {"kv_dtype", lowercase_dtype(kv_dtype)},
                        {"context_kv_bytes_before", r.context_bytes_before},
                        {"context_kv_bytes_after", r.context_bytes_after},
                        {"reserve_kv_bytes", r.reserve_bytes},
                        {"allocated_kv_bytes", r.allocated_bytes},
                        {"head_lens", r.head_lens}};
    std::cout << j.dump(2) << "\n";
  } else {
    for (const auto& a : r.answers) {
      std::cout << "Q: " << a.question << "\nA: " << a.text << "\n\n";
    }
    if (press) print_compression_summary(*press, r);
    std::fprintf(
        stderr, "context %lld tokens, prefill %.2f s (%.0f tok/s), decode %.1f tok/s, %d threads\n",
        static_cast<long long>(r.context_tokens), r.context_prefill_s,
        r.context_tokens / std::max(r.context_prefill_s, 1e-9), tok_s, threads);
  }
  return 0;
}

}  // namespace kvp
