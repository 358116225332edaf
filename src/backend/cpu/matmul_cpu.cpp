// y[t, o] = sum_i x[t, i] * w[o, i] for weights of any type.
#include <algorithm>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/quant.h"
#include "backend/cpu/simd.h"
#include "core/error.h"

namespace kvp::cpu {

void matmul(ThreadPool& pool, const Tensor& x, const Tensor& w, Tensor& y) {
  check(x.dtype() == DType::F32 && y.dtype() == DType::F32, "matmul: x and y must be F32");
  check(x.device() == Device::CPU && w.device() == Device::CPU && y.device() == Device::CPU,
        "matmul: tensors must be on the CPU");
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  check(w.cols() == K, "matmul: x " + x.shape_string() + " and w " + w.shape_string() + " disagree on K");
  check(y.rows() == T && y.cols() == N, "matmul: y must be [" + std::to_string(T) + ", " +
                                            std::to_string(N) + "], got " + y.shape_string());
  if (T == 0 || N == 0) return;
  constexpr int64_t kRows = 16;
  const int64_t tiles = (N + kRows - 1) / kRows;
  const float* xp = x.ptr<float>();
  float* yp = y.ptr<float>();
  pool.parallel_for(tiles, [&](int64_t b, int64_t e) {
    std::vector<float> buf(static_cast<size_t>(kRows * K));
    for (int64_t tile = b; tile < e; ++tile) {
      const int64_t o0 = tile * kRows, o1 = std::min(N, o0 + kRows);
      for (int64_t o = o0; o < o1; ++o) dequantize_row(w.dtype(), w.row_ptr(o), buf.data() + (o - o0) * K, K);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t o = o0; o < o1; ++o) yp[t * N + o] = dot_f32(xp + t * K, buf.data() + (o - o0) * K, K);
    }
  });
}

}  // namespace kvp::cpu
