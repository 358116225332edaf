// End-to-end speed of the whole model on one backend (--device, the CPU by default),
// measured the way tools/reference/bench_llamacpp.py measures llama.cpp, so the two can be
// compared (scripts/bench.sh runs both and prints the ratios; docs/benchmarks.md has the figures).
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
//   model_bench [--model PATH | --random-weights CONFIG.json [--seed N]] [--device cpu]
//               [--threads 1,2] [--reps 3] [--kv-dtype f32|f16|bf16] [--load-only] [--json]
//
// --random-weights: a model at its real size without its weight file (configs/ holds the
// config.json of public 7-8B models): pseudo-random BF16 weights, generated once and shared by
// every thread count. Without a tokenizer the prompts are synthetic token ids (same length
// as the text's), so the speeds compare with a real model of that shape, not the checksum.
// --load-only: make the model, print its size and load time, and stop (no forward pass).
//
// --json: the table goes to stderr and one JSON object to stdout:
//   {"threads": {"1": {"prefill_512": .., "prefill_2048": .., "decode": .., "decode_gbs": ..}, ..},
//    "model": .., "reps": .., "decode_steps": 128, "weights_bytes": .., "params": ..,
//    "load_s": .., "device": .., "cpu_share": {..},
//    "ids_fnv1a": checksum of the prompt + decode-prompt ids (the Python script prints the same)}
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/factory.h"
#include "cli/commands.h"
#include "core/error.h"
#include "model/model.h"
#include "model/random_weights.h"
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

// The CPU's logits are read in place (as before --device, so its figures stay comparable);
// a device's are downloaded first.
int32_t argmax(kvp::Backend& backend, const kvp::Tensor& logits) {
  static std::vector<float> host;
  const float* p = logits.ptr<float>();
  if (logits.device() != kvp::Device::CPU) {
    host.resize(static_cast<size_t>(logits.numel()));
    backend.download(logits, 0, host.data(), logits.nbytes());
    p = host.data();
  }
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

struct Options {
  std::string model_path;     // --model
  std::string random_config;  // --random-weights
  std::optional<uint64_t> seed;
  std::string device = "cpu";
  std::vector<int> threads = {1, 2};
  int reps = 3;
  bool json = false;
  bool load_only = false;
  std::string kv_dtype = "f32";
};

// The model under test: a file (re-opened per thread count, as before), or random weights
// made once and shared by every thread count's Model (tensor handles, not copies).
struct ModelSource {
  std::string path;  // the model file or the config
  bool random = false;
  uint64_t seed = 0;
  kvp::ModelConfig config;
  kvp::ModelWeights weights;
};

// The token ids every thread count runs, and their checksum.
struct Prompts {
  std::vector<int32_t> prefill;  // at least kMaxPrefill
  std::vector<int32_t> decode;   // the short prompt before the decode steps
  uint32_t checksum = 0;
};

kvp::LoadedModel open_model(const ModelSource& src, kvp::Backend& backend) {
  if (!src.random) return kvp::load(src.path, backend, /*use_chat_template=*/false);
  kvp::LoadedModel m;
  m.model = std::make_unique<kvp::Model>(src.config, src.weights, backend);
  m.path = src.path;
  return m;
}

Result bench_threads(const ModelSource& src, const std::string& device, int threads, int reps,
                     const Prompts& prompts, kvp::DType kv_dtype) {
  auto backend = kvp::make_backend(device, threads);
  kvp::LoadedModel m = open_model(src, *backend);
  kvp::Model& model = *m.model;
  model.set_kv_dtype(kv_dtype);
  const int64_t capacity = kMaxPrefill + 64;  // as the script's n_ctx
  Result res;
  const double cpu0 = process_cpu_s(), wall0 = now_s();

  {  // warm-up: first-touch of the mapped weights, scratch buffers, thread pool
    kvp::KVCache cache = model.make_cache(capacity);
    const auto pos = iota_positions(0, kWarmupTokens);
    model.forward(prompts.prefill.data(), pos.data(), kWarmupTokens, cache);
  }

  for (int n : kPrefillLengths) {
    const auto pos = iota_positions(0, n);
    std::vector<double> rates;
    for (int r = 0; r < reps; ++r) {
      kvp::KVCache cache = model.make_cache(capacity);
      const double t0 = now_s();
      model.forward(prompts.prefill.data(), pos.data(), n, cache);
      backend->synchronize();
      rates.push_back(n / (now_s() - t0));
    }
    res.rate["prefill_" + std::to_string(n)] = median(rates);
  }

  const std::vector<int32_t>& shrt = prompts.decode;
  const int64_t S = static_cast<int64_t>(shrt.size());
  const auto spos = iota_positions(0, S);
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) {
    kvp::KVCache cache = model.make_cache(capacity);
    int32_t tok = argmax(*backend, model.forward(shrt.data(), spos.data(), S, cache));
    const double t0 = now_s();
    for (int i = 0; i < kDecodeSteps; ++i) {
      const int32_t p = static_cast<int32_t>(S + i);
      tok = argmax(*backend, model.forward(&tok, &p, 1, cache));
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

std::string device_list() {
  std::string names;
  for (const std::string& n : kvp::backend_names()) names += (names.empty() ? "" : ", ") + n;
  return names;
}

unsigned hardware_threads() {
  return std::max(1u, std::thread::hardware_concurrency());
}

[[noreturn]] void usage(int code) {
  std::fprintf(
      code ? stderr : stdout,
      "usage: model_bench [--model PATH | --random-weights CONFIG.json [--seed N]]\n"
      "                   [--device NAME] [--threads 1,2] [--reps 3] [--kv-dtype f32|f16|bf16]\n"
      "                   [--load-only] [--json]\n"
      "  Prefill (512, 2048 tokens) and decode (%d greedy steps) tokens/s on one backend,\n"
      "  median of reps; method mirrors tools/reference/bench_llamacpp.py.\n"
      "  --model PATH                a GGUF file or Hugging Face folder (default: the fetched\n"
      "                              SmolLM2-135M-Instruct Q4_1)\n"
      "  --random-weights CONFIG     a Hugging Face config.json (configs/ has 7-8B models):\n"
      "                              the model at its real size with random BF16 weights and\n"
      "                              synthetic prompt ids; no weight or tokenizer files\n"
      "  --seed N                    the random weights' seed (default 0)\n"
      "  --device NAME               the backend (default cpu; this build has: %s)\n"
      "  --load-only                 make the model, print its size and load time, stop\n",
      kDecodeSteps, device_list().c_str());
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

uint64_t parse_seed(const std::string& text) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    throw kvp::Error("--seed: '" + text + "' is not an unsigned 64-bit integer");
  return v;
}

std::vector<int> parse_threads(const std::string& arg) {
  std::vector<int> threads;
  for (size_t at = 0; at <= arg.size();) {
    size_t comma = arg.find(',', at);
    if (comma == std::string::npos) comma = arg.size();
    const std::string t = arg.substr(at, comma - at);
    if (!t.empty()) threads.push_back(std::atoi(t.c_str()));
    at = comma + 1;
  }
  return threads;
}

// Unknown flags and bad numbers print the usage; contradictory options are an Error.
Options parse_args(int argc, char** argv) {
  Options o;
  std::string threads_arg = "1,2";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (a == "--model")
      o.model_path = value();
    else if (a == "--random-weights")
      o.random_config = value();
    else if (a == "--seed")
      o.seed = parse_seed(value());
    else if (a == "--device")
      o.device = value();
    else if (a == "--threads")
      threads_arg = value();
    else if (a == "--reps")
      o.reps = std::atoi(value().c_str());
    else if (a == "--json")
      o.json = true;
    else if (a == "--load-only")
      o.load_only = true;
    else if (a == "--kv-dtype")
      o.kv_dtype = value();
    else if (a == "-h" || a == "--help")
      usage(0);
    else
      usage(2);
  }
  kvp::check(o.model_path.empty() || o.random_config.empty(),
             "--model and --random-weights both given: pass one (a model to load, or a "
             "config.json to make random weights for)");
  kvp::check(!o.seed || !o.random_config.empty(), "--seed applies to --random-weights only");
  o.threads = parse_threads(threads_arg);
  if (o.threads.empty() || o.reps < 1 ||
      std::any_of(o.threads.begin(), o.threads.end(), [](int t) { return t < 1; }))
    usage(2);
  if (o.model_path.empty() && o.random_config.empty()) o.model_path = default_model();
  return o;
}

// Ids spread over the whole vocabulary (an LCG's high bits): a random-weight model has no
// tokenizer, and the forward's cost does not depend on which ids it embeds.
std::vector<int32_t> synthetic_ids(size_t n, int vocab, uint64_t state) {
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(vocab));
  }
  return ids;
}

Prompts make_prompts(std::vector<int32_t> prefill, std::vector<int32_t> decode) {
  Prompts p{std::move(prefill), std::move(decode), 0};
  kvp::check(p.prefill.size() >= static_cast<size_t>(kMaxPrefill),
             "filler text gave only " + std::to_string(p.prefill.size()) + " tokens");
  std::vector<int32_t> all(p.prefill.begin(), p.prefill.begin() + kMaxPrefill);
  all.insert(all.end(), p.decode.begin(), p.decode.end());
  p.checksum = ids_fnv1a(all);
  return p;
}

// What main measures with, made once before any thread count runs.
struct Prepared {
  ModelSource src;
  Prompts prompts;
  int64_t params = 0;
  size_t weights_bytes = 0;
  double load_s = 0;  // opening the file, or generating the random weights
  std::string name;
};

// "llama-3.1-8b-instruct.json", or "tiny-random/config.json" for a model folder's config.
std::string config_name(const std::string& path) {
  const std::filesystem::path p(path);
  if (p.filename() != "config.json" || !p.has_parent_path()) return p.filename().string();
  return (p.parent_path().filename() / p.filename()).string();
}

Prepared prepare_random(const Options& o) {
  Prepared p;
  p.src.path = o.random_config;
  p.src.random = true;
  p.src.seed = o.seed.value_or(0);
  p.src.config = kvp::config_from_hf_json(o.random_config);
  const double t0 = now_s();
  p.src.weights = kvp::random_weights(p.src.config, p.src.seed);
  p.load_s = now_s() - t0;
  const int vocab = p.src.config.vocab_size;
  p.prompts = make_prompts(synthetic_ids(kMaxPrefill, vocab, 1), synthetic_ids(8, vocab, 2));
  p.params = p.src.weights.n_params();
  p.weights_bytes = p.src.weights.nbytes();
  p.name = config_name(o.random_config);
  return p;
}

Prepared prepare_file(const Options& o) {
  Prepared p;
  p.src.path = o.model_path;
  auto backend = kvp::make_backend("cpu", 1);
  const double t0 = now_s();
  kvp::LoadedModel m = kvp::load(o.model_path, *backend, false);
  p.load_s = now_s() - t0;
  const kvp::Tokenizer& tok = *m.tokenizer;
  p.prompts = make_prompts(tok.encode(filler_text(4 * kMaxPrefill * 2), /*parse_special=*/false,
                                      /*add_bos=*/false),
                           tok.encode(kDecodePrompt, /*parse_special=*/true, /*add_bos=*/false));
  p.params = m.model->weights().n_params();
  p.weights_bytes = m.model->weights().nbytes();
  p.name = std::filesystem::path(o.model_path).filename().string();
  return p;
}

void print_size(FILE* out, const Prepared& p) {
  const std::string how = p.src.random ? "random weights (seed " + std::to_string(p.src.seed) +
                                             ") generated on " +
                                             std::to_string(hardware_threads()) + " threads"
                                       : "opened";
  std::fprintf(out, "%s: %lld parameters (%.2f B), %.1f MB of weights as stored; %s in %.2f s\n",
               p.name.c_str(), static_cast<long long>(p.params), p.params / 1e9,
               p.weights_bytes / 1e6, how.c_str(), p.load_s);
}

// --load-only: the model made on the benchmark's backend as well (a device copies every
// weight there), timed, then nothing else.
int load_only(const Options& o, const Prepared& p) {
  FILE* out = o.json ? stderr : stdout;
  print_size(out, p);
  auto backend = kvp::make_backend(o.device, o.threads.front());
  const double t0 = now_s();
  kvp::LoadedModel m = open_model(p.src, *backend);
  backend->synchronize();
  const double made_s = now_s() - t0;
  std::fprintf(out, "model made on %s in %.2f s\n", backend->name(), made_s);
  if (o.json)
    std::printf(
        "{\"engine\": \"kvpress.cpp\", \"model\": \"%s\", \"random_weights\": %s, \"params\": "
        "%lld, \"weights_bytes\": %zu, \"load_s\": %.3f, \"device\": \"%s\", "
        "\"model_made_s\": %.3f}\n",
        p.name.c_str(), p.src.random ? "true" : "false", static_cast<long long>(p.params),
        p.weights_bytes, p.load_s, backend->name(), made_s);
  return 0;
}

void print_table(FILE* out, const Options& o, const Prepared& p,
                 const std::map<int, Result>& results, double load1) {
  print_size(out, p);
  std::fprintf(out,
               "kvpress.cpp %s backend, %s, median of %d, tokens/s (decode: %d greedy steps)\n",
               o.device.c_str(), p.name.c_str(), o.reps, kDecodeSteps);
  std::fprintf(out, "%8s%15s%15s%15s%12s%11s\n", "threads", "prefill_512", "prefill_2048", "decode",
               "decode_GB/s", "cpu_share");
  for (const auto& [t, r] : results)
    std::fprintf(out, "%8d%15.1f%15.1f%15.1f%12.2f%11.2f\n", t, r.rate.at("prefill_512"),
                 r.rate.at("prefill_2048"), r.rate.at("decode"), r.decode_gbs, r.cpu_share);
  std::fprintf(out, "load average before the run: %.2f on %ld CPUs\n", load1,
               sysconf(_SC_NPROCESSORS_ONLN));
}

std::string json_report(const Options& o, const Prepared& p, const std::map<int, Result>& results,
                        double load1) {
  std::string s = "{\"threads\": {";
  bool first = true;
  char buf[512];
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
                "}, \"engine\": \"kvpress.cpp\", \"model\": \"%s\", \"random_weights\": %s, "
                "\"device\": \"%s\", \"reps\": %d, \"decode_steps\": %d, \"weights_bytes\": %zu, "
                "\"params\": %lld, \"load_s\": %.3f, \"cpu_count\": %ld, "
                "\"loadavg_1min_before\": %.2f, \"cpu_share\": {",
                p.name.c_str(), p.src.random ? "true" : "false", o.device.c_str(), o.reps,
                kDecodeSteps, p.weights_bytes, static_cast<long long>(p.params), p.load_s,
                sysconf(_SC_NPROCESSORS_ONLN), load1);
  s += buf;
  first = true;
  for (const auto& [t, r] : results) {
    std::snprintf(buf, sizeof buf, "%s\"%d\": %.2f", first ? "" : ", ", t, r.cpu_share);
    s += buf;
    first = false;
  }
  std::snprintf(buf, sizeof buf, "}, \"ids_fnv1a\": \"%08x\"}", p.prompts.checksum);
  return s + buf;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse_args(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s (model_bench --help for usage)\n", e.what());
    return 2;
  }
  try {
    // A bad --kv-dtype or --device is reported now, not after a 16 GB load.
    const kvp::DType dtype = kvp::parse_kv_dtype(o.kv_dtype);
    kvp::make_backend(o.device, 1);
    const Prepared p = o.random_config.empty() ? prepare_file(o) : prepare_random(o);
    if (o.load_only) return load_only(o, p);
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    std::map<int, Result> results;
    for (int t : o.threads)
      results[t] = bench_threads(p.src, o.device, t, o.reps, p.prompts, dtype);
    print_table(o.json ? stderr : stdout, o, p, results, load[0]);
    if (o.json) std::printf("%s\n", json_report(o, p, results, load[0]).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
