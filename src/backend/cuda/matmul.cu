// y = x w^T. Decode-sized x (a few rows) runs a matrix-vector kernel that streams the weight
// matrix once with 16-byte loads and keeps x in f32; larger x goes to cuBLAS (x rounded to
// the weight type, products accumulated in f32). matmul_argmax is the greedy token.
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/op_checks.h"

namespace kvp::cuda {

namespace {

constexpr int kGemvMaxRows = 8;
constexpr int kGemvWarps = 8;

__device__ __forceinline__ void unpack16(const uint4& u, const float*, float* out) {
  const float* f = reinterpret_cast<const float*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) out[i] = f[i];
}
__device__ __forceinline__ void unpack16(const uint4& u, const __half* p, float* out) {
  unpack8(u, p, out);
}
__device__ __forceinline__ void unpack16(const uint4& u, const __nv_bfloat16* p, float* out) {
  unpack8(u, p, out);
}

// One warp per output row o: y[t, o] = sum_i x[t, i] w[o, i] for the NT rows of x.
template <typename W, int NT>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const float* __restrict__ x, const W* __restrict__ w, float* __restrict__ y,
                int64_t N, int64_t K) {
  constexpr int V = 16 / sizeof(W);
  const int lane = threadIdx.x % 32;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  if (o >= N) return;
  const W* row = w + o * K;
  float acc[NT] = {};
  // Four independent 16-byte loads in flight per lane.
  constexpr int kLoads = 4;
  for (int64_t i = lane * V; i < K; i += kLoads * 32 * V) {
    uint4 u[kLoads];
#pragma unroll
    for (int h = 0; h < kLoads; ++h)
      if (i + h * 32 * V < K) u[h] = __ldg(reinterpret_cast<const uint4*>(row + i + h * 32 * V));
#pragma unroll
    for (int h = 0; h < kLoads; ++h) {
      if (i + h * 32 * V >= K) break;
      float wf[V];
      unpack16(u[h], static_cast<const W*>(nullptr), wf);
      const int64_t base = i + h * 32 * V;
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const float4* xp = reinterpret_cast<const float4*>(x + t * K + base);
#pragma unroll
        for (int j = 0; j < V / 4; ++j) {
          const float4 xv = xp[j];
          acc[t] +=
              wf[4 * j] * xv.x + wf[4 * j + 1] * xv.y + wf[4 * j + 2] * xv.z + wf[4 * j + 3] * xv.w;
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[t * N + o] = s;
  }
}

// Rows of any length (no vector loads): one warp per output row, x kept in f32.
template <typename W>
__global__ void gemv_scalar_kernel(const float* x, const W* w, float* y, int64_t T, int64_t N,
                                   int64_t K) {
  const int lane = threadIdx.x % 32;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  if (o >= N) return;
  for (int64_t t = 0; t < T; ++t) {
    float acc = 0.f;
    for (int64_t i = lane; i < K; i += 32) acc += x[t * K + i] * to_f32(w[o * K + i]);
    acc = warp_sum(acc);
    if (lane == 0) y[t * N + o] = acc;
  }
}

template <typename W, int NT>
void launch_gemv(const float* x, const W* w, float* y, int64_t N, int64_t K, cudaStream_t s) {
  const unsigned blocks = static_cast<unsigned>((N + kGemvWarps - 1) / kGemvWarps);
  gemv_kernel<W, NT><<<blocks, kGemvWarps * 32, 0, s>>>(x, w, y, N, K);
}

template <typename W>
void gemv(int64_t T, const float* x, const W* w, float* y, int64_t N, int64_t K, cudaStream_t s) {
  switch (T) {
    case 1:
      return launch_gemv<W, 1>(x, w, y, N, K, s);
    case 2:
      return launch_gemv<W, 2>(x, w, y, N, K, s);
    case 3:
      return launch_gemv<W, 3>(x, w, y, N, K, s);
    case 4:
      return launch_gemv<W, 4>(x, w, y, N, K, s);
    case 5:
      return launch_gemv<W, 5>(x, w, y, N, K, s);
    case 6:
      return launch_gemv<W, 6>(x, w, y, N, K, s);
    case 7:
      return launch_gemv<W, 7>(x, w, y, N, K, s);
    default:
      return launch_gemv<W, 8>(x, w, y, N, K, s);
  }
}

template <typename T>
__global__ void narrow_kernel(const float* x, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = from_f32<T>(x[i]);
}

// One block per row of y: the first index of the largest value.
__global__ void argmax_kernel(const float* y, int64_t N, int32_t* out) {
  const float* row = y + blockIdx.x * N;
  float best = -INFINITY;
  int64_t at = N;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
    if (row[i] > best || at == N) best = row[i], at = i;
  __shared__ float sv[1024];
  __shared__ int64_t si[1024];
  sv[threadIdx.x] = best;
  si[threadIdx.x] = at;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) {
      const float v = sv[threadIdx.x + o];
      const int64_t i = si[threadIdx.x + o];
      if (v > sv[threadIdx.x] || (v == sv[threadIdx.x] && i < si[threadIdx.x])) {
        sv[threadIdx.x] = v;
        si[threadIdx.x] = i;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<int32_t>(si[0]);
}

cudaDataType cuda_type(DType t) {
  return t == DType::BF16 ? CUDA_R_16BF : t == DType::F16 ? CUDA_R_16F : CUDA_R_32F;
}

}  // namespace

void CudaBackend::matmul(const Tensor& x, const Tensor& w, Tensor& y) {
  check_f32(this, x, "matmul x");
  check_f32(this, y, "matmul y");
  check_rows(this, w, "matmul w (load weights with load_weight)");
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  check(w.cols() == K,
        "matmul: x has " + std::to_string(K) + " columns, w " + std::to_string(w.cols()));
  check(y.rows() == T && y.cols() == N, "matmul: y must be [" + std::to_string(T) + ", " +
                                            std::to_string(N) + "], got " + y.shape_string());
  if (T == 0 || N == 0) return;
  const size_t wsize = w.dtype() == DType::F32 ? 4 : 2;
  if (T <= kGemvMaxRows) {
    const bool vectors = K % (16 / wsize) == 0;
    with_row_type(w.dtype(), [&](auto p) {
      using W = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
      const auto* wp = static_cast<const W*>(w.data());
      if (vectors) return gemv<W>(T, x.ptr<float>(), wp, y.ptr<float>(), N, K, stream());
      gemv_scalar_kernel<W>
          <<<static_cast<unsigned>((N + kGemvWarps - 1) / kGemvWarps), kGemvWarps * 32, 0,
             stream()>>>(x.ptr<float>(), wp, y.ptr<float>(), T, N, K);
    });
    return check_launch("gemv");
  }
  check(T <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "matmul: dims above 2^31");
  const float one = 1.f, zero = 0.f;
  const int m = static_cast<int>(N), n = static_cast<int>(T), k = static_cast<int>(K);
  // Column-major view: y^T [N, T] = w [K, N]^T x^T [K, T].
  if (w.dtype() == DType::F32) {
    check_cublas(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w.ptr<float>(), k,
                             x.ptr<float>(), k, &zero, y.ptr<float>(), m),
                 "matmul (f32)");
    return;
  }
  void* xn = scratch(Slot::GemmInput, static_cast<size_t>(T * K) * wsize);
  with_row_type(w.dtype(), [&](auto p) {
    using W = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    narrow_kernel<W>
        <<<blocks_for(T * K), 256, 0, stream()>>>(x.ptr<float>(), static_cast<W*>(xn), T * K);
  });
  check_launch("matmul narrow");
  check_cublas(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w.data(),
                            cuda_type(w.dtype()), k, xn, cuda_type(w.dtype()), k, &zero, y.data(),
                            CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "matmul (16-bit)");
}

std::vector<int32_t> CudaBackend::matmul_argmax(const Tensor& x, const Tensor& w) {
  const int64_t T = x.rows(), N = w.rows();
  std::vector<int32_t> out(static_cast<size_t>(T));
  if (T == 0) return out;
  check(N > 0, "matmul_argmax: w has no rows");
  Tensor logits =
      Tensor::view(DType::F32, {T, N},
                   scratch(Slot::Logits, static_cast<size_t>(T * N) * 4 + 4 * T), Device::CUDA)
          .adopted_by(*this, Device::CUDA);
  matmul(x, w, logits);
  auto* idx = reinterpret_cast<int32_t*>(logits.ptr<float>() + T * N);
  argmax_kernel<<<static_cast<unsigned>(T), 1024, 0, stream()>>>(logits.ptr<float>(), N, idx);
  check_launch("argmax");
  check_cuda(cudaMemcpyAsync(out.data(), idx, static_cast<size_t>(T) * 4, cudaMemcpyDeviceToHost,
                             stream()),
             "matmul_argmax");
  check_device_errors();
  return out;
}

}  // namespace kvp::cuda
