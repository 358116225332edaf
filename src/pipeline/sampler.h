#pragma once
// Seeded sampling of the next token from a row of logits: temperature, then top-k, then
// top-p (nucleus), as Hugging Face's generate orders them. Temperature 0 is greedy decoding:
// the argmax, the first index on ties, exactly what Model::forward_batch_greedy picks.
// The draws come from std::mt19937_64, whose sequence the standard fixes, turned into
// uniforms here (not by std::uniform_real_distribution, whose algorithm it leaves open), so a
// seed gives the same tokens on every platform.
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace kvp {

struct SamplingParams {
  double temperature = 0;  // 0: greedy
  double top_p = 1;        // keep the most likely tokens until their mass reaches top_p
  int64_t top_k = 0;       // keep the top_k most likely tokens; 0: all of them
  uint64_t seed = 0;

  bool greedy() const { return temperature == 0; }
  // Throws Error naming the parameter: temperature finite in [0, 100], top_p in (0, 1],
  // top_k >= 0.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // The next token from one row of logits (host memory, one per vocabulary entry).
  int32_t next(std::span<const float> logits);

 private:
  double uniform();  // in [0, 1), 53 random bits

  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // reused between calls
  std::vector<double> weights_;
};

// The first index of the largest logit (NaN never wins).
int32_t argmax_token(std::span<const float> logits);

}  // namespace kvp
