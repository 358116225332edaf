// Times Backend::matmul_argmax, greedy decoding's vocabulary projection, on the default
// model's output head shape (SmolLM2-135M: a Q8_0 table of 49152 x 576) at the row counts of
// batched decode steps (one eval grid context of 25 cells, 8 contexts: 200), against the f32
// matmul and a host argmax it replaces. The first call on a table also builds the CPU
// screen's repacked copy of it (argmax_projection_cpu.cpp); that is timed apart.
//
//   build/bench/argmax_bench [--reps N] [--threads 1,2] [--rows 4,25,200]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/factory.h"
#include "bench_util.h"
#include "core/half.h"
#include "core/tensor.h"

namespace {

using bench::median_us;
using bench::next_f;
using bench::next_u64;
using bench::now_us;
using bench::parse_list;
using kvp::DType;
using kvp::Tensor;

// Random Q8_0 rows: random quants, small finite scales.
Tensor random_q8_0(int64_t rows, int64_t cols) {
  Tensor w = Tensor::empty(DType::Q8_0, {rows, cols});
  auto* p = static_cast<uint8_t*>(w.data());
  for (size_t i = 0; i < w.nbytes(); ++i) p[i] = static_cast<uint8_t>(next_u64());
  for (size_t b = 0; b < w.nbytes() / 34; ++b) {
    const uint16_t h = kvp::f32_to_f16(next_f(0.001f, 0.01f));
    std::memcpy(p + b * 34, &h, 2);
  }
  return w;
}

// Rows like a language model's last hidden states: each leans towards one random row of w
// (its token), whose logit then stands out of the rest by a few standard deviations, as a
// confident next token does. (Uniform noise alone gives 49152 near-equal logits, which no
// real step has, and the screen then recomputes hundreds of candidates per row.)
Tensor hidden_rows(const Tensor& w, int64_t T) {
  const int64_t K = w.cols();
  Tensor x = Tensor::empty(DType::F32, {T, K});
  for (int64_t t = 0; t < T; ++t) {
    const auto* row = w.row_ptr(static_cast<int64_t>(next_u64() % static_cast<uint64_t>(w.rows())));
    for (int64_t i = 0; i < K; ++i) {
      const auto q = static_cast<int8_t>(row[(i / 32) * 34 + 2 + i % 32]);
      x.ptr<float>()[t * K + i] = 0.3f * static_cast<float>(q) / 127.f + next_f(-1.f, 1.f);
    }
  }
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  std::vector<int> threads = {1, 2}, row_counts = {4, 25, 200};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--threads" && i + 1 < argc) {
      threads = parse_list(argv[++i]);
    } else if (a == "--rows" && i + 1 < argc) {
      row_counts = parse_list(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--threads 1,2] [--rows 4,25,200]\n", argv[0]);
      return 2;
    }
  }
  const int64_t N = 49152, K = 576;
  std::printf("%-7s %5s %14s %14s %14s\n", "threads", "T", "first_call_us", "argmax_us",
              "matmul_us");
  for (int nt : threads) {
    auto be = kvp::make_backend("cpu", nt);
    for (int rows : row_counts) {
      const int64_t T = std::max(1, rows);
      Tensor w = random_q8_0(N, K);  // a fresh table: the first call builds its screen
      Tensor x = hidden_rows(w, T);
      const double t0 = now_us();
      std::vector<int32_t> first = be->matmul_argmax(x, w);
      const double first_us = now_us() - t0;
      const double argmax_us = median_us(
          reps, [&] { first = be->matmul_argmax(x, w); }, false);
      Tensor y = Tensor::empty(DType::F32, {T, N});
      std::vector<int32_t> plain(static_cast<size_t>(T));
      const double matmul_us = median_us(
          std::max(3, reps / 4),
          [&] {
            be->matmul(x, w, y);
            for (int64_t t = 0; t < T; ++t) {
              const float* r = y.ptr<float>() + t * N;
              plain[static_cast<size_t>(t)] = static_cast<int32_t>(std::max_element(r, r + N) - r);
            }
          },
          false);
      if (plain != first) {
        std::fprintf(stderr, "matmul_argmax disagrees with argmax(matmul) at T = %lld\n",
                     static_cast<long long>(T));
        return 1;
      }
      std::printf("%-7d %5lld %14.0f %14.0f %14.0f\n", nt, static_cast<long long>(T), first_us,
                  argmax_us, matmul_us);
      std::fflush(stdout);
    }
  }
  return 0;
}
