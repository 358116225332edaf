// Half-precision KV caches against f32, for every press of the catalog on the press-golden
// context (tests/golden/presses/context.json, 1071 tokens, the default model): the share of
// (layer, kv head, token) keep/drop decisions that agree with the f32 run, and whether the
// greedy answers to the two golden questions are the same tokens. Also the same agreement of
// each run with kvpress's golden kept sets.
//
//   kv_dtype_parity [--threads N] [--ratio R] [--json]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/factory.h"
#include "cli/commands.h"
#include "core/error.h"
#include "io/json_file.h"
#include "pipeline/pipeline.h"
#include "presses/registry.h"

namespace {

using kvp::DType;

struct Spec {
  const char* cell;  // golden cell name without the ratio
  const char* press;
  std::vector<std::string> args;
};

struct Run {
  std::vector<std::vector<std::vector<bool>>> kept;  // [layer][head][token]
  std::vector<std::vector<int32_t>> answers;
};

std::string source_path(const std::string& rel) {
  return std::string(KVP_SOURCE_DIR) + "/" + rel;
}

Run run_press(kvp::Model& model, const nlohmann::json& ctx, kvp::Press& press) {
  const auto ids = ctx.at("context_ids").get<std::vector<int32_t>>();
  const auto questions = ctx.at("question_ids").get<std::vector<std::vector<int32_t>>>();
  const auto eos = ctx.at("eos_token_ids").get<std::vector<int32_t>>();
  const int max_new = ctx.at("max_new_tokens").get<int>();
  const auto T = static_cast<int64_t>(ids.size());
  int64_t longest = 0;
  for (const auto& q : questions)
    longest = std::max<int64_t>(longest, static_cast<int64_t>(q.size()));
  kvp::PressHook hook(press, longest + max_new);
  kvp::KVCache cache = model.make_cache(T + longest + max_new);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  model.forward(ids.data(), pos.data(), T, cache, &hook);
  Run r;
  r.kept.assign(static_cast<size_t>(cache.n_layers()),
                std::vector<std::vector<bool>>(static_cast<size_t>(cache.n_segments()),
                                               std::vector<bool>(static_cast<size_t>(T), false)));
  for (int l = 0; l < cache.n_layers(); ++l)
    for (int h = 0; h < cache.n_segments(); ++h)
      for (int64_t i = 0; i < cache.length(l, h); ++i)
        r.kept[static_cast<size_t>(l)][static_cast<size_t>(h)]
              [static_cast<size_t>(cache.positions(l, h)[i])] = true;
  const auto lens = cache.lengths();
  const int64_t first = press.rerotates_keys() ? lens[0][0] : T;
  for (const auto& q : questions) {
    r.answers.push_back(kvp::greedy_answer(model, cache, q, first, max_new, [&](int32_t id) {
      return std::find(eos.begin(), eos.end(), id) != eos.end();
    }));
    cache.truncate(lens);
  }
  return r;
}

double agreement(const std::vector<std::vector<std::vector<bool>>>& a,
                 const std::vector<std::vector<std::vector<bool>>>& b) {
  int64_t n = 0, same = 0;
  for (size_t l = 0; l < a.size(); ++l)
    for (size_t h = 0; h < a[l].size(); ++h)
      for (size_t t = 0; t < a[l][h].size(); ++t) {
        ++n;
        same += a[l][h][t] == b[l][h][t];
      }
  return n ? static_cast<double>(same) / static_cast<double>(n) : 1.0;
}

std::vector<std::vector<std::vector<bool>>> golden_kept(const std::string& cell, int64_t T) {
  const nlohmann::json g =
      kvp::read_json_file(source_path("tests/golden/presses/" + cell + ".json"));
  std::vector<std::vector<std::vector<bool>>> kept;
  for (const auto& layer : g.at("kept")) {
    kept.emplace_back();
    for (const auto& head : layer) {
      kept.back().emplace_back(static_cast<size_t>(T), false);
      for (int32_t t : head.get<std::vector<int32_t>>())
        kept.back().back()[static_cast<size_t>(t)] = true;
    }
  }
  return kept;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = kvp::default_threads();
  std::string ratio = "0.5";
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--ratio") && i + 1 < argc)
      ratio = argv[++i];
    else if (!std::strcmp(argv[i], "--json"))
      json = true;
    else {
      std::fprintf(stderr, "usage: kv_dtype_parity [--threads N] [--ratio 0.25|0.5] [--json]\n");
      return 2;
    }
  }
  try {
    const std::string filters =
        "filters=" + source_path("tests/golden/presses/qfilter_synthetic.filters.f32");
    const std::vector<Spec> specs = {
        {"knorm", "knorm", {}},
        {"streaming_llm", "streaming_llm", {}},
        {"random", "random", {}},
        {"snapkv", "snapkv", {}},
        {"tova", "tova", {}},
        {"observed_attention", "observed_attention", {}},
        {"pyramidkv", "pyramidkv", {}},
        {"expected_attention", "expected_attention", {}},
        {"keydiff", "keydiff", {}},
        {"qfilter_synthetic", "qfilter", {filters}},
        {"composed_knorm_streaming_llm", "composed", {"presses=knorm,streaming_llm"}},
        {"criticalkv_snapkv", "criticalkv", {"press=snapkv"}},
        {"chunk_snapkv", "chunk", {"press=snapkv", "chunk_length=300"}},
        {"chunkkv_snapkv", "chunkkv", {"press=snapkv"}},
        {"key_rerotation_snapkv", "key_rerotation", {"press=snapkv"}},
        {"adakv_snapkv", "adakv", {"press=snapkv"}},
        {"adakv_expected_attention", "adakv", {"press=expected_attention"}},
        {"critical_adakv_snapkv", "critical_adakv", {"press=snapkv"}},
    };
    auto backend = kvp::make_backend("cpu", threads);
    auto model = kvp::load_model(kvp::default_model_path(), *backend);
    const nlohmann::json ctx =
        kvp::read_json_file(source_path("tests/golden/presses/context.json"));
    const auto T = static_cast<int64_t>(ctx.at("context_ids").size());
    nlohmann::json rows = nlohmann::json::array();
    if (!json)
      std::printf("%-30s %12s %12s %10s %10s %10s %10s %10s\n", "cell", "f16 vs f32", "bf16 vs f32",
                  "f16 ans", "bf16 ans", "f32 vs kp", "f16 vs kp", "bf16 vs kp");
    for (const Spec& s : specs) {
      const std::string cell = std::string(s.cell) + "_" + ratio;
      Run runs[3];
      const DType types[3] = {DType::F32, DType::F16, DType::BF16};
      for (int i = 0; i < 3; ++i) {
        model->set_kv_dtype(types[i]);
        // kvpress's rounding, as the golden cells were made.
        auto press =
            kvp::make_press(s.press, std::stod(ratio), s.args, kvp::BudgetRounding::Kvpress);
        runs[i] = run_press(*model, ctx, *press);
      }
      std::vector<std::vector<std::vector<bool>>> golden;
      bool have_golden = true;
      try {
        golden = golden_kept(cell, T);
      } catch (const kvp::Error&) {
        have_golden = false;
      }
      nlohmann::json row = {{"press", cell},
                            {"f16_agreement", agreement(runs[1].kept, runs[0].kept)},
                            {"bf16_agreement", agreement(runs[2].kept, runs[0].kept)},
                            {"f16_same_answers", runs[1].answers == runs[0].answers},
                            {"bf16_same_answers", runs[2].answers == runs[0].answers}};
      if (have_golden) {
        row["f32_vs_kvpress"] = agreement(runs[0].kept, golden);
        row["f16_vs_kvpress"] = agreement(runs[1].kept, golden);
        row["bf16_vs_kvpress"] = agreement(runs[2].kept, golden);
      }
      rows.push_back(row);
      if (!json) {
        std::printf("%-30s %12.5f %12.5f %10s %10s", cell.c_str(),
                    row["f16_agreement"].get<double>(), row["bf16_agreement"].get<double>(),
                    runs[1].answers == runs[0].answers ? "same" : "DIFFER",
                    runs[2].answers == runs[0].answers ? "same" : "DIFFER");
        if (have_golden)
          std::printf(" %10.5f %10.5f %10.5f", row["f32_vs_kvpress"].get<double>(),
                      row["f16_vs_kvpress"].get<double>(), row["bf16_vs_kvpress"].get<double>());
        std::printf("\n");
        std::fflush(stdout);
      }
    }
    if (json) std::printf("%s\n", rows.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kv_dtype_parity: %s\n", e.what());
    return 1;
  }
  return 0;
}
