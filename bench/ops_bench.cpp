// Times the CPU backend's matmul on the default model's shapes (SmolLM2-135M: hidden 576,
// kv 192, intermediate 1536, vocab 49152), at T = 1 (decode) and T = 512 (prefill) or --rows, for
// Q4_1 and Q8_0 weights, with 1 and 2 threads; prints the median time, the GB/s of weights
// read and the GFLOP/s. Then a whole decode step's matmuls (30 layers of distinct Q4_1
// weights, 96 MB that do not fit in cache, plus the Q8_0 output head) as tokens/s.
//
//   build-cpu/bench/ops_bench [--reps N] [--threads 1,2] [--rows 1,512] [--quick]
//
// Built by hand against llama.cpp's ggml (its headers and libggml-cpu / libggml-base), it
// also compares the matrix-vector kernels with ggml's on the same weights, single thread,
// hot cache (ggml quantises x to 8 bits and uses integer dot products; we compute in f32):
//   g++ -std=c++20 -O2 -march=native -Isrc -I$LLAMA/ggml/include bench/ops_bench.cpp
//       build-cpu/libkvp_backend_cpu.a build-cpu/libkvp_core.a -L$LLAMA/build/bin
//       -lggml-cpu -lggml-base -lpthread -Wl,-rpath,$LLAMA/build/bin -o /tmp/ops_bench_ggml
// (one command; $LLAMA a llama.cpp checkout built with cmake, e.g. the vendor/llama.cpp of
// the llama-cpp-python sdist).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/quant.h"
#include "backend/factory.h"
#include "bench_util.h"
#include "cache/kv_cache.h"
#include "core/half.h"
#include "core/tensor.h"

namespace {

using bench::median_us;
using bench::next_f;
using bench::next_u64;
using bench::now_us;
using kvp::DType;
using kvp::Tensor;

// Random well-formed weights: random quants, small finite scales.
Tensor random_weight(DType t, int64_t rows, int64_t cols) {
  Tensor w = Tensor::empty(t, {rows, cols});
  auto* p = static_cast<uint8_t*>(w.data());
  const size_t n = w.nbytes();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = next_u64();
    std::memcpy(p + i, &v, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<uint8_t>(next_u64());
  const size_t bb = kvp::block_bytes(t);
  auto put = [](uint8_t* q, float v) {
    const uint16_t h = kvp::f32_to_f16(v);
    std::memcpy(q, &h, 2);
  };
  for (size_t b = 0; b < n / bb; ++b) {
    uint8_t* q = p + b * bb;
    if (t == DType::Q4_1) {
      put(q, next_f(0.001f, 0.01f));
      put(q + 2, next_f(-0.08f, 0.f));
    } else if (t == DType::Q8_0 || t == DType::Q4_0) {
      put(q, next_f(0.001f, 0.01f));
    }
  }
  return w;
}

Tensor random_x(int64_t T, int64_t K) {
  Tensor x = Tensor::empty(DType::F32, {T, K});
  for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] = next_f(-1.f, 1.f);
  return x;
}

#if __has_include("ggml-cpu.h")
#include "ggml-cpu.h"
#include "ggml.h"
#define KVP_HAVE_GGML 1

void compare_with_ggml() {
  ggml_cpu_init();
  struct Case {
    int64_t N, K;
    DType t;
    ggml_type gt;
  };
  std::printf("\nmatrix-vector kernels vs ggml (1 thread, hot cache, best of 2000)\n");
  for (const Case& c :
       {Case{576, 576, DType::Q4_1, GGML_TYPE_Q4_1}, Case{1536, 576, DType::Q4_1, GGML_TYPE_Q4_1},
        Case{576, 1536, DType::Q4_1, GGML_TYPE_Q4_1}, Case{1536, 576, DType::Q8_0, GGML_TYPE_Q8_0},
        Case{4096, 576, DType::Q8_0, GGML_TYPE_Q8_0}}) {
    Tensor w = random_weight(c.t, c.N, c.K);
    Tensor x = random_x(1, c.K);
    std::vector<float> y1(static_cast<size_t>(c.N)), y2(static_cast<size_t>(c.N)),
        xs(static_cast<size_t>(c.K / 32));
    const auto* tr = ggml_get_type_traits_cpu(c.gt);
    const auto* trq = ggml_get_type_traits_cpu(tr->vec_dot_type);
    std::vector<uint8_t> qx(ggml_row_size(tr->vec_dot_type, c.K));
    const auto* wp = static_cast<const uint8_t*>(w.data());
    const size_t rb = w.row_bytes();
    double best_k = 1e30, best_g = 1e30;
    for (int rep = 0; rep < 2000; ++rep) {
      const double t0 = now_us();
      kvp::cpu::block_sums32(x.ptr<float>(), c.K, xs.data());
      kvp::cpu::gemv(c.t, wp, rb, c.N, c.K, x.ptr<float>(), xs.data(), y1.data());
      const double t1 = now_us();
      trq->from_float(x.ptr<float>(), qx.data(), c.K);
      for (int64_t r = 0; r < c.N; ++r)
        tr->vec_dot(static_cast<int>(c.K), &y2[static_cast<size_t>(r)], 0,
                    wp + static_cast<size_t>(r) * rb, 0, qx.data(), 0, 1);
      const double t2 = now_us();
      best_k = std::min(best_k, t1 - t0);
      best_g = std::min(best_g, t2 - t1);
    }
    double diff = 0, big = 0;
    for (size_t r = 0; r < y1.size(); ++r) {
      diff = std::max(diff, static_cast<double>(std::fabs(y1[r] - y2[r])));
      big = std::max(big, static_cast<double>(std::fabs(y1[r])));
    }
    std::printf(
        "%-5s %5lld x %-5lld  ours %7.1f us  ggml %7.1f us  ours/ggml speed %.2f  max|ours - ggml| "
        "%.1e (max|y| %.2f)\n",
        kvp::dtype_name(c.t).c_str(), static_cast<long long>(c.N), static_cast<long long>(c.K),
        best_k, best_g, best_g / best_k, diff, big);
  }
}
#endif

}  // namespace

int main(int argc, char** argv) {
  int reps = 50;
  bool quick = false;
  std::vector<int> threads = {1, 2};
  std::vector<int> row_counts = {1, 512};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--threads" && i + 1 < argc) {
      threads = bench::parse_list(argv[++i]);
    } else if (a == "--rows" && i + 1 < argc) {
      row_counts = bench::parse_list(argv[++i]);
    } else if (a == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--threads 1,2] [--rows 1,512] [--quick]\n",
                   argv[0]);
      return 2;
    }
  }

  struct Shape {
    int64_t N, K;
    DType t;
  };
  const std::vector<Shape> shapes = {{576, 576, DType::Q4_1},  {192, 576, DType::Q4_1},
                                     {1536, 576, DType::Q4_1}, {576, 1536, DType::Q4_1},
                                     {576, 576, DType::Q8_0},  {1536, 576, DType::Q8_0},
                                     {49152, 576, DType::Q8_0}};
  std::printf("%-7s %-6s %-12s %5s %3s %12s %9s %9s\n", "threads", "type", "N x K", "T", "",
              "median_us", "GB/s", "GFLOP/s");
  for (int nt : threads) {
    auto be = kvp::make_backend("cpu", nt);
    for (const Shape& s : shapes) {
      Tensor w = random_weight(s.t, s.N, s.K);
      for (const int rows : row_counts) {
        const int64_t T = std::max(1, rows);
        if (quick && T >= 64 && s.N == 49152) continue;
        Tensor x = random_x(T, s.K);
        Tensor y = Tensor::empty(DType::F32, {T, s.N});
        const int r = T == 1 ? reps * 10 : T <= 64 ? reps : std::max(3, reps / 5);
        const double us = median_us(r, [&] { be->matmul(x, w, y); });
        const double gbs = static_cast<double>(w.nbytes()) / (us * 1e3);
        const double gflops = 2.0 * static_cast<double>(T * s.N * s.K) / (us * 1e3);
        std::printf("%-7d %-6s %5lld x %-5lld %5lld %3s %12.1f %9.1f %9.1f\n", nt,
                    kvp::dtype_name(s.t).c_str(), static_cast<long long>(s.N),
                    static_cast<long long>(s.K), static_cast<long long>(T), "", us, gbs, gflops);
      }
    }
  }

  // Attention: 9 query heads over 3 kv heads of 64 (SmolLM2), decode at several context
  // lengths and a 512-token prefill.
  std::printf("\n%-7s %-28s %12s %9s %9s\n", "threads", "attention", "median_us", "GB/s",
              "GFLOP/s");
  for (int nt : threads) {
    auto be = kvp::make_backend("cpu", nt);
    for (auto [T, ctx] :
         {std::pair<int64_t, int64_t>{1, 1024}, {1, 4096}, {1, 16384}, {512, 0}, {2048, 0}}) {
      if (quick && T == 2048) continue;
      const int64_t D = 64, Hkv = 3, Hq = 9, len = ctx + T;
      Tensor k = random_x(Hkv * len, D), v = random_x(Hkv * len, D), q = random_x(T * Hq, D);
      Tensor o = Tensor::empty(DType::F32, {T, Hq, D});
      q = q.reshaped({T, Hq, D});
      std::vector<int64_t> off = {0, len, 2 * len}, lens = {len, len, len};
      kvp::KvSegments kv{k, v, off.data(), lens.data(), 3, 64};
      const double us = median_us(T == 1 ? reps * 2 : std::max(3, reps / 10),
                                  [&] { be->attention(q, kv, 0.125f, o); });
      // keys seen: T * ctx + T (T + 1) / 2 per query head
      const double pairs =
          static_cast<double>(Hq) * (static_cast<double>(T) * ctx + 0.5 * T * (T + 1));
      const double kv_bytes = 2.0 * Hkv * len * D * 4;
      char what[64];
      std::snprintf(what, sizeof what, "T=%lld ctx=%lld", static_cast<long long>(T),
                    static_cast<long long>(ctx));
      std::printf("%-7d %-28s %12.1f %9.1f %9.1f\n", nt, what, us, kv_bytes / (us * 1e3),
                  4.0 * D * pairs / (us * 1e3));
    }
  }

  // The eval grid's decode attention: 4 contexts of 1024 rows, each with 24 cells that
  // borrow 75%, 50% or 25% of every kv head's rows (random subsets) plus the baseline, every
  // cache holding 60 more rows of question and answer; one step = one query per cache (100
  // jobs) on each of 30 layers. The same step over copied (not borrowed) caches for
  // comparison. Grid decode steps spend most of their non-matmul time here.
  {
    const int layers = 30, contexts = quick ? 1 : 4, T = 1024, extra = 60;
    const double ratios[3] = {0.25, 0.5, 0.75};
    std::vector<std::unique_ptr<kvp::KVCache>> lenders, borrowed, copied;
    const auto memory = kvp::make_backend("cpu", 1);  // where the caches live (host memory)
    std::vector<int32_t> pos(static_cast<size_t>(T + extra));
    for (int i = 0; i < T + extra; ++i) pos[static_cast<size_t>(i)] = i;
    for (int c = 0; c < contexts; ++c) {
      lenders.push_back(std::make_unique<kvp::KVCache>(*memory, layers, 3, 64, T + extra));
      for (int l = 0; l < layers; ++l) {
        Tensor k = random_x(T, 3 * 64), v = random_x(T, 3 * 64);
        lenders.back()->append(l, k.reshaped({T, 3, 64}), v.reshaped({T, 3, 64}), pos.data());
      }
      for (int cell = 0; cell < 24; ++cell) {
        borrowed.push_back(std::make_unique<kvp::KVCache>(*memory, layers, 3, 64, extra));
        copied.push_back(std::make_unique<kvp::KVCache>(*memory, layers, 3, 64, extra));
        const int64_t kept = static_cast<int64_t>(T * (1 - ratios[cell % 3]));
        for (int l = 0; l < layers; ++l) {
          kvp::KeepPlan keep(3);
          for (auto& rows : keep) {
            std::vector<int32_t> all(static_cast<size_t>(T));
            for (int i = 0; i < T; ++i) all[static_cast<size_t>(i)] = i;
            for (int i = T - 1; i > 0; --i)
              std::swap(all[static_cast<size_t>(i)],
                        all[next_u64() % static_cast<uint64_t>(i + 1)]);
            rows.assign(all.begin(), all.begin() + kept);
            std::sort(rows.begin(), rows.end());
          }
          borrowed.back()->borrow_kept(l, *lenders.back(), keep, extra);
          copied.back()->copy_kept(l, *lenders.back(), keep, extra);
        }
      }
    }
    const auto add_rows = [&](std::vector<std::unique_ptr<kvp::KVCache>>& caches) {
      for (auto& cache : caches)
        for (int l = 0; l < layers; ++l) {
          Tensor k = random_x(extra, 3 * 64), v = random_x(extra, 3 * 64);
          const int64_t at = cache->lengths()[static_cast<size_t>(l)][0];
          cache->append(l, k.reshaped({extra, 3, 64}), v.reshaped({extra, 3, 64}), pos.data() + at);
        }
    };
    add_rows(borrowed);
    add_rows(copied);
    add_rows(lenders);
    Tensor q = random_x(9, 64).reshaped({1, 9, 64});
    std::vector<Tensor> outs;
    for (size_t i = 0; i < lenders.size() + borrowed.size(); ++i)
      outs.push_back(Tensor::empty(DType::F32, {1, 9, 64}));
    std::printf("\n%-7s %-28s %12s %9s %9s\n", "threads", "grid decode attention", "us/step",
                "us/row", "GFLOP/s");
    for (int nt : threads) {
      auto be = kvp::make_backend("cpu", nt);
      for (const bool borrow : {true, false}) {
        const auto& cells = borrow ? borrowed : copied;
        std::vector<std::vector<kvp::AttentionJob>> jobs(layers);  // per layer, one per cache
        double keys = 0;
        for (int l = 0; l < layers; ++l) {
          size_t o = 0;
          for (int c = 0; c < contexts; ++c) {
            jobs[l].push_back({&q, lenders[static_cast<size_t>(c)]->view(l), &outs[o++]});
            for (int cell = 0; cell < 24; ++cell)
              jobs[l].push_back(
                  {&q, cells[static_cast<size_t>(c * 24 + cell)]->view(l), &outs[o++]});
          }
          for (const auto& j : jobs[l])
            for (int g = 0; g < 3; ++g) keys += static_cast<double>(j.kv.len[g]);
        }
        const double us = median_us(std::max(3, reps / 4), [&] {
          for (int l = 0; l < layers; ++l) be->attention_batch(jobs[l], 0.125f);
        });
        char what[64];
        std::snprintf(what, sizeof what, "%d ctx x 25 cells, %s", contexts,
                      borrow ? "borrowed" : "copied");
        // Per key of a kv head: 3 query heads x (QK + PV) x 64 x 2 flops.
        std::printf("%-7d %-28s %12.1f %9.1f %9.1f\n", nt, what, us, us / (25.0 * contexts),
                    keys * 3 * 4 * 64 / (us * 1e3));
      }
    }
  }

  // One decode token's matmuls on distinct weights (cache-cold, as in a real model).
  const int layers = 30;
  struct Layer {
    Tensor q, k, v, o, gate, up, down;
  };
  std::vector<Layer> model;
  for (int l = 0; l < layers; ++l)
    model.push_back({random_weight(DType::Q4_1, 576, 576), random_weight(DType::Q4_1, 192, 576),
                     random_weight(DType::Q4_1, 192, 576), random_weight(DType::Q4_1, 576, 576),
                     random_weight(DType::Q4_1, 1536, 576), random_weight(DType::Q4_1, 1536, 576),
                     random_weight(DType::Q4_1, 576, 1536)});
  Tensor head = random_weight(DType::Q8_0, 49152, 576);
  size_t bytes = head.nbytes();
  for (const Layer& L : model)
    bytes += L.q.nbytes() + L.k.nbytes() + L.v.nbytes() + L.o.nbytes() + L.gate.nbytes() +
             L.up.nbytes() + L.down.nbytes();
  Tensor x = random_x(1, 576), xi = random_x(1, 1536);
  Tensor yq = Tensor::empty(DType::F32, {1, 576}), ykv = Tensor::empty(DType::F32, {1, 192});
  Tensor yi = Tensor::empty(DType::F32, {1, 1536}), yv = Tensor::empty(DType::F32, {1, 49152});
  std::printf("\ndecode step, matmuls only: 30 layers x 7 Q4_1 + Q8_0 head, %.1f MB of weights\n",
              bytes / 1e6);
  for (int nt : threads) {
    auto be = kvp::make_backend("cpu", nt);
    const double us = median_us(std::max(5, reps / 2), [&] {
      for (const Layer& L : model) {
        be->matmul(x, L.q, yq);
        be->matmul(x, L.k, ykv);
        be->matmul(x, L.v, ykv);
        be->matmul(x, L.o, yq);
        be->matmul(x, L.gate, yi);
        be->matmul(x, L.up, yi);
        be->matmul(xi, L.down, yq);
      }
      be->matmul(x, head, yv);
    });
    std::printf("threads %d: %.0f us per token (%.1f tokens/s), %.1f GB/s\n", nt, us, 1e6 / us,
                static_cast<double>(bytes) / (us * 1e3));
  }
#ifdef KVP_HAVE_GGML
  compare_with_ggml();
#endif
  return 0;
}
