#include "presses/scores.h"

#include "core/error.h"

namespace kvp {

Backend& Scores::backend() const {
  check(values.backend() != nullptr, "scores: not in a backend's memory");
  return *values.backend();
}

Tensor Scores::head(int h) const {
  check(h >= 0 && h < n_heads, "scores: head out of range");
  return values.row_slice(h, h + 1, {1, n_rows});
}

Scores alloc_scores(Backend& backend, int n_heads, int64_t n_rows) {
  return {n_heads, n_rows, backend.alloc(DType::F32, {n_heads, n_rows})};
}

Scores full_scores(Backend& backend, int n_heads, int64_t n_rows, float value) {
  Scores s = alloc_scores(backend, n_heads, n_rows);
  backend.affine(s.values, 0.f, value);
  return s;
}

Scores copy_scores(const Scores& s) {
  Scores c = alloc_scores(s.backend(), s.n_heads, s.n_rows);
  s.backend().copy(s.values, 0, c.values, 0, s.values.nbytes());
  return c;
}

Scores upload_scores(Backend& backend, int n_heads, int64_t n_rows,
                     const std::vector<float>& values) {
  check(static_cast<int64_t>(values.size()) == n_heads * n_rows, "scores: wrong number of values");
  Scores s = alloc_scores(backend, n_heads, n_rows);
  backend.upload(values.data(), s.values, 0, s.values.nbytes());
  return s;
}

std::vector<float> download_f32(const Tensor& t) {
  check(t.dtype() == DType::F32 && t.backend() != nullptr, "download_f32: not an F32 tensor");
  std::vector<float> out(static_cast<size_t>(t.numel()));
  t.backend()->download(t, 0, out.data(), t.nbytes());
  return out;
}

std::vector<int32_t> download_i32(const Tensor& t) {
  check(t.dtype() == DType::I32 && t.backend() != nullptr, "download_i32: not an I32 tensor");
  std::vector<int32_t> out(static_cast<size_t>(t.numel()));
  t.backend()->download(t, 0, out.data(), t.nbytes());
  return out;
}

Tensor upload_f32(Backend& backend, const std::vector<float>& values) {
  Tensor t = backend.alloc(DType::F32, {static_cast<int64_t>(values.size())});
  backend.upload(values.data(), t, 0, t.nbytes());
  return t;
}

KeepPlan top_k_plan(const Tensor& scores, int64_t k) {
  check(scores.ndim() == 2 && scores.backend() != nullptr, "top_k_plan: scores must be [H, n]");
  const int64_t H = scores.dim(0);
  k = std::min(k, scores.dim(1));
  Tensor idx = scores.backend()->alloc(DType::I32, {H, k});
  scores.backend()->top_k(scores, k, idx);
  const std::vector<int32_t> flat = download_i32(idx);
  KeepPlan keep(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h)
    keep[static_cast<size_t>(h)].assign(flat.begin() + h * k, flat.begin() + (h + 1) * k);
  return keep;
}

std::vector<int32_t> top_k_row(const Tensor& row, int64_t k) {
  return top_k_plan(row.reshaped({1, row.numel()}), k)[0];
}

}  // namespace kvp
