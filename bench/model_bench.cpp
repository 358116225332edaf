// End-to-end speed of the whole model on the CPU backend, measured the way
// tools/reference/bench_llamacpp.py measures llama.cpp, so the two can be compared
// (scripts/bench.sh runs both and prints the ratios; docs/benchmarks.md has the figures).
//
// For each thread count:
//   prefill_512, prefill_2048  tokens/s of one forward over the whole prompt into a fresh
//                              cache (prompt = the same deterministic filler text as the
//                              Python script, tokenized by our tokenizer, cut to the length)
//   decode                     tokens/s of 128 greedy steps (one single-token forward and an
//                              argmax per step) after a short prompt
//   decode_gbs                 achieved weight-read GB/s in decode: weight bytes (as stored,
//                              quantised) per token x tokens/s
// Each figure is the median of --reps repetitions, after one unmeasured warm-up forward of
// 64 tokens. Cache allocation is outside the timed region (llama.cpp keeps its cache and
// resets it; we allocate a fresh one per repetition before starting the clock).
//
//   model_bench [--model PATH] [--threads 1,2] [--reps 3] [--kv-dtype f32|f16|bf16] [--json]
//
// --json: the table goes to stderr and one JSON object to stdout:
//   {"threads": {"1": {"prefill_512": .., "prefill_2048": .., "decode": .., "decode_gbs": ..}, ..},
//    "model": .., "reps": .., "decode_steps": 128, "weights_bytes": .., "cpu_share": {..},
//    "ids_fnv1a": checksum of the prompt + decode-prompt ids (the Python script prints the same)}
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/factory.h"
#include "cli/commands.h"
#include "model/model.h"
#include "pipeline/pipeline.h"

namespace {

constexpr int kPrefillLengths[] = {512, 2048};
constexpr int kMaxPrefill = 2048;
constexpr int kDecodeSteps = 128;
constexpr int kWarmupTokens = 64;
const char* const kDecodePrompt = "The history of the printing press begins";

// Character-for-character the filler_text() of tools/reference/bench_llamacpp.py.
std::string filler_text(size_t min_chars) {
  static const char* const subjects[] = {"The engineer",         "A small model", "The cache",
                                         "Every attention head", "The compiler",  "A long document",
                                         "The scheduler",        "Our benchmark"};
  static const char* const verbs[] = {"reads",    "compresses", "keeps",   "discards",
                                      "measures", "rewrites",   "streams", "scores"};
  static const char* const objects[] = {"the oldest tokens",         "a sorted list of rows",
                                        "the key and value vectors", "one segment per head",
                                        "the quantised weights",     "a question about the context",
                                        "the memory bandwidth",      "every layer in turn"};
  std::string out;
  for (int i = 0; out.size() < min_chars; ++i) {
    out += std::string(subjects[i % 8]) + " " + verbs[(i * 3) % 8] + " " +
           objects[(i * 5 + i / 8) % 8] + " in step " + std::to_string(i) +
           ", and nothing else changes. ";
    if (i % 7 == 6) out += "\n\n";
  }
  return out;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double process_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// FNV-1a (32-bit) over ids, as ids_fnv1a() in bench_llamacpp.py: equal checksums mean both
// engines ran the same token ids.
uint32_t ids_fnv1a(const std::vector<int32_t>& ids) {
  uint32_t h = 2166136261u;
  for (int32_t id : ids) h = (h ^ static_cast<uint32_t>(id)) * 16777619u;
  return h;
}

int32_t argmax(const kvp::Tensor& logits) {
  const float* p = logits.ptr<float>();
  return static_cast<int32_t>(std::max_element(p, p + logits.numel()) - p);
}

std::vector<int32_t> iota_positions(int64_t from, int64_t n) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = static_cast<int32_t>(from + i);
  return p;
}

struct Result {
  std::map<std::string, double> rate;  // prefill_512, prefill_2048, decode (tokens/s)
  double decode_gbs = 0;
  double cpu_share = 0;
};

Result bench_threads(const std::string& path, int threads, int reps,
                     const std::vector<int32_t>& prompt_ids, kvp::DType kv_dtype) {
  auto backend = kvp::make_backend("cpu", threads);
  kvp::LoadedModel m = kvp::load(path, *backend, /*use_chat_template=*/false);
  kvp::Model& model = *m.model;
  model.set_kv_dtype(kv_dtype);
  const int64_t capacity = kMaxPrefill + 64;  // as the script's n_ctx
  Result res;
  const double cpu0 = process_cpu_s(), wall0 = now_s();

  {  // warm-up: first-touch of the mapped weights, scratch buffers, thread pool
    kvp::KVCache cache = model.make_cache(capacity);
    const auto pos = iota_positions(0, kWarmupTokens);
    model.forward(prompt_ids.data(), pos.data(), kWarmupTokens, cache);
  }

  for (int n : kPrefillLengths) {
    const auto pos = iota_positions(0, n);
    std::vector<double> rates;
    for (int r = 0; r < reps; ++r) {
      kvp::KVCache cache = model.make_cache(capacity);
      const double t0 = now_s();
      model.forward(prompt_ids.data(), pos.data(), n, cache);
      rates.push_back(n / (now_s() - t0));
    }
    res.rate["prefill_" + std::to_string(n)] = median(rates);
  }

  const std::vector<int32_t> shrt = m.tokenizer->encode(kDecodePrompt, /*parse_special=*/true,
                                                        /*add_bos=*/false);
  const int64_t S = static_cast<int64_t>(shrt.size());
  const auto spos = iota_positions(0, S);
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) {
    kvp::KVCache cache = model.make_cache(capacity);
    int32_t tok = argmax(model.forward(shrt.data(), spos.data(), S, cache));
    const double t0 = now_s();
    for (int i = 0; i < kDecodeSteps; ++i) {
      const int32_t p = static_cast<int32_t>(S + i);
      tok = argmax(model.forward(&tok, &p, 1, cache));
    }
    rates.push_back(kDecodeSteps / (now_s() - t0));
  }
  res.rate["decode"] = median(rates);
  res.decode_gbs = static_cast<double>(model.weights().nbytes()) * res.rate["decode"] / 1e9;
  // CPU seconds per wall second over the whole measurement: about `threads` on an idle
  // machine (our pool spins); much less means other processes took the cores.
  res.cpu_share = (process_cpu_s() - cpu0) / (now_s() - wall0);
  return res;
}

[[noreturn]] void usage(int code) {
  std::fprintf(
      code ? stderr : stdout,
      "usage: model_bench [--model PATH] [--threads 1,2] [--reps 3] [--kv-dtype f32|f16|bf16] "
      "[--json]\n"
      "  Prefill (512, 2048 tokens) and decode (%d greedy steps) tokens/s on the CPU\n"
      "  backend, median of reps; method mirrors tools/reference/bench_llamacpp.py.\n",
      kDecodeSteps);
  std::exit(code);
}

std::string default_model() {
  namespace fs = std::filesystem;
  const std::string rel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  // From the repository root, or from a build directory / its bench/ subdirectory.
  for (const char* prefix : {"", "../", "../../"}) {
    std::error_code ec;
    if (fs::exists(prefix + rel, ec)) return prefix + rel;
  }
  return rel;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  std::string threads_arg = "1,2";
  int reps = 3;
  bool json = false;
  std::string kv_dtype = "f32";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (a == "--model")
      model_path = value();
    else if (a == "--threads")
      threads_arg = value();
    else if (a == "--reps")
      reps = std::atoi(value().c_str());
    else if (a == "--json")
      json = true;
    else if (a == "--kv-dtype")
      kv_dtype = value();
    else if (a == "-h" || a == "--help")
      usage(0);
    else
      usage(2);
  }
  if (model_path.empty()) model_path = default_model();
  std::vector<int> threads;
  for (size_t at = 0; at <= threads_arg.size();) {
    size_t comma = threads_arg.find(',', at);
    if (comma == std::string::npos) comma = threads_arg.size();
    const std::string t = threads_arg.substr(at, comma - at);
    if (!t.empty()) threads.push_back(std::atoi(t.c_str()));
    at = comma + 1;
  }
  if (threads.empty() || reps < 1 ||
      std::any_of(threads.begin(), threads.end(), [](int t) { return t < 1; }))
    usage(2);

  try {
    std::vector<int32_t> prompt_ids;
    size_t weights_bytes = 0;
    uint32_t checksum = 0;
    {
      auto backend = kvp::make_backend("cpu", 1);
      kvp::LoadedModel m = kvp::load(model_path, *backend, false);
      prompt_ids = m.tokenizer->encode(filler_text(4 * kMaxPrefill * 2), /*parse_special=*/false,
                                       /*add_bos=*/false);
      weights_bytes = m.model->weights().nbytes();
      std::vector<int32_t> all(
          prompt_ids.begin(),
          prompt_ids.begin() + std::min<size_t>(prompt_ids.size(), kMaxPrefill));
      const auto shrt = m.tokenizer->encode(kDecodePrompt, true, false);
      all.insert(all.end(), shrt.begin(), shrt.end());
      checksum = ids_fnv1a(all);
    }
    if (prompt_ids.size() < static_cast<size_t>(kMaxPrefill)) {
      std::fprintf(stderr, "error: filler text gave only %zu tokens\n", prompt_ids.size());
      return 1;
    }

    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    std::map<int, Result> results;
    const kvp::DType dtype = kvp::parse_kv_dtype(kv_dtype);
    for (int t : threads) results[t] = bench_threads(model_path, t, reps, prompt_ids, dtype);

    FILE* out = json ? stderr : stdout;
    const std::string name = std::filesystem::path(model_path).filename().string();
    std::fprintf(out,
                 "kvpress.cpp CPU backend, %s (%.1f MB of weights), median of %d, tokens/s"
                 " (decode: %d greedy steps)\n",
                 name.c_str(), weights_bytes / 1e6, reps, kDecodeSteps);
    std::fprintf(out, "%8s%15s%15s%15s%12s%11s\n", "threads", "prefill_512", "prefill_2048",
                 "decode", "decode_GB/s", "cpu_share");
    for (const auto& [t, r] : results)
      std::fprintf(out, "%8d%15.1f%15.1f%15.1f%12.2f%11.2f\n", t, r.rate.at("prefill_512"),
                   r.rate.at("prefill_2048"), r.rate.at("decode"), r.decode_gbs, r.cpu_share);
    std::fprintf(out, "load average before the run: %.2f on %ld CPUs\n", load[0],
                 sysconf(_SC_NPROCESSORS_ONLN));
    if (json) {
      std::string s = "{\"threads\": {";
      bool first = true;
      char buf[256];
      for (const auto& [t, r] : results) {
        std::snprintf(buf, sizeof buf,
                      "%s\"%d\": {\"prefill_512\": %.2f, \"prefill_2048\": %.2f, \"decode\": %.2f, "
                      "\"decode_gbs\": %.3f}",
                      first ? "" : ", ", t, r.rate.at("prefill_512"), r.rate.at("prefill_2048"),
                      r.rate.at("decode"), r.decode_gbs);
        s += buf;
        first = false;
      }
      std::snprintf(buf, sizeof buf,
                    "}, \"engine\": \"kvpress.cpp\", \"model\": \"%s\", \"reps\": %d, "
                    "\"decode_steps\": %d, \"weights_bytes\": %zu, \"cpu_count\": %ld, "
                    "\"loadavg_1min_before\": %.2f, \"cpu_share\": {",
                    name.c_str(), reps, kDecodeSteps, weights_bytes, sysconf(_SC_NPROCESSORS_ONLN),
                    load[0]);
      s += buf;
      first = true;
      for (const auto& [t, r] : results) {
        std::snprintf(buf, sizeof buf, "%s\"%d\": %.2f", first ? "" : ", ", t, r.cpu_share);
        s += buf;
        first = false;
      }
      std::snprintf(buf, sizeof buf, "}, \"ids_fnv1a\": \"%08x\"}", checksum);
      s += buf;
      std::printf("%s\n", s.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
