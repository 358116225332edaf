// The press ops of the CPU backend. Those whose cost grows with the cache run in parallel
// over rows: norms, cosine, normalize and top-k with their own loops (F32 scratch rows
// instead of a vector per row; top-k by integer keys), softmax and pooling with the
// reference's loop on each thread's rows. The ones over a layer's scores alone (a few
// floats per row) are the reference's, which is all they need on a CPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/op_checks.h"
#include "backend/cpu/quant.h"
#include "backend/cpu/reference.h"
#include "core/error.h"

namespace kvp::cpu {

namespace {

// fn(begin, end) over rows, in parallel when there is enough work.
void for_rows(ThreadPool& pool, int64_t rows, int64_t cols,
              const std::function<void(int64_t, int64_t)>& fn) {
  if (rows <= 0) return;
  if (pool.size() == 1 || rows < 2 || rows * cols < (1 << 14)) return fn(0, rows);
  pool.parallel_for(rows, fn);
}

// Row r of x as F32: the row itself, or converted into scratch.
const float* row_f32(const Tensor& x, int64_t r, std::vector<float>& scratch) {
  if (x.dtype() == DType::F32) return x.ptr<float>() + r * x.cols();
  scratch.resize(static_cast<size_t>(x.cols()));
  dequantize_row(x.dtype(), x.row_ptr(r), scratch.data(), x.cols());
  return scratch.data();
}

double sum_sq(const float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * v[i];
  return s;
}

// A score as an unsigned key whose ascending order is the score's descending order: -0
// ranks with +0, NaN after every number.
uint32_t descending_key(float x) {
  if (std::isnan(x)) return 0xFFFFFFFFu;
  if (x == 0.f) x = 0.f;
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending in x
  return ~u;
}

}  // namespace

void row_norms(ThreadPool& pool, const Tensor& x, Norm norm, Tensor& out) {
  check_rows(x, "row_norms x");
  check_f32(out, "row_norms out");
  check(out.numel() == x.rows(), "row_norms: out must hold one value per row");
  const int64_t C = x.cols();
  for_rows(pool, x.rows(), C, [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch;
    for (int64_t r = r0; r < r1; ++r) {
      const float* v = row_f32(x, r, scratch);
      double s = 0;
      if (norm == Norm::L1) {
        for (int64_t i = 0; i < C; ++i) s += std::fabs(static_cast<double>(v[i]));
      } else {
        s = std::sqrt(sum_sq(v, C));
      }
      out.ptr<float>()[r] = static_cast<float>(s);
    }
  });
}

void cosine_similarity(ThreadPool& pool, const Tensor& x, const Tensor& a, float eps, Tensor& out) {
  check_rows(x, "cosine_similarity x");
  check_f32(a, "cosine_similarity a");
  check_f32(out, "cosine_similarity out");
  check(a.numel() == x.cols() && out.numel() == x.rows(),
        "cosine_similarity: a must hold one row, out one value per row");
  const int64_t C = x.cols();
  const float* av = a.ptr<float>();
  const double an = std::max(std::sqrt(sum_sq(av, C)), static_cast<double>(eps));
  for_rows(pool, x.rows(), C, [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch;
    for (int64_t r = r0; r < r1; ++r) {
      const float* v = row_f32(x, r, scratch);
      double dot = 0;
      for (int64_t i = 0; i < C; ++i) dot += static_cast<double>(v[i]) * av[i];
      const double xn = std::max(std::sqrt(sum_sq(v, C)), static_cast<double>(eps));
      out.ptr<float>()[r] = static_cast<float>(dot / (xn * an));
    }
  });
}

void normalize_rows(ThreadPool& pool, const Tensor& x, float eps, Tensor& out) {
  check_rows(x, "normalize_rows x");
  check_f32(out, "normalize_rows out");
  check(out.numel() == x.numel(), "normalize_rows: out must have x's size");
  const int64_t C = x.cols();
  for_rows(pool, x.rows(), C, [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch;
    for (int64_t r = r0; r < r1; ++r) {
      const float* v = row_f32(x, r, scratch);
      const double inv = 1.0 / std::max(std::sqrt(sum_sq(v, C)), static_cast<double>(eps));
      float* o = out.ptr<float>() + r * C;
      for (int64_t i = 0; i < C; ++i) o[i] = static_cast<float>(v[i] * inv);
    }
  });
}

// Rows are independent: the reference's loop over each thread's rows.
void softmax_rows(ThreadPool& pool, Tensor& x) {
  check_f32(x, "softmax_rows x");
  const int64_t C = x.cols();
  for_rows(pool, x.rows(), C, [&](int64_t r0, int64_t r1) {
    Tensor rows = x.row_slice(r0, r1, {r1 - r0, C});
    ref::softmax_rows(rows);
  });
}

void avg_pool(ThreadPool& pool, const Tensor& x, int64_t cols, int64_t kernel, double scale,
              Tensor& out) {
  check_f32(x, "avg_pool x");
  check_f32(out, "avg_pool out");
  const int64_t R = x.rows(), C = x.cols();
  check(out.rows() == R && out.cols() == C, "avg_pool: out must have x's shape");
  for_rows(pool, R, cols * kernel, [&](int64_t r0, int64_t r1) {
    Tensor out_rows = out.row_slice(r0, r1, {r1 - r0, C});
    ref::avg_pool(x.row_slice(r0, r1, {r1 - r0, C}), cols, kernel, scale, out_rows);
  });
}

void top_k(ThreadPool& pool, const Tensor& x, int64_t k, Tensor& idx) {
  check_f32(x, "top_k x");
  check(idx.dtype() == DType::I32 && idx.device() == Device::CPU,
        "top_k: idx must be I32 on the CPU");
  const int64_t R = x.rows(), C = x.cols();
  check(k >= 0 && k <= C && idx.numel() == R * k, "top_k: idx must be [rows, k], k <= cols");
  for_rows(pool, R, C * 8, [&](int64_t r0, int64_t r1) {
    // (score key, index) packed in one integer: one integer sort instead of a sort of
    // indices through a comparator that reads both scores. The low half breaks ties.
    std::vector<uint64_t> keys(static_cast<size_t>(C));
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = x.ptr<float>() + r * C;
      for (int64_t i = 0; i < C; ++i)
        keys[static_cast<size_t>(i)] =
            (static_cast<uint64_t>(descending_key(row[i])) << 32) | static_cast<uint32_t>(i);
      if (k < C) std::nth_element(keys.begin(), keys.begin() + k, keys.end());
      std::sort(keys.begin(), keys.begin() + k);
      int32_t* o = idx.ptr<int32_t>() + r * k;
      for (int64_t i = 0; i < k; ++i)
        o[i] = static_cast<int32_t>(keys[static_cast<size_t>(i)] & 0xFFFFFFFFu);
    }
  });
}

}  // namespace kvp::cpu
