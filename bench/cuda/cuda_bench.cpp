// GPU figures for docs/benchmarks.md, on the CUDA backend, in one run:
//   copy       device-to-device copy bandwidth (bytes read + written): the ceiling
//   gemv       the decode step's matrix-vector products alone, one shape at a time
//   attention  varlen decode attention alone (Llama-3.1-8B shape: 32 query heads, 8 kv heads,
//              head_dim 128, bf16 rows), uniform head lengths vs a 16:1 skew of the same total
//   decode     a decode step of a random-weights model at each context and kept ratio:
//              ms/token, bytes read (weights + kept KV) per second, peak memory, allocations
//   prefill    a context prefill, its TFLOP/s, and the compression time of snapkv and
//              ada_snapkv during it
//
//   cuda_bench --config configs/llama-3.1-8b-instruct.json [--what
//   copy,gemv,attention,decode,prefill]
//              [--contexts 8192,32768] [--ratios 0,0.5,0.75] [--prefill 8192] [--steps 32]
//              [--json FILE]
#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../bench_util.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/factory.h"
#include "model/model.h"
#include "model/random_weights.h"
#include "presses/registry.h"

namespace {

using kvp::Backend;
using kvp::DType;
using kvp::KvSegments;
using kvp::Tensor;
using json = nlohmann::json;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A device tensor of uniform values in [lo, hi), written from the host.
Tensor random_tensor(Backend& be, DType t, std::initializer_list<int64_t> shape, float lo,
                     float hi) {
  Tensor h = Tensor::empty(DType::F32, shape);
  for (int64_t i = 0; i < h.numel(); ++i) h.ptr<float>()[i] = bench::next_f(lo, hi);
  Tensor d = be.alloc(DType::F32, shape);
  be.upload(h.data(), d, 0, h.nbytes());
  if (t == DType::F32) return d;
  Tensor out = be.alloc(t, shape);
  std::vector<int64_t> rows(static_cast<size_t>(d.rows()));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  be.copy_rows(d, rows.data(), out, rows.data(), d.rows());
  return out;
}

double copy_bandwidth(kvp::cuda::CudaBackend& be) {
  const int64_t n = int64_t{1} << 30;  // 4 GiB of f32 each way
  Tensor a = be.alloc(DType::F32, {n}), b = be.alloc(DType::F32, {n});
  const double us = bench::median_us(9, [&] {
    be.copy(a, 0, b, 0, a.nbytes());
    be.synchronize();
  });
  return 2.0 * static_cast<double>(a.nbytes()) / (us * 1e-6) / 1e9;
}

// Median microseconds of one attention call over `lens` rows per kv head, rotating through
// enough layers that K and V do not stay in the 60 MB L2.
json attention_case(kvp::cuda::CudaBackend& be, const std::vector<int64_t>& lens,
                    const std::string& label, double copy_gbs) {
  const int Hq = 32, Hkv = 8, D = 128;
  int64_t total = 0;
  std::vector<int64_t> offset;
  for (int64_t l : lens) {
    offset.push_back(total);
    total += l;
  }
  const double bytes = static_cast<double>(total) * D * 2 * 2;
  const int layers = static_cast<int>(std::clamp<double>(std::ceil(600e6 / bytes), 1, 16));
  std::vector<Tensor> k, v;
  for (int l = 0; l < layers; ++l) {
    k.push_back(random_tensor(be, DType::BF16, {total, D}, -1, 1));
    v.push_back(random_tensor(be, DType::BF16, {total, D}, -1, 1));
  }
  Tensor q = random_tensor(be, DType::F32, {1, Hq, D}, -1, 1);
  Tensor out = be.alloc(DType::F32, {1, Hq, D});
  int layer = 0;
  const int calls = 50;
  const double us = bench::median_us(7,
                                     [&] {
                                       for (int c = 0; c < calls; ++c) {
                                         KvSegments kv{k[static_cast<size_t>(layer)],
                                                       v[static_cast<size_t>(layer)],
                                                       offset.data(),
                                                       lens.data(),
                                                       Hkv,
                                                       D};
                                         be.attention(q, kv, 0.088f, out);
                                         layer = (layer + 1) % layers;
                                       }
                                       be.synchronize();
                                     }) /
                    calls;
  const double gbs = bytes / (us * 1e-6) / 1e9;
  std::printf("attention %-10s rows/head %7lld..%-7lld  %8.1f us  %7.0f GB/s  %5.1f%% of copy\n",
              label.c_str(), static_cast<long long>(*std::min_element(lens.begin(), lens.end())),
              static_cast<long long>(*std::max_element(lens.begin(), lens.end())), us, gbs,
              100 * gbs / copy_gbs);
  return {{"case", label}, {"lens", lens}, {"us", us}, {"gbs", gbs}, {"of_copy", gbs / copy_gbs}};
}

json attention_bench(kvp::cuda::CudaBackend& be, double copy_gbs) {
  json out = json::array();
  for (int64_t L : {4096, 16384, 65536}) {
    out.push_back(attention_case(be, std::vector<int64_t>(8, L), "uniform", copy_gbs));
    // 16:1: four heads keep 16 parts, four keep 1, the same total rows.
    std::vector<int64_t> skew;
    for (int h = 0; h < 8; ++h) skew.push_back(h % 2 == 0 ? L * 32 / 17 : L * 2 / 17);
    out.push_back(attention_case(be, skew, "skew16:1", copy_gbs));
  }
  return out;
}

// Median microseconds of y = x w^T for one token over each matrix shape of a decode step
// (rotating through enough copies of w that it never sits in L2), and the step's matrices
// in total: every layer's plus the vocabulary projection.
json gemv_bench(kvp::cuda::CudaBackend& be, const kvp::ModelConfig& c, double copy_gbs) {
  struct Shape {
    const char* name;
    int64_t n, k, per_layer;
  };
  const int64_t q = int64_t{c.n_heads} * c.head_dim, kv = int64_t{c.n_kv_heads} * c.head_dim;
  const Shape shapes[] = {{"q", q, c.hidden, 1},
                          {"k_v", kv, c.hidden, 2},
                          {"o", c.hidden, q, 1},
                          {"gate_up", c.ffn_hidden, c.hidden, 2},
                          {"down", c.hidden, c.ffn_hidden, 1},
                          {"vocab", c.vocab_size, c.hidden, 0}};
  json out = json::array();
  double step_us = 0, step_bytes = 0;
  for (const Shape& sh : shapes) {
    const double bytes = static_cast<double>(sh.n * sh.k) * 2;
    const int copies = static_cast<int>(std::clamp<double>(std::ceil(600e6 / bytes), 1, 16));
    std::vector<Tensor> w;
    for (int i = 0; i < copies; ++i)
      w.push_back(random_tensor(be, DType::BF16, {sh.n, sh.k}, -1, 1));
    Tensor x = random_tensor(be, DType::F32, {1, sh.k}, -1, 1);
    Tensor y = be.alloc(DType::F32, {1, sh.n});
    int at = 0;
    const int calls = 50;
    const double us = bench::median_us(7,
                                       [&] {
                                         for (int i = 0; i < calls; ++i) {
                                           be.matmul(x, w[static_cast<size_t>(at)], y);
                                           at = (at + 1) % copies;
                                         }
                                         be.synchronize();
                                       }) /
                      calls;
    const double gbs = bytes / (us * 1e-6) / 1e9;
    const double times = sh.per_layer ? static_cast<double>(sh.per_layer * c.n_layers) : 1.0;
    step_us += us * times;
    step_bytes += bytes * times;
    std::printf("gemv %-8s %6lld x %-6lld %8.1f us  %7.0f GB/s  %5.1f%% of copy\n", sh.name,
                static_cast<long long>(sh.n), static_cast<long long>(sh.k), us, gbs,
                100 * gbs / copy_gbs);
    out.push_back({{"matrix", sh.name},
                   {"n", sh.n},
                   {"k", sh.k},
                   {"us", us},
                   {"gbs", gbs},
                   {"of_copy", gbs / copy_gbs}});
  }
  const double gbs = step_bytes / (step_us * 1e-6) / 1e9;
  std::printf("gemv a decode step's matrices: %.3f ms  %.0f GB/s  %.1f%% of copy\n", step_us / 1e3,
              gbs, 100 * gbs / copy_gbs);
  out.push_back({{"matrix", "step"}, {"us", step_us}, {"gbs", gbs}, {"of_copy", gbs / copy_gbs}});
  return out;
}

// Per-head kept lengths for a ratio: uniform, or a head-wise spread with the same total
// (the shape ada_snapkv gives: some heads keep several times what others do).
kvp::KeepPlan keep_plan(int64_t n, int H, double ratio, bool headwise, int layer) {
  const int64_t kept = static_cast<int64_t>(std::llround(static_cast<double>(n) * (1 - ratio)));
  static const double spread[8] = {1.9, 0.35, 1.2, 0.6, 1.5, 0.25, 1.35, 0.85};
  kvp::KeepPlan plan(static_cast<size_t>(H));
  for (int h = 0; h < H; ++h) {
    const double f = headwise ? spread[(h + layer) % 8] : 1.0;
    const int64_t m = std::min<int64_t>(n, static_cast<int64_t>(static_cast<double>(kept) * f));
    for (int64_t i = 0; i < m; ++i)
      plan[static_cast<size_t>(h)].push_back(static_cast<int32_t>(n - m + i));
  }
  return plan;
}

// A decode step's time on the device alone, without the host's launch and wait costs: the
// device first copies for ~20 ms, so the whole step is queued before it can start; timed with
// events from the end of the copies to the end of the step (the token's download). The
// difference from the step's wall time is what launches and the host cost it.
template <typename Step>
double queued_step_ms(kvp::cuda::CudaBackend& be, Step step) {
  Tensor a = be.alloc(DType::F32, {int64_t{1} << 28}), b = be.alloc(DType::F32, {int64_t{1} << 28});
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> ms;
  for (int r = 0; r < 9; ++r) {
    for (int i = 0; i < 40; ++i) be.copy(a, 0, b, 0, a.nbytes());
    cudaEventRecord(e0, be.stream());
    step();  // ends by waiting for its token
    cudaEventRecord(e1, be.stream());
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

json decode_case(kvp::Model& model, kvp::cuda::CudaBackend& be, int64_t ctx, double ratio,
                 bool headwise, int steps, double copy_gbs, size_t weight_bytes) {
  const kvp::ModelConfig& c = model.config();
  const int64_t chunk = std::min<int64_t>(ctx, 2048);
  Tensor k = random_tensor(be, DType::F32, {chunk, c.n_kv_heads, c.head_dim}, -1, 1);
  Tensor v = random_tensor(be, DType::F32, {chunk, c.n_kv_heads, c.head_dim}, -1, 1);
  kvp::KVCache cache = model.make_cache(ctx + steps + 24);  // room for the queued steps too
  std::vector<int32_t> pos(static_cast<size_t>(chunk));
  const auto t_fill = std::chrono::steady_clock::now();
  double compact_s = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int64_t r = 0; r < ctx; r += chunk) {
      const int64_t n = std::min(chunk, ctx - r);
      for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(r + i);
      const int64_t rows = n * c.n_kv_heads;  // row_slice counts [.., head_dim] rows
      cache.append(l, k.row_slice(0, rows, {n, c.n_kv_heads, c.head_dim}),
                   v.row_slice(0, rows, {n, c.n_kv_heads, c.head_dim}), pos.data());
    }
    if (ratio > 0) {
      be.synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      cache.compact(l, keep_plan(ctx, c.n_kv_heads, ratio, headwise, l), steps + 24);
      be.synchronize();
      compact_s += seconds_since(t0);
    }
  }
  be.synchronize();
  const double fill_s = seconds_since(t_fill);
  int64_t kv_rows = 0;
  for (const auto& layer : cache.lengths())
    for (int64_t n : layer) kv_rows += n;
  int32_t tok = 1, p = static_cast<int32_t>(ctx);
  std::vector<double> ms;
  be.reset_peak();  // the peak of the decode steps alone (the cache was filled uncompressed)
  const size_t reserved0 = be.reserved_bytes();
  const uint64_t allocs0 = kvp::KVCache::allocation_count();
  // KVP_PROFILE_STEP: the last step alone in a profiler range (ncu --profile-from-start off).
  static const bool profile = std::getenv("KVP_PROFILE_STEP") != nullptr;
  for (int s = 0; s < steps; ++s) {
    if (profile && s + 1 == steps) cudaProfilerStart();
    const auto t0 = std::chrono::steady_clock::now();
    tok = model.forward_batch_greedy({kvp::ForwardGroup{&tok, &p, 1, &cache}})[0];
    ms.push_back(seconds_since(t0) * 1e3);
    if (profile && s + 1 == steps) cudaProfilerStop();
    ++p;
  }
  std::sort(ms.begin() + 1, ms.end());
  const double med = ms[1 + (ms.size() - 1) / 2];
  const bool grew = be.reserved_bytes() != reserved0 || kvp::KVCache::allocation_count() != allocs0;
  const size_t peak = be.peak_used_bytes();
  const double gpu_ms = queued_step_ms(be, [&] {
    tok = model.forward_batch_greedy({kvp::ForwardGroup{&tok, &p, 1, &cache}})[0];
    ++p;
  });
  const double kv_bytes = static_cast<double>(kv_rows) * c.head_dim * 2 * 2;  // K and V, bf16
  const double gbs = (static_cast<double>(weight_bytes) + kv_bytes) / (med * 1e-3) / 1e9;
  std::printf(
      "decode ctx %6lld ratio %.2f %-9s  %7.3f ms/token  %6.0f GB/s  %5.1f%% of copy  "
      "queued %.3f ms (launch share %.1f%%)  peak %.2f GiB  KV %.2f GiB  compact %.1f ms  %s\n",
      static_cast<long long>(ctx), ratio, headwise ? "headwise" : "uniform", med, gbs,
      100 * gbs / copy_gbs, gpu_ms, 100 * (med - gpu_ms) / med,
      static_cast<double>(peak) / (1 << 30), kv_bytes / (1 << 30), compact_s * 1e3,
      grew ? "ALLOCATED during decode" : "no allocation");
  return {{"context", ctx},
          {"ratio", ratio},
          {"headwise", headwise},
          {"ms_per_token", med},
          {"queued_ms_per_token", gpu_ms},
          {"gbs", gbs},
          {"of_copy", gbs / copy_gbs},
          {"kv_bytes", kv_bytes},
          {"weight_bytes", weight_bytes},
          {"peak_bytes", peak},
          {"fill_s", fill_s},
          {"compact_s", compact_s},
          {"allocated_during_decode", grew}};
}

size_t device_weight_bytes(const kvp::Model& m) {
  return m.weights().nbytes();
}

json prefill_case(kvp::Model& model, kvp::cuda::CudaBackend& be, int64_t T, const char* press_name,
                  double ratio) {
  const kvp::ModelConfig& c = model.config();
  std::vector<int32_t> ids(static_cast<size_t>(T)), pos(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) {
    ids[static_cast<size_t>(i)] = static_cast<int32_t>(bench::next_u64() % c.vocab_size);
    pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  }
  std::unique_ptr<kvp::Press> press;
  std::unique_ptr<kvp::PressHook> hook;
  if (press_name) {
    press = kvp::make_press(press_name, ratio, {});
    hook = std::make_unique<kvp::PressHook>(*press, 64);
    hook->time_phases(true);
  }
  kvp::KVCache cache = model.make_cache(T + 64);
  be.synchronize();
  be.reset_peak();
  const auto t0 = std::chrono::steady_clock::now();
  model.forward(ids.data(), pos.data(), T, cache, hook.get());
  be.synchronize();
  const double s = seconds_since(t0);
  // 2 flops per weight per token in the layers' matrices, plus causal attention (QK^T and PV).
  const double layer_params =
      static_cast<double>(c.n_layers) *
      (static_cast<double>(c.hidden) * (c.n_heads + 2 * c.n_kv_heads) * c.head_dim +
       static_cast<double>(c.n_heads) * c.head_dim * c.hidden + 3.0 * c.hidden * c.ffn_hidden);
  const double flops = 2 * layer_params * static_cast<double>(T) +
                       2.0 * 2 * c.n_layers * c.n_heads * c.head_dim * static_cast<double>(T) *
                           static_cast<double>(T) / 2;
  const double compress = hook ? hook->seconds() : 0;
  const double plan = hook ? hook->plan_seconds() : 0;
  std::printf(
      "prefill T %6lld %-10s %8.3f s  %6.1f TFLOP/s  compression %.3f s (%.2f%%; plan %.3f, "
      "compaction %.3f)  peak %.2f GiB\n",
      static_cast<long long>(T), press_name ? press_name : "none", s, flops / s / 1e12, compress,
      100 * compress / s, plan, compress - plan,
      static_cast<double>(be.peak_used_bytes()) / (1 << 30));
  return {{"tokens", T},
          {"press", press_name ? press_name : "none"},
          {"ratio", ratio},
          {"seconds", s},
          {"tflops", flops / s / 1e12},
          {"compress_s", compress},
          {"plan_s", plan},
          {"peak_bytes", be.peak_used_bytes()}};
}

std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string name; std::getline(in, name, ',');)
    if (!name.empty()) out.push_back(name);
  return out;
}

std::string arg(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == "--" + name) return argv[i + 1];
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    for (int i = 1; i < argc; ++i)
      if (std::string(argv[i]) == "--help") {
        std::printf(
            "usage: cuda_bench --config CONFIG.json [--what copy,attention,gemv,decode,prefill]\n"
            "       [--contexts 8192,32768] [--ratios 0,0.5,0.75] [--prefill 8192]\n"
            "       [--presses none,snapkv,ada_snapkv]\n"
            "       [--steps 32] [--json FILE]\n");
        return 0;
      }
    const std::string what = arg(argc, argv, "what", "copy,attention,decode,prefill");
    auto has = [&](const char* w) { return what.find(w) != std::string::npos; };
    auto backend = kvp::make_backend("cuda", 1);
    auto& be = dynamic_cast<kvp::cuda::CudaBackend&>(*backend);
    json out;
    out["device"] = be.device_name();
    const double copy_gbs = copy_bandwidth(be);
    std::printf("device %s, %d SMs; copy %.0f GB/s (read + write)\n", be.device_name().c_str(),
                be.sm_count(), copy_gbs);
    out["copy_gbs"] = copy_gbs;
    if (has("attention")) out["attention"] = attention_bench(be, copy_gbs);
    if (has("gemv")) {
      const std::string config = arg(argc, argv, "config", "configs/llama-3.1-8b-instruct.json");
      out["gemv"] = gemv_bench(be, kvp::config_from_hf_json(config), copy_gbs);
    }
    if (has("decode") || has("prefill")) {
      const std::string config = arg(argc, argv, "config", "configs/llama-3.1-8b-instruct.json");
      const auto t0 = std::chrono::steady_clock::now();
      auto model = kvp::random_model(config, be, 1);
      model->set_kv_dtype(DType::BF16);
      be.synchronize();
      const size_t wbytes = device_weight_bytes(*model);
      std::printf("model %s: random weights, %.2f GB on the GPU, loaded in %.1f s\n",
                  config.c_str(), static_cast<double>(wbytes) / 1e9, seconds_since(t0));
      out["model"] = {{"config", config}, {"weight_bytes", wbytes}};
      const int steps = std::stoi(arg(argc, argv, "steps", "32"));
      if (has("decode")) {
        // Each ratio above 0 runs twice: uniform head lengths, then a head-wise spread.
        std::vector<double> ratios;
        for (const std::string& r : split_names(arg(argc, argv, "ratios", "0,0.5,0.75")))
          ratios.push_back(std::stod(r));
        for (int ctx : bench::parse_list(arg(argc, argv, "contexts", "8192,32768")))
          for (double ratio : ratios)
            for (bool headwise : {false, true})
              if (!headwise || ratio > 0)
                out["decode"].push_back(
                    decode_case(*model, be, ctx, ratio, headwise, steps, copy_gbs, wbytes));
      }
      if (has("prefill")) {
        const std::vector<std::string> presses =
            split_names(arg(argc, argv, "presses", "none,snapkv,ada_snapkv"));
        for (int T : bench::parse_list(arg(argc, argv, "prefill", "8192")))
          for (const std::string& p : presses)
            out["prefill"].push_back(
                prefill_case(*model, be, T, p == "none" ? nullptr : p.c_str(), 0.5));
      }
    }
    const std::string path = arg(argc, argv, "json", "");
    if (!path.empty()) std::ofstream(path) << out.dump(2) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_bench: %s\n", e.what());
    return 1;
  }
}
