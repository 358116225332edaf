#include "model/random_weights.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "core/half.h"

namespace kvp {

namespace {

// One weight to make. Its hash index comes from its role and layer, not from which weights
// the config has, so a tensor's values do not change when another one appears (qkv biases).
struct Slot {
  Tensor* dst = nullptr;
  DType dtype = DType::F32;
  std::array<int64_t, 4> shape{0, 0, 0, 0};
  int ndim = 0;
  uint64_t index = 0;
  float bound = 0;  // uniform in [-bound, bound]; 0 makes a norm weight: all ones
};

// Indices 0..2: embedding, output norm, output; then kLayerRoles per layer.
constexpr uint64_t kLayerRoles = 14;
// Small next to the unit-scale projections they are added to, as trained biases mostly are.
constexpr float kBiasBound = 0.02f;
// Elements per fill task: large enough to amortise the scheduling, small enough that the
// largest matrix (the embedding) spreads over every thread. Even, so hash pairs stay aligned.
constexpr int64_t kChunk = int64_t{1} << 22;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// splitmix64's output function: consecutive inputs give independent-looking outputs, which
// makes hash(key + counter) a random stream that can be entered at any element.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Variance 1/fan_in ("LeCun uniform"): a unit-RMS input gives a unit-RMS output, so q.k
// scores, the MLP and the logits stay O(1) and the pre-norm residual grows only as the square
// root of the layer count.
float matrix_bound(int64_t fan_in) {
  return std::sqrt(3.0f / static_cast<float>(fan_in));
}

std::vector<Slot> plan(const ModelConfig& c, ModelWeights& w) {
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  std::vector<Slot> s;
  auto matrix = [&](Tensor& t, uint64_t index, int64_t rows, int64_t cols) {
    s.push_back({&t, DType::BF16, {rows, cols, 0, 0}, 2, index, matrix_bound(cols)});
  };
  auto vec = [&](Tensor& t, uint64_t index, int64_t n, float bound) {
    s.push_back({&t, DType::F32, {n, 0, 0, 0}, 1, index, bound});
  };
  matrix(w.token_embedding, 0, c.vocab_size, c.hidden);
  vec(w.output_norm, 1, c.hidden, 0);
  if (!c.tied_embeddings) matrix(w.output, 2, c.vocab_size, c.hidden);
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    const uint64_t b = 3 + kLayerRoles * static_cast<uint64_t>(l);
    vec(lw.attn_norm, b + 0, c.hidden, 0);
    matrix(lw.wq, b + 1, q_dim, c.hidden);
    matrix(lw.wk, b + 2, kv_dim, c.hidden);
    matrix(lw.wv, b + 3, kv_dim, c.hidden);
    matrix(lw.wo, b + 4, c.hidden, q_dim);
    if (c.qkv_bias) {
      vec(lw.bq, b + 5, q_dim, kBiasBound);
      vec(lw.bk, b + 6, kv_dim, kBiasBound);
      vec(lw.bv, b + 7, kv_dim, kBiasBound);
    }
    if (c.qk_norm) {
      vec(lw.q_norm, b + 8, c.head_dim, 0);
      vec(lw.k_norm, b + 9, c.head_dim, 0);
    }
    vec(lw.ffn_norm, b + 10, c.hidden, 0);
    matrix(lw.w_gate, b + 11, c.ffn_hidden, c.hidden);
    matrix(lw.w_up, b + 12, c.ffn_hidden, c.hidden);
    matrix(lw.w_down, b + 13, c.hidden, c.ffn_hidden);
  }
  return s;
}

// Runs fn(0..n-1) on every hardware thread, each taking the next task when it finishes one.
// The first exception (out of memory) stops the rest and is rethrown here.
void parallel_for(size_t n, const std::function<void(size_t)>& fn) {
  const size_t n_threads = std::min<size_t>(n, std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) {
      try {
        fn(i);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = n;
      }
    }
  };
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n_threads; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

// Elements [begin, end) of a uniform stream; begin is even. One hash gives two elements (its
// two 32-bit halves, read as signed), which halves the cost of 8e9 elements.
template <typename T, typename Convert>
void fill_uniform(T* out, int64_t begin, int64_t end, uint64_t key, float bound, Convert convert) {
  const float scale = bound / 2147483648.0f;
  int64_t i = begin;
  for (; i + 1 < end; i += 2) {
    const uint64_t h = mix64(key + static_cast<uint64_t>(i / 2) * kGolden);
    out[i] = convert(scale * static_cast<float>(static_cast<int32_t>(h)));
    out[i + 1] = convert(scale * static_cast<float>(static_cast<int32_t>(h >> 32)));
  }
  if (i < end) {
    const uint64_t h = mix64(key + static_cast<uint64_t>(i / 2) * kGolden);
    out[i] = convert(scale * static_cast<float>(static_cast<int32_t>(h)));
  }
}

void fill(const Slot& s, uint64_t seed, int64_t begin, int64_t end) {
  Tensor& t = *s.dst;
  if (s.bound == 0) {
    std::fill(t.ptr<float>() + begin, t.ptr<float>() + end, 1.0f);
    return;
  }
  const uint64_t key = mix64(mix64(seed) + s.index);
  if (s.dtype == DType::BF16)
    fill_uniform(t.ptr<uint16_t>(), begin, end, key, s.bound, f32_to_bf16);
  else
    fill_uniform(t.ptr<float>(), begin, end, key, s.bound, [](float v) { return v; });
}

struct Chunk {
  size_t slot;
  int64_t begin, end;
};

std::vector<Chunk> chunks_of(const std::vector<Slot>& slots) {
  std::vector<Chunk> chunks;
  for (size_t s = 0; s < slots.size(); ++s) {
    const int64_t n = slots[s].dst->numel();
    for (int64_t at = 0; at < n; at += kChunk) chunks.push_back({s, at, std::min(n, at + kChunk)});
  }
  return chunks;
}

}  // namespace

ModelWeights random_weights(const ModelConfig& c, uint64_t seed) {
  c.validate();
  ModelWeights w;
  const std::vector<Slot> slots = plan(c, w);
  // Tensor::empty zeroes (and so first-touches) its memory: 16 GB at 8B, worth the threads.
  parallel_for(slots.size(), [&](size_t i) {
    const Slot& s = slots[i];
    *s.dst = Tensor::empty(s.dtype, s.shape, s.ndim);
  });
  const std::vector<Chunk> chunks = chunks_of(slots);
  parallel_for(chunks.size(), [&](size_t i) {
    fill(slots[chunks[i].slot], seed, chunks[i].begin, chunks[i].end);
  });
  if (c.tied_embeddings) w.output = w.token_embedding;
  return w;
}

std::unique_ptr<Model> random_model(const std::string& config_json_path, Backend& backend,
                                    uint64_t seed) {
  ModelConfig config = config_from_hf_json(config_json_path);
  ModelWeights weights = random_weights(config, seed);
  return std::make_unique<Model>(std::move(config), std::move(weights), backend);
}

}  // namespace kvp
