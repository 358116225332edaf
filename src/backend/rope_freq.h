#pragma once
// RoPE's inverse frequencies (transformers' default and llama3 rules, in f32 as transformers
// computes them). A property of the model's RoPE parameters, not an op: every backend's rope
// and the presses that average rotations (expected_attention) share it from here.
#include <cmath>
#include <numbers>

#include "backend/backend.h"
#include "core/error.h"

namespace kvp {

// inv_freq[i] for i < head_dim / 2, llama3 scaling applied when configured.
inline void rope_inv_freq(const RopeParams& p, float* inv_freq) {
  const int D = p.head_dim;
  check(D > 0 && D % 2 == 0, "rope: head_dim must be even and positive");
  for (int i = 0; i < D / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(D);
    inv_freq[i] = 1.0f / std::pow(p.theta, e);
  }
  if (p.llama3_factor == 0.f) return;
  const float factor = p.llama3_factor;
  const float low = p.llama3_low_freq_factor, high = p.llama3_high_freq_factor;
  const float old_len = static_cast<float>(p.llama3_original_max_positions);
  // Python evaluates these two in double, then they meet f32 tensors as f32 scalars.
  const float low_freq_wavelen =
      static_cast<float>(static_cast<double>(p.llama3_original_max_positions) / low);
  const float high_freq_wavelen =
      static_cast<float>(static_cast<double>(p.llama3_original_max_positions) / high);
  const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
  const float high_minus_low =
      static_cast<float>(static_cast<double>(high) - static_cast<double>(low));
  for (int i = 0; i < D / 2; ++i) {
    const float f = inv_freq[i];
    const float wavelen = two_pi / f;
    float out = wavelen > low_freq_wavelen ? f / factor : f;
    if (!(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen)) {
      const float smooth = (old_len / wavelen - low) / high_minus_low;
      out = (1.0f - smooth) * out / factor + smooth * out;
    }
    inv_freq[i] = out;
  }
}

}  // namespace kvp
