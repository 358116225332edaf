// Element-wise and per-row ops of the forward pass: RMSNorm, RoPE, SwiGLU, residual adds,
// the embedding lookup. Each is one memory pass; reductions accumulate in f32.
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/op_checks.h"
#include "backend/rope_freq.h"

namespace kvp::cuda {

namespace {

constexpr int kMaxHalfDim = 256;  // RoPE frequencies passed by value (head_dim <= 512)

struct InvFreq {
  float v[kMaxHalfDim];
};

// One block per row: y = x / rms(x) * w.
__global__ void rms_norm_kernel(const float* x, const float* w, float eps, float* y, int64_t D) {
  wait_for_predecessor();
  release_dependents();
  const float* xr = x + blockIdx.x * D;
  float* yr = y + blockIdx.x * D;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
  __shared__ float partial[32];
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
    v = warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv = rsqrtf(partial[0] / static_cast<float>(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = (xr[i] * inv) * w[i];
}

// The same for rows of D % 4 == 0, D <= 4 * 256 * kNormVecs: 256 threads hold their part of
// the row (and of w) in registers, so the row is read once and w's loads overlap the sum.
constexpr int kNormVecs = 8;
__global__ void __launch_bounds__(256)
    rms_norm_vec_kernel(const float4* x, const float4* w, float eps, float4* y, int64_t D) {
  wait_for_predecessor();
  release_dependents();
  const int64_t n4 = D / 4;
  const float4* xr = x + blockIdx.x * n4;
  float4 xv[kNormVecs], wv[kNormVecs];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < kNormVecs; ++j) {
    const int64_t i = threadIdx.x + 256 * j;
    if (i < n4) {
      xv[j] = xr[i];
      wv[j] = w[i];
      ss += xv[j].x * xv[j].x + xv[j].y * xv[j].y + xv[j].z * xv[j].z + xv[j].w * xv[j].w;
    }
  }
  __shared__ float partial[8];
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int k = 0; k < 8; ++k) total += partial[k];
  const float inv = rsqrtf(total / static_cast<float>(D) + eps);
#pragma unroll
  for (int j = 0; j < kNormVecs; ++j) {
    const int64_t i = threadIdx.x + 256 * j;
    if (i < n4)
      y[blockIdx.x * n4 + i] = make_float4((xv[j].x * inv) * wv[j].x, (xv[j].y * inv) * wv[j].y,
                                           (xv[j].z * inv) * wv[j].z, (xv[j].w * inv) * wv[j].w);
  }
}

// x: [T, heads, D]; one thread per (t, head, i < D/2) pair of rotated values.
__global__ void rope_kernel(float* x, const int32_t* pos, const __grid_constant__ InvFreq f,
                            int64_t T, int64_t heads, int64_t D) {
  wait_for_predecessor();
  release_dependents();
  const int64_t half = D / 2, n = T * heads * half;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % half, row = e / half, t = row / heads;
    float s, c;
    sincosf(static_cast<float>(pos[t]) * f.v[i], &s, &c);
    float* v = x + row * D;
    const float x0 = v[i], x1 = v[i + half];
    v[i] = x0 * c - x1 * s;
    v[i + half] = x1 * c + x0 * s;
  }
}

__global__ void silu_mul_kernel(float* g, const float* u, int64_t n) {
  wait_for_predecessor();
  release_dependents();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void add_kernel(float* y, const float* x, int64_t n, int64_t period) {
  wait_for_predecessor();
  release_dependents();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += x[i % period];
}

template <typename T>
__global__ void embed_kernel(const T* table, const int32_t* ids, int64_t D, float* out) {
  wait_for_predecessor();
  release_dependents();
  const T* row = table + static_cast<int64_t>(ids[blockIdx.x]) * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) out[blockIdx.x * D + i] = to_f32(row[i]);
}

}  // namespace

void CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  check_f32(this, x, "rms_norm x");
  check_f32(this, y, "rms_norm y");
  check_f32(this, weight, "rms_norm weight");
  const int64_t D = weight.numel();
  check(D > 0 && x.numel() % D == 0 && y.numel() == x.numel(), "rms_norm: shapes do not match");
  const int64_t rows = x.numel() / D;
  if (rows == 0) return;
  const auto aligned = [](const Tensor& t) {
    return reinterpret_cast<uintptr_t>(t.data()) % 16 == 0;
  };
  if (D % 4 == 0 && D <= 4 * 256 * kNormVecs && D >= 1024 && aligned(x) && aligned(y) &&
      aligned(weight))
    return launch(rms_norm_vec_kernel, static_cast<unsigned>(rows), 256, 0, stream(), "rms_norm",
                  static_cast<const float4*>(x.data()), static_cast<const float4*>(weight.data()),
                  eps, static_cast<float4*>(y.data()), D);
  const int threads = D >= 1024 ? 1024 : (D >= 256 ? 256 : 64);
  launch(rms_norm_kernel, static_cast<unsigned>(rows), threads, 0, stream(), "rms_norm",
         x.ptr<float>(), weight.ptr<float>(), eps, y.ptr<float>(), D);
}

void CudaBackend::rope(Tensor& x, const int32_t* positions, const RopeParams& params) {
  check_f32(this, x, "rope x");
  const int64_t D = params.head_dim;
  check(D > 0 && D % 2 == 0 && x.cols() == D, "rope: x's last dim must equal head_dim");
  check(D / 2 <= kMaxHalfDim, "rope: head_dim above 512 is not supported on CUDA");
  const int64_t T = x.ndim() >= 3 ? x.dim(0) : x.rows();
  if (T == 0 || x.numel() == 0) return;
  InvFreq f{};
  rope_inv_freq(params, f.v);
  const auto* pos = static_cast<const int32_t*>(stage(positions, T * sizeof(int32_t)));
  const int64_t heads = x.rows() / T;
  launch(rope_kernel, blocks_for(T * heads * D / 2), 256, 0, stream(), "rope", x.ptr<float>(), pos,
         f, T, heads, D);
}

void CudaBackend::silu_mul(Tensor& gate, const Tensor& up) {
  check_f32(this, gate, "silu_mul gate");
  check_f32(this, up, "silu_mul up");
  check(gate.numel() == up.numel(), "silu_mul: gate and up differ in size");
  if (gate.numel() == 0) return;
  launch(silu_mul_kernel, blocks_for(gate.numel()), 256, 0, stream(), "silu_mul", gate.ptr<float>(),
         up.ptr<float>(), gate.numel());
}

void CudaBackend::add(Tensor& y, const Tensor& x) {
  check_f32(this, y, "add y");
  check_f32(this, x, "add x");
  check(y.numel() == x.numel(), "add: sizes differ");
  if (y.numel() == 0) return;
  launch(add_kernel, blocks_for(y.numel()), 256, 0, stream(), "add", y.ptr<float>(), x.ptr<float>(),
         y.numel(), y.numel());
}

void CudaBackend::add_bias(Tensor& y, const Tensor& bias) {
  check_f32(this, y, "add_bias y");
  check_f32(this, bias, "add_bias bias");
  const int64_t n = bias.numel();
  check(n > 0 && y.numel() % n == 0, "add_bias: bias does not divide y");
  if (y.numel() == 0) return;
  launch(add_kernel, blocks_for(y.numel()), 256, 0, stream(), "add_bias", y.ptr<float>(),
         bias.ptr<float>(), y.numel(), n);
}

void CudaBackend::embed(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out) {
  check_f32(this, out, "embed out");
  check_rows(this, table, "embed table (load it with load_weight)");
  const int64_t V = table.rows(), D = table.cols();
  check(out.numel() == n * D,
        "embed: out must hold " + std::to_string(n) + " rows of " + std::to_string(D));
  for (int64_t t = 0; t < n; ++t)
    if (ids[t] < 0 || ids[t] >= V)  // the message is built on failure only
      throw Error("embed: token id " + std::to_string(ids[t]) + " out of range [0, " +
                  std::to_string(V) + ")");
  if (n == 0) return;
  const auto* d_ids = static_cast<const int32_t*>(stage(ids, n * sizeof(int32_t)));
  with_row_type(table.dtype(), [&](auto p) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    launch(embed_kernel<T>, static_cast<unsigned>(n), 256, 0, stream(), "embed",
           static_cast<const T*>(table.data()), d_ids, D, out.ptr<float>());
  });
}

}  // namespace kvp::cuda
