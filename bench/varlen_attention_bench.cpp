// Decode attention (one new query) over a uniform cache vs a head-wise cache with the same
// total rows: does giving kv heads different lengths (AdaKV-style presses) slow the CPU
// attention kernel down? SmolLM2-135M shapes: 9 query heads, 3 kv heads, head_dim 64.
// Uniform: every kv head holds L rows. Head-wise: 2L, L/2, L/2 (the same 3L rows). Each
// rep runs one attention per layer over enough distinct layers (up to 30) that the K/V
// buffers do not stay in cache; prints the median time per layer, both layouts and the ratio
// (the bar is head-wise <= 1.10x uniform), at total contexts 4k and 16k, 1 and 2 threads.
//
//   build/bench/varlen_attention_bench [--reps N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/factory.h"
#include "core/tensor.h"

namespace {

using kvp::DType;
using kvp::KvSegments;
using kvp::Tensor;

constexpr int kHq = 9, kHkv = 3, kD = 64;

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
float next_f() {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return static_cast<float>(g_rng >> 40) / 16777216.f - 0.5f;
}

// One layer's K/V rows in the cache layout: segments back to back.
struct Layer {
  std::vector<float> k, v;
  std::vector<int64_t> offset, len;
  KvSegments view() const {
    KvSegments s;
    const int64_t rows = static_cast<int64_t>(k.size()) / kD;
    s.k = Tensor::view(DType::F32, {rows, kD}, const_cast<float*>(k.data()));
    s.v = Tensor::view(DType::F32, {rows, kD}, const_cast<float*>(v.data()));
    s.offset = offset.data();
    s.len = len.data();
    s.n_segments = kHkv;
    s.head_dim = kD;
    return s;
  }
};

Layer make_layer(const std::vector<int64_t>& lens) {
  Layer l;
  int64_t total = 0;
  for (int64_t n : lens) {
    l.offset.push_back(total);
    l.len.push_back(n);
    total += n;
  }
  l.k.resize(static_cast<size_t>(total * kD));
  l.v.resize(l.k.size());
  for (auto& x : l.k) x = next_f();
  for (auto& x : l.v) x = next_f();
  return l;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds per layer of one decode attention.
double time_layout(kvp::Backend& be, const std::vector<Layer>& layers, int reps) {
  Tensor q = Tensor::empty(DType::F32, {1, kHq, kD});
  Tensor out = Tensor::empty(DType::F32, {1, kHq, kD});
  for (int64_t i = 0; i < q.numel(); ++i) q.ptr<float>()[i] = next_f();
  const float scale = 1.f / std::sqrt(static_cast<float>(kD));
  for (const auto& l : layers) be.attention(q, l.view(), scale, out);  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& l : layers) be.attention(q, l.view(), scale, out);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                static_cast<double>(layers.size()));
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 101;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
      return 2;
    }
  }
  std::printf(
      "decode attention, %d query heads, %d kv heads, head_dim %d; median of %d reps, per layer\n",
      kHq, kHkv, kD, reps);
  std::printf("%8s %8s %8s %14s %14s %8s %s\n", "context", "threads", "layers", "uniform us",
              "head-wise us", "ratio", "");
  for (int64_t L : {4096, 16384}) {
    const int64_t bytes = 3 * L * kD * 2 * static_cast<int64_t>(sizeof(float));
    const int n_layers =
        static_cast<int>(std::min<int64_t>(30, std::max<int64_t>(4, (256 << 20) / bytes)));
    std::vector<Layer> uniform, headwise;
    for (int l = 0; l < n_layers; ++l) {
      uniform.push_back(make_layer({L, L, L}));
      headwise.push_back(make_layer({2 * L, L / 2, L / 2}));
    }
    for (int threads : {1, 2}) {
      auto be = kvp::make_backend("cpu", threads);
      // Alternate the two layouts so drift (frequency, other load) hits both alike.
      std::vector<double> u, h;
      for (int round = 0; round < 3; ++round) {
        u.push_back(time_layout(*be, uniform, reps / 3 + 1));
        h.push_back(time_layout(*be, headwise, reps / 3 + 1));
      }
      const double tu = median(u), th = median(h);
      std::printf("%8lld %8d %8d %14.1f %14.1f %8.3f %s\n", static_cast<long long>(L), threads,
                  n_layers, tu * 1e6, th * 1e6, th / tu, th / tu <= 1.10 ? "ok" : "OVER 1.10x");
    }
  }
  return 0;
}
