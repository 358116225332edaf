#include "pipeline/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace kvp {

void SamplingParams::validate() const {
  check(std::isfinite(temperature) && temperature >= 0 && temperature <= 100,
        "temperature must be in [0, 100], got " + std::to_string(temperature));
  check(std::isfinite(top_p) && top_p > 0 && top_p <= 1,
        "top_p must be in (0, 1], got " + std::to_string(top_p));
  check(top_k >= 0, "top_k must be 0 (all tokens) or positive, got " + std::to_string(top_k));
}

int32_t argmax_token(std::span<const float> logits) {
  check(!logits.empty(), "sampling: no logits");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
  return static_cast<int32_t>(best);
}

Sampler::Sampler(const SamplingParams& params) : p_(params), rng_(params.seed) {
  p_.validate();
}

double Sampler::uniform() {
  return static_cast<double>(rng_() >> 11) * 0x1p-53;
}

int32_t Sampler::next(std::span<const float> logits) {
  if (p_.greedy()) return argmax_token(logits);
  check(!logits.empty(), "sampling: no logits");
  // Candidates in descending order of logit, ties to the lower index; NaN logits never, nor
  // logits so far below the top that exp() of their distance underflows a double's share of
  // the total (all of them together weigh less than 2^-60 of it), so that only the plausible
  // few hundred are sorted, not the whole vocabulary.
  float top = -INFINITY;
  for (float x : logits)
    if (x > top) top = x;
  check(top > -INFINITY ||
            std::any_of(logits.begin(), logits.end(), [](float x) { return x == -INFINITY; }),
        "sampling: every logit is NaN");
  if (top == -INFINITY) return argmax_token(logits);  // nothing has any weight
  const double floor = top - 80.0 * p_.temperature;
  candidates_.clear();
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] >= floor) candidates_.push_back({logits[i], static_cast<int32_t>(i)});
  auto before = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = candidates_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {
    n = static_cast<size_t>(p_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<ptrdiff_t>(n),
                      candidates_.end(), before);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), before);
  }
  // Softmax of logit / temperature over the candidates, then the nucleus: the shortest
  // prefix whose mass reaches top_p (at least one token).
  weights_.resize(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    weights_[i] = std::exp((static_cast<double>(candidates_[i].first) - top) / p_.temperature);
    total += weights_[i];
  }
  if (p_.top_p < 1) {
    double mass = 0;
    size_t keep = 0;
    while (keep < n && (keep == 0 || mass < p_.top_p * total)) mass += weights_[keep++];
    n = keep;
    total = mass;
  }
  const double u = uniform() * total;
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += weights_[i];
    if (u < acc) return candidates_[i].second;
  }
  return candidates_[n - 1].second;  // u rounded onto the total
}

}  // namespace kvp
