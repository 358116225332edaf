// Scalar references of the press ops (Backend::row_norms ... top_k): plain loops, sums in
// double, written for clarity. Each backend's press ops are tested against these. As in
// reference.cpp, a*b+c is two roundings (no contraction), as in PyTorch eager.
#if defined(__clang__)
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/op_checks.h"
#include "backend/cpu/reference.h"
#include "core/error.h"

namespace kvp::ref {

using cpu::check_cpu;
using cpu::check_f32;
using cpu::check_rows;

namespace {

// Row r of x ([rows, cols] of F32, F16 or BF16) as F32.
std::vector<float> row_f32(const Tensor& x, int64_t r) {
  std::vector<float> out(static_cast<size_t>(x.cols()));
  dequantize_row(x.dtype(), x.row_ptr(r), out.data(), x.cols());
  return out;
}

double norm_of(const std::vector<float>& v, Norm norm) {
  double s = 0;
  for (float a : v) s += norm == Norm::L1 ? std::fabs(static_cast<double>(a)) : double(a) * a;
  return norm == Norm::L1 ? s : std::sqrt(s);
}

// Python's key for ranking: the descending order of floats, -0 == +0, NaN after all.
bool ranks_before(float a, int64_t ia, float b, int64_t ib) {
  if (std::isnan(a) || std::isnan(b)) return !std::isnan(a) || (std::isnan(b) && ia < ib);
  if (a != b) return a > b;
  return ia < ib;
}

}  // namespace

void row_norms(const Tensor& x, Norm norm, Tensor& out) {
  check_rows(x, "row_norms x");
  check_f32(out, "row_norms out");
  check(out.numel() == x.rows(), "row_norms: out must hold one value per row");
  for (int64_t r = 0; r < x.rows(); ++r)
    out.ptr<float>()[r] = static_cast<float>(norm_of(row_f32(x, r), norm));
}

void cosine_similarity(const Tensor& x, const Tensor& a, float eps, Tensor& out) {
  check_rows(x, "cosine_similarity x");
  check_f32(a, "cosine_similarity a");
  check_f32(out, "cosine_similarity out");
  check(a.numel() == x.cols() && out.numel() == x.rows(),
        "cosine_similarity: a must hold one row, out one value per row");
  const std::vector<float> av(a.ptr<float>(), a.ptr<float>() + a.numel());
  const double an = std::max(norm_of(av, Norm::L2), static_cast<double>(eps));
  for (int64_t r = 0; r < x.rows(); ++r) {
    const std::vector<float> row = row_f32(x, r);
    double dot = 0;
    for (size_t i = 0; i < row.size(); ++i) dot += static_cast<double>(row[i]) * av[i];
    const double xn = std::max(norm_of(row, Norm::L2), static_cast<double>(eps));
    out.ptr<float>()[r] = static_cast<float>(dot / (xn * an));
  }
}

void normalize_rows(const Tensor& x, float eps, Tensor& out) {
  check_rows(x, "normalize_rows x");
  check_f32(out, "normalize_rows out");
  check(out.numel() == x.numel(), "normalize_rows: out must have x's size");
  const int64_t C = x.cols();
  for (int64_t r = 0; r < x.rows(); ++r) {
    const std::vector<float> row = row_f32(x, r);
    const double inv = 1.0 / std::max(norm_of(row, Norm::L2), static_cast<double>(eps));
    for (int64_t c = 0; c < C; ++c)
      out.ptr<float>()[r * C + c] = static_cast<float>(row[static_cast<size_t>(c)] * inv);
  }
}

void reduce(const Tensor& x, int axis, Reduce op, Tensor& out) {
  check_f32(x, "reduce x");
  check_f32(out, "reduce out");
  check(axis == 0 || axis == 1, "reduce: axis must be 0 or 1");
  const int64_t R = x.rows(), C = x.cols();
  const int64_t n_out = axis == 0 ? C : R, n_in = axis == 0 ? R : C;
  check(out.numel() == n_out, "reduce: out has the wrong size");
  for (int64_t o = 0; o < n_out; ++o) {
    double acc = op == Reduce::Max ? -INFINITY : 0.0;
    bool all_nan = n_in > 0;
    for (int64_t i = 0; i < n_in; ++i) {
      const float v = axis == 0 ? x.ptr<float>()[i * C + o] : x.ptr<float>()[o * C + i];
      all_nan = all_nan && std::isnan(v);
      if (op == Reduce::Max) {
        if (v > acc) acc = v;
      } else {
        acc += v;
      }
    }
    if (op == Reduce::Mean) acc /= static_cast<double>(n_in);
    if (op == Reduce::Max && all_nan) acc = NAN;
    out.ptr<float>()[o] = static_cast<float>(acc);
  }
}

void affine(Tensor& x, float scale, float shift) {
  check_f32(x, "affine x");
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float p = x.ptr<float>()[i] * scale;  // two roundings, as torch's mul then add
    x.ptr<float>()[i] = p + shift;
  }
}

namespace {

// y op= x with Backend::mul's broadcast rules.
template <typename Op>
void broadcast(Tensor& y, const Tensor& x, const char* what, Op op) {
  check_f32(y, what);
  check_f32(x, what);
  const int64_t n = y.numel(), m = x.numel();
  check(m == n || m == 1 || (m > 0 && m == y.cols()),
        std::string(what) + ": x must have y's size, be one row of y, or one value");
  for (int64_t i = 0; i < n; ++i) y.ptr<float>()[i] = op(y.ptr<float>()[i], x.ptr<float>()[i % m]);
}

}  // namespace

void mul(Tensor& y, const Tensor& x) {
  broadcast(y, x, "mul", [](float a, float b) { return a * b; });
}

void div(Tensor& y, const Tensor& x) {
  broadcast(y, x, "div", [](float a, float b) { return a / b; });
}

void softmax_rows(Tensor& x) {
  check_f32(x, "softmax_rows x");
  const int64_t C = x.cols();
  for (int64_t r = 0; r < x.rows(); ++r) {
    float* row = x.ptr<float>() + r * C;
    float mx = -INFINITY;
    for (int64_t c = 0; c < C; ++c) mx = std::max(mx, row[c]);
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) {
      row[c] = std::exp(row[c] - mx);
      sum += row[c];
    }
    for (int64_t c = 0; c < C; ++c) row[c] = static_cast<float>(row[c] / sum);
  }
}

void transpose(const Tensor& x, Tensor& out) {
  check_f32(x, "transpose x");
  check_f32(out, "transpose out");
  const int64_t R = x.rows(), C = x.cols();
  check(out.numel() == R * C && out.cols() == R, "transpose: out must be [cols, rows]");
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) out.ptr<float>()[c * R + r] = x.ptr<float>()[r * C + c];
}

void avg_pool(const Tensor& x, int64_t cols, int64_t kernel, double scale, Tensor& out) {
  check_f32(x, "avg_pool x");
  check_f32(out, "avg_pool out");
  const int64_t R = x.rows(), C = x.cols();
  check(out.rows() == R && out.cols() == C, "avg_pool: out must have x's shape");
  check(cols >= 0 && cols <= C, "avg_pool: cols out of range");
  check(kernel >= 1 && kernel % 2 == 1, "avg_pool: kernel must be odd and >= 1");
  const int64_t pad = kernel / 2;
  std::vector<float> src(x.ptr<float>(), x.ptr<float>() + x.numel());  // out may alias x
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      double acc = 0;
      for (int64_t i = std::max<int64_t>(0, j - pad); i <= std::min(cols - 1, j + pad); ++i)
        acc += src[static_cast<size_t>(r * C + i)] * scale;
      out.ptr<float>()[r * C + j] = static_cast<float>(acc / static_cast<double>(kernel));
    }
}

void set_cols_to_max(Tensor& x, int64_t begin, int64_t end, float plus) {
  check_f32(x, "set_cols_to_max x");
  const int64_t R = x.rows(), C = x.cols();
  check(begin >= 0 && begin <= end && end <= C, "set_cols_to_max: columns out of range");
  float best = -INFINITY;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c)
      if (c < begin || c >= end) best = std::max(best, x.ptr<float>()[r * C + c]);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = begin; c < end; ++c) x.ptr<float>()[r * C + c] = best + plus;
}

void scatter_value(Tensor& x, const Tensor& idx, float value) {
  check_f32(x, "scatter_value x");
  check(idx.dtype() == DType::I32, "scatter_value: idx must be I32");
  check_cpu(idx, "scatter_value idx");
  const int64_t R = x.rows(), C = x.cols();
  check(idx.numel() == 0 || idx.rows() == R, "scatter_value: idx must have x's rows");
  const int64_t k = idx.numel() == 0 ? 0 : idx.cols();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = 0; i < k; ++i) {
      const int32_t c = idx.ptr<int32_t>()[r * k + i];
      check(c >= 0 && c < C, "scatter_value: index " + std::to_string(c) + " out of range");
      x.ptr<float>()[r * C + c] = value;
    }
}

void top_k(const Tensor& x, int64_t k, Tensor& idx) {
  check_f32(x, "top_k x");
  check(idx.dtype() == DType::I32, "top_k: idx must be I32");
  check_cpu(idx, "top_k idx");
  const int64_t R = x.rows(), C = x.cols();
  check(k >= 0 && k <= C && idx.numel() == R * k, "top_k: idx must be [rows, k], k <= cols");
  std::vector<int64_t> order(static_cast<size_t>(C));
  for (int64_t r = 0; r < R; ++r) {
    const float* row = x.ptr<float>() + r * C;
    for (int64_t c = 0; c < C; ++c) order[static_cast<size_t>(c)] = c;
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return ranks_before(row[a], a, row[b], b); });
    for (int64_t i = 0; i < k; ++i)
      idx.ptr<int32_t>()[r * k + i] = static_cast<int32_t>(order[static_cast<size_t>(i)]);
  }
}

}  // namespace kvp::ref
