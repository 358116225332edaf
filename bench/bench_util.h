#pragma once
// What the micro-benchmarks share: a deterministic random stream, a clock, the median of
// repeated runs and "1,2,4" lists on the command line.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace bench {

// xorshift64: the same inputs on every run and every machine.
inline uint64_t next_u64() {
  static uint64_t state = 0x9E3779B97F4A7C15ull;
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}
inline float next_f(float lo, float hi) {
  return lo + (hi - lo) * static_cast<float>(next_u64() >> 40) / 16777216.f;
}

inline double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The median of `reps` timed calls of fn, in microseconds, after one untimed call when
// warm_up is set (a first call that builds caches is then not counted).
template <typename Fn>
double median_us(int reps, const Fn& fn, bool warm_up = true) {
  if (warm_up) fn();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_us();
    fn();
    t.push_back(now_us() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

inline std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t c = s.find(',', pos);
    out.push_back(std::atoi(s.substr(pos, c - pos).c_str()));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  return out;
}

}  // namespace bench
