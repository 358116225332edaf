// The press ops (scores and selections): warp-per-row reductions accumulate in double, as the
// reference does, so results match it to f32 rounding; element-wise ops keep torch's two
// roundings for a*b+c (no fused multiply-add).
#include <cmath>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/op_checks.h"

namespace kvp::cuda {

namespace {

constexpr int kRowWarps = 8;  // rows per block of the warp-per-row kernels

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>((rows + kRowWarps - 1) / kRowWarps);
}

__device__ __forceinline__ int64_t warp_row() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
}

// sum over the row of |x| (L1) or x^2 (L2), in double.
template <typename T>
__device__ double row_sum(const T* x, int64_t C, bool l1) {
  double s = 0;
  for (int64_t c = threadIdx.x % 32; c < C; c += 32) {
    const double v = to_f32(x[c]);
    s += l1 ? fabs(v) : v * v;
  }
  return warp_sum(s);
}

template <typename T>
__global__ void row_norms_kernel(const T* x, int64_t R, int64_t C, bool l1, float* out) {
  const int64_t r = warp_row();
  if (r >= R) return;
  const double s = row_sum(x + r * C, C, l1);
  if (threadIdx.x % 32 == 0) out[r] = static_cast<float>(l1 ? s : sqrt(s));
}

template <typename T>
__global__ void cosine_kernel(const T* x, const float* a, int64_t R, int64_t C, float eps,
                              float* out) {
  const int64_t r = warp_row();
  if (r >= R) return;
  const T* row = x + r * C;
  double dot = 0, aa = 0;
  for (int64_t c = threadIdx.x % 32; c < C; c += 32) {
    dot += static_cast<double>(to_f32(row[c])) * a[c];
    aa += static_cast<double>(a[c]) * a[c];
  }
  dot = warp_sum(dot);
  aa = warp_sum(aa);
  const double xn = fmax(sqrt(row_sum(row, C, false)), static_cast<double>(eps));
  const double an = fmax(sqrt(aa), static_cast<double>(eps));
  if (threadIdx.x % 32 == 0) out[r] = static_cast<float>(dot / (xn * an));
}

template <typename T>
__global__ void normalize_kernel(const T* x, int64_t R, int64_t C, float eps, float* out) {
  const int64_t r = warp_row();
  if (r >= R) return;
  const double inv = 1.0 / fmax(sqrt(row_sum(x + r * C, C, false)), static_cast<double>(eps));
  for (int64_t c = threadIdx.x % 32; c < C; c += 32)
    out[r * C + c] = static_cast<float>(to_f32(x[r * C + c]) * inv);
}

// One output per warp: reduce n values at x[o * outer + i * inner].
__global__ void reduce_kernel(const float* x, int64_t n_out, int64_t n_in, int64_t outer,
                              int64_t inner, int op, float* out) {
  const int64_t o = warp_row();
  if (o >= n_out) return;
  double acc = op == 2 ? -INFINITY : 0.0;
  bool all_nan = true;
  for (int64_t i = threadIdx.x % 32; i < n_in; i += 32) {
    const float v = x[o * outer + i * inner];
    all_nan = all_nan && isnan(v);
    if (op == 2) {
      if (v > acc) acc = v;
    } else {
      acc += v;
    }
  }
  all_nan = __all_sync(0xffffffffu, all_nan) && n_in > 0;
  if (op == 2) {
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) acc = fmax(acc, __shfl_xor_sync(0xffffffffu, acc, s));
  } else {
    acc = warp_sum(acc);
  }
  if (op == 1) acc /= static_cast<double>(n_in);
  if (op == 2 && all_nan) acc = NAN;
  if (threadIdx.x % 32 == 0) out[o] = static_cast<float>(acc);
}

__global__ void affine_kernel(float* x, int64_t n, float scale, float shift) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = __fadd_rn(__fmul_rn(x[i], scale), shift);
}

__global__ void broadcast_kernel(float* y, const float* x, int64_t n, int64_t m, bool divide) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = divide ? __fdiv_rn(y[i], x[i % m]) : __fmul_rn(y[i], x[i % m]);
}

// One warp per row: max, exp (f32) with a double sum, then the division.
__global__ void softmax_kernel(float* x, int64_t R, int64_t C) {
  const int64_t r = warp_row();
  if (r >= R) return;
  float* row = x + r * C;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x % 32; c < C; c += 32) mx = fmaxf(mx, row[c]);
  mx = warp_max(mx);
  double sum = 0;
  for (int64_t c = threadIdx.x % 32; c < C; c += 32) {
    row[c] = expf(row[c] - mx);
    sum += row[c];
  }
  sum = warp_sum(sum);
  for (int64_t c = threadIdx.x % 32; c < C; c += 32)
    row[c] = static_cast<float>(static_cast<double>(row[c]) / sum);
}

__global__ void transpose_kernel(const float* x, int64_t R, int64_t C, float* out) {
  __shared__ float tile[32][33];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32,
                r0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < R && c < C) tile[i][threadIdx.x] = x[r * C + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < R && c < C) out[c * R + r] = tile[threadIdx.x][i];
  }
}

__global__ void avg_pool_kernel(const float* src, int64_t R, int64_t C, int64_t cols,
                                int64_t kernel, double scale, float* out) {
  const int64_t n = R * cols, pad = kernel / 2;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / cols, j = e % cols;
    double acc = 0;
    const int64_t lo = j - pad < 0 ? 0 : j - pad, hi = j + pad < cols - 1 ? j + pad : cols - 1;
    for (int64_t i = lo; i <= hi; ++i) acc += src[r * C + i] * scale;
    out[r * C + j] = static_cast<float>(acc / static_cast<double>(kernel));
  }
}

// One block: the largest entry outside columns [begin, end), then those columns set to it + plus.
__global__ void set_cols_to_max_kernel(float* x, int64_t R, int64_t C, int64_t begin, int64_t end,
                                       float plus) {
  float best = -INFINITY;
  for (int64_t e = threadIdx.x; e < R * C; e += blockDim.x) {
    const int64_t c = e % C;
    if (c < begin || c >= end) best = fmaxf(best, x[e]);
  }
  __shared__ float part[32];
  best = warp_max(best);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : -INFINITY;
    v = warp_max(v);
    if (threadIdx.x == 0) part[0] = v;
  }
  __syncthreads();
  const float value = part[0] + plus;
  const int64_t w = end - begin;
  for (int64_t e = threadIdx.x; e < R * w; e += blockDim.x) x[(e / w) * C + begin + e % w] = value;
}

__global__ void scatter_kernel(float* x, const int32_t* idx, int64_t R, int64_t C, int64_t k,
                               float value, int* error) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < R * k;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t c = idx[e];
    if (c < 0 || c >= C) {
      atomicExch(error, 1);
      continue;
    }
    x[(e / k) * C + c] = value;
  }
}

template <typename F>
void with_rows(const Tensor& x, F&& f) {
  with_row_type(x.dtype(), [&](auto p) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    f(static_cast<const T*>(x.data()));
  });
}

}  // namespace

void CudaBackend::row_norms(const Tensor& x, Norm norm, Tensor& out) {
  check_rows(this, x, "row_norms x");
  check_f32(this, out, "row_norms out");
  check(out.numel() == x.rows(), "row_norms: out must hold one value per row");
  if (x.rows() == 0) return;
  with_rows(x, [&](auto p) {
    row_norms_kernel<<<row_blocks(x.rows()), kRowWarps * 32, 0, stream()>>>(
        p, x.rows(), x.cols(), norm == Norm::L1, out.ptr<float>());
  });
  check_launch("row_norms");
}

void CudaBackend::cosine_similarity(const Tensor& x, const Tensor& a, float eps, Tensor& out) {
  check_rows(this, x, "cosine_similarity x");
  check_f32(this, a, "cosine_similarity a");
  check_f32(this, out, "cosine_similarity out");
  check(a.numel() == x.cols() && out.numel() == x.rows(),
        "cosine_similarity: a must hold one row, out one value per row");
  if (x.rows() == 0) return;
  with_rows(x, [&](auto p) {
    cosine_kernel<<<row_blocks(x.rows()), kRowWarps * 32, 0, stream()>>>(
        p, a.ptr<float>(), x.rows(), x.cols(), eps, out.ptr<float>());
  });
  check_launch("cosine_similarity");
}

void CudaBackend::normalize_rows(const Tensor& x, float eps, Tensor& out) {
  check_rows(this, x, "normalize_rows x");
  check_f32(this, out, "normalize_rows out");
  check(out.numel() == x.numel(), "normalize_rows: out must have x's size");
  if (x.rows() == 0 || x.cols() == 0) return;
  with_rows(x, [&](auto p) {
    normalize_kernel<<<row_blocks(x.rows()), kRowWarps * 32, 0, stream()>>>(p, x.rows(), x.cols(),
                                                                            eps, out.ptr<float>());
  });
  check_launch("normalize_rows");
}

void CudaBackend::reduce(const Tensor& x, int axis, Reduce op, Tensor& out) {
  check_f32(this, x, "reduce x");
  check_f32(this, out, "reduce out");
  check(axis == 0 || axis == 1, "reduce: axis must be 0 or 1");
  const int64_t R = x.rows(), C = x.cols();
  const int64_t n_out = axis == 0 ? C : R, n_in = axis == 0 ? R : C;
  check(out.numel() == n_out, "reduce: out has the wrong size");
  if (n_out == 0) return;
  const int code = op == Reduce::Sum ? 0 : op == Reduce::Mean ? 1 : 2;
  reduce_kernel<<<row_blocks(n_out), kRowWarps * 32, 0, stream()>>>(
      x.ptr<float>(), n_out, n_in, axis == 0 ? 1 : C, axis == 0 ? C : 1, code, out.ptr<float>());
  check_launch("reduce");
}

void CudaBackend::affine(Tensor& x, float scale, float shift) {
  check_f32(this, x, "affine x");
  if (x.numel() == 0) return;
  affine_kernel<<<blocks_for(x.numel()), 256, 0, stream()>>>(x.ptr<float>(), x.numel(), scale,
                                                             shift);
  check_launch("affine");
}

namespace {

void check_broadcast(const Backend* be, const Tensor& y, const Tensor& x, const char* what) {
  check_f32(be, y, what);
  check_f32(be, x, what);
  const int64_t n = y.numel(), m = x.numel();
  check(m == n || m == 1 || (m > 0 && m == y.cols()),
        std::string(what) + ": x must have y's size, be one row of y, or one value");
}

}  // namespace

void CudaBackend::mul(Tensor& y, const Tensor& x) {
  check_broadcast(this, y, x, "mul");
  if (y.numel() == 0) return;
  broadcast_kernel<<<blocks_for(y.numel()), 256, 0, stream()>>>(y.ptr<float>(), x.ptr<float>(),
                                                                y.numel(), x.numel(), false);
  check_launch("mul");
}

void CudaBackend::div(Tensor& y, const Tensor& x) {
  check_broadcast(this, y, x, "div");
  if (y.numel() == 0) return;
  broadcast_kernel<<<blocks_for(y.numel()), 256, 0, stream()>>>(y.ptr<float>(), x.ptr<float>(),
                                                                y.numel(), x.numel(), true);
  check_launch("div");
}

void CudaBackend::softmax_rows(Tensor& x) {
  check_f32(this, x, "softmax_rows x");
  if (x.rows() == 0 || x.cols() == 0) return;
  softmax_kernel<<<row_blocks(x.rows()), kRowWarps * 32, 0, stream()>>>(x.ptr<float>(), x.rows(),
                                                                        x.cols());
  check_launch("softmax_rows");
}

void CudaBackend::transpose(const Tensor& x, Tensor& out) {
  check_f32(this, x, "transpose x");
  check_f32(this, out, "transpose out");
  const int64_t R = x.rows(), C = x.cols();
  check(out.numel() == R * C && out.cols() == R, "transpose: out must be [cols, rows]");
  if (R == 0 || C == 0) return;
  const dim3 grid(static_cast<unsigned>((C + 31) / 32), static_cast<unsigned>((R + 31) / 32));
  transpose_kernel<<<grid, dim3(32, 8), 0, stream()>>>(x.ptr<float>(), R, C, out.ptr<float>());
  check_launch("transpose");
}

void CudaBackend::avg_pool(const Tensor& x, int64_t cols, int64_t kernel, double scale,
                           Tensor& out) {
  check_f32(this, x, "avg_pool x");
  check_f32(this, out, "avg_pool out");
  const int64_t R = x.rows(), C = x.cols();
  check(out.rows() == R && out.cols() == C, "avg_pool: out must have x's shape");
  check(cols >= 0 && cols <= C, "avg_pool: cols out of range");
  check(kernel >= 1 && kernel % 2 == 1, "avg_pool: kernel must be odd and >= 1");
  if (R == 0 || cols == 0) return;
  const float* src = x.ptr<float>();
  if (x.data() == out.data()) {  // out may alias x: pool from a copy
    auto* copy = static_cast<float*>(scratch(Slot::Misc, x.nbytes()));
    check_cuda(cudaMemcpyAsync(copy, src, x.nbytes(), cudaMemcpyDeviceToDevice, stream()),
               "avg_pool");
    src = copy;
  }
  avg_pool_kernel<<<blocks_for(R * cols), 256, 0, stream()>>>(src, R, C, cols, kernel, scale,
                                                              out.ptr<float>());
  check_launch("avg_pool");
}

void CudaBackend::set_cols_to_max(Tensor& x, int64_t begin, int64_t end, float plus) {
  check_f32(this, x, "set_cols_to_max x");
  const int64_t R = x.rows(), C = x.cols();
  check(begin >= 0 && begin <= end && end <= C, "set_cols_to_max: columns out of range");
  if (R == 0 || begin == end) return;
  set_cols_to_max_kernel<<<1, 1024, 0, stream()>>>(x.ptr<float>(), R, C, begin, end, plus);
  check_launch("set_cols_to_max");
}

void CudaBackend::scatter_value(Tensor& x, const Tensor& idx, float value) {
  check_f32(this, x, "scatter_value x");
  check(idx.dtype() == DType::I32, "scatter_value: idx must be I32");
  check_dev(this, idx, "scatter_value idx");
  const int64_t R = x.rows(), C = x.cols();
  check(idx.numel() == 0 || idx.rows() == R, "scatter_value: idx must have x's rows");
  const int64_t k = idx.numel() == 0 ? 0 : idx.cols();
  if (R * k == 0) return;
  scatter_kernel<<<blocks_for(R * k), 256, 0, stream()>>>(x.ptr<float>(), idx.ptr<int32_t>(), R, C,
                                                          k, value, device_error_flag());
  check_launch("scatter_value");
  // The indices live on the device: the range check waits for it (presses call this once a
  // layer, outside the decode path).
  check_device_errors();
}

}  // namespace kvp::cuda
