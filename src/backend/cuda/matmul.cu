// y = x w^T. Decode-sized x (a few rows) runs a matrix-vector kernel that streams the weight
// matrix once with 16-byte loads and keeps x in f32; larger x goes to cuBLAS (x rounded to
// the weight type, products accumulated in f32). matmul_argmax is the greedy token.
#include <cstdlib>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/launch.cuh"
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

// Up to three matrices that read the same x, streamed by one launch: matrix m takes blocks
// [first_block[m], first_block[m + 1]).
constexpr int kGemvMaxMats = 3;
template <typename W>
struct GemvMats {
  const W* w[kGemvMaxMats];
  float* y[kGemvMaxMats];
  int64_t n[kGemvMaxMats];
  unsigned first_block[kGemvMaxMats + 1];
  int count;
  bool accumulate;  // y += x w^T (matmul_add) instead of y = x w^T
};

// SPLIT warps per output row o: y[t, o] = sum_i x[t, i] w[o, i] for the NT rows of x, eight
// 16-byte loads in flight per lane. A matrix with few rows splits each row's columns over
// several warps, so that enough blocks keep enough loads in flight. The first loads are of
// weights, which no kernel writes: they go out before the wait for the kernel that writes x.
template <typename W, int NT, int SPLIT>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const float* __restrict__ x, const GemvMats<W> mats, int64_t K) {
  constexpr int V = 16 / sizeof(W);
  constexpr int kLoads = 8;
  constexpr int kStride = SPLIT * 32 * V;
  // Constant indices only: a kernel parameter indexed at run time is copied to local memory.
  const int m = mats.count > 1 && blockIdx.x >= mats.first_block[1]
                    ? (mats.count > 2 && blockIdx.x >= mats.first_block[2] ? 2 : 1)
                    : 0;
  const int64_t N = m == 0 ? mats.n[0] : m == 1 ? mats.n[1] : mats.n[2];
  const unsigned first = m == 0 ? 0u : m == 1 ? mats.first_block[1] : mats.first_block[2];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t o = static_cast<int64_t>(blockIdx.x - first) * (kGemvWarps / SPLIT) + warp / SPLIT;
  const W* row = (m == 0 ? mats.w[0] : m == 1 ? mats.w[1] : mats.w[2]) + (o < N ? o : 0) * K;
  int64_t i = ((warp % SPLIT) * 32 + lane) * V;
  uint4 u[kLoads];
  auto load = [&] {
#pragma unroll
    for (int h = 0; h < kLoads; ++h)
      if (i + h * kStride < K) u[h] = __ldg(reinterpret_cast<const uint4*>(row + i + h * kStride));
  };
  if (o < N) load();
  wait_for_predecessor();
  release_dependents();
  float acc[NT] = {};
  while (o < N && i < K) {
#pragma unroll
    for (int h = 0; h < kLoads; ++h) {
      if (i + h * kStride >= K) break;
      float wf[V];
      unpack16(u[h], static_cast<const W*>(nullptr), wf);
      const int64_t base = i + h * kStride;
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
    i += kLoads * kStride;
    if (i < K) load();
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = warp_sum(acc[t]);
  if constexpr (SPLIT > 1) {
    __shared__ float part[kGemvWarps][NT];
    if (lane == 0)
#pragma unroll
      for (int t = 0; t < NT; ++t) part[warp][t] = acc[t];
    __syncthreads();
    if (warp % SPLIT != 0 || o >= N) return;
#pragma unroll
    for (int t = 0; t < NT; ++t)
      for (int p = 1; p < SPLIT; ++p) acc[t] += part[warp + p][t];
  }
  float* y = m == 0 ? mats.y[0] : m == 1 ? mats.y[1] : mats.y[2];
  if (lane == 0 && o < N)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      if (mats.accumulate)
        y[t * N + o] += acc[t];
      else
        y[t * N + o] = acc[t];
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

// Warps per row: the fewest that give every SM at least kGemvMinBlocks blocks.
// KVP_GEMV_SPLIT=1 keeps one warp per row (A/B timing).
constexpr int kGemvMinBlocks = 4;
int gemv_split(int64_t rows, int sm_count) {
  static const int forced = [] {
    const char* e = std::getenv("KVP_GEMV_SPLIT");
    return e ? std::atoi(e) : 0;
  }();
  if (forced == 1 || forced == 2 || forced == 4 || forced == 8) return forced;
  int split = 1;
  while (split < kGemvWarps && rows * split / kGemvWarps < int64_t{kGemvMinBlocks} * sm_count)
    split *= 2;
  return split;
}

template <typename W, int NT, int SPLIT>
void launch_gemv(const float* x, GemvMats<W> mats, int64_t K, cudaStream_t s) {
  mats.first_block[0] = 0;
  for (int m = 0; m < mats.count; ++m)
    mats.first_block[m + 1] =
        mats.first_block[m] +
        static_cast<unsigned>((mats.n[m] + kGemvWarps / SPLIT - 1) / (kGemvWarps / SPLIT));
  launch(gemv_kernel<W, NT, SPLIT>, mats.first_block[mats.count], kGemvWarps * 32, 0, s, "gemv", x,
         mats, K);
}

template <typename W, int NT>
void launch_gemv(const float* x, const GemvMats<W>& mats, int64_t K, int sm_count, cudaStream_t s) {
  int64_t rows = 0;
  for (int m = 0; m < mats.count; ++m) rows += mats.n[m];
  switch (gemv_split(rows, sm_count)) {
    case 1:
      return launch_gemv<W, NT, 1>(x, mats, K, s);
    case 2:
      return launch_gemv<W, NT, 2>(x, mats, K, s);
    case 4:
      return launch_gemv<W, NT, 4>(x, mats, K, s);
    default:
      return launch_gemv<W, NT, 8>(x, mats, K, s);
  }
}

template <typename W>
void gemv(int64_t T, const float* x, const GemvMats<W>& mats, int64_t K, int sms, cudaStream_t s) {
  switch (T) {
    case 1:
      return launch_gemv<W, 1>(x, mats, K, sms, s);
    case 2:
      return launch_gemv<W, 2>(x, mats, K, sms, s);
    case 3:
      return launch_gemv<W, 3>(x, mats, K, sms, s);
    case 4:
      return launch_gemv<W, 4>(x, mats, K, sms, s);
    case 5:
      return launch_gemv<W, 5>(x, mats, K, sms, s);
    case 6:
      return launch_gemv<W, 6>(x, mats, K, sms, s);
    case 7:
      return launch_gemv<W, 7>(x, mats, K, sms, s);
    default:
      return launch_gemv<W, 8>(x, mats, K, sms, s);
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
  wait_for_predecessor();
  release_dependents();
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

void CudaBackend::check_matmul(const Tensor& x, const Tensor& w, const Tensor& y) {
  check_f32(this, x, "matmul x");
  check_f32(this, y, "matmul y");
  check_rows(this, w, "matmul w (load weights with load_weight)");
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  check(w.cols() == K,
        "matmul: x has " + std::to_string(K) + " columns, w " + std::to_string(w.cols()));
  check(y.rows() == T && y.cols() == N, "matmul: y must be [" + std::to_string(T) + ", " +
                                            std::to_string(N) + "], got " + y.shape_string());
}

// The matrix-vector kernel takes x of at most kGemvMaxRows rows whose length is a whole
// number of 16-byte weight chunks.
static bool gemv_fits(const Tensor& x, const Tensor& w) {
  const int64_t wsize = w.dtype() == DType::F32 ? 4 : 2;
  return x.rows() <= kGemvMaxRows && x.cols() % (16 / wsize) == 0;
}

void CudaBackend::matmul_multi(const Tensor& x, std::span<const MatmulOut> outs) {
  bool together = !outs.empty() && outs.size() <= kGemvMaxMats && x.rows() > 0;
  for (const MatmulOut& o : outs) {
    check(o.w && o.y, "matmul_multi: a matrix without w or y");
    together = together && o.w->dtype() == outs[0].w->dtype() && gemv_fits(x, *o.w);
  }
  if (!together) return Backend::matmul_multi(x, outs);
  for (const MatmulOut& o : outs) check_matmul(x, *o.w, *o.y);
  with_row_type(outs[0].w->dtype(), [&](auto p) {
    using W = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    GemvMats<W> mats{};
    for (const MatmulOut& o : outs) {
      mats.w[mats.count] = static_cast<const W*>(o.w->data());
      mats.y[mats.count] = o.y->ptr<float>();
      mats.n[mats.count++] = o.w->rows();
    }
    gemv<W>(x.rows(), x.ptr<float>(), mats, x.cols(), sm_count(), stream());
  });
  check_launch("gemv");
}

// The matrix-vector path: y = x w^T, or y += x w^T when accumulating (matmul_add). False
// when x has too many rows for it (or, accumulating, rows the vector kernel cannot take).
static bool try_gemv(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate, int sms,
                     cudaStream_t s) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  if (T > kGemvMaxRows || (accumulate && !gemv_fits(x, w))) return false;
  with_row_type(w.dtype(), [&](auto p) {
    using W = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    const auto* wp = static_cast<const W*>(w.data());
    if (gemv_fits(x, w)) {
      GemvMats<W> mats{{wp}, {y.ptr<float>()}, {N}, {}, 1, accumulate};
      return gemv<W>(T, x.ptr<float>(), mats, K, sms, s);
    }
    gemv_scalar_kernel<W>
        <<<static_cast<unsigned>((N + kGemvWarps - 1) / kGemvWarps), kGemvWarps * 32, 0, s>>>(
            x.ptr<float>(), wp, y.ptr<float>(), T, N, K);
  });
  check_launch("gemv");
  return true;
}

void CudaBackend::matmul_add(const Tensor& x, const Tensor& w, Tensor& y, Tensor& scratch) {
  check_matmul(x, w, y);
  if (x.rows() == 0 || w.rows() == 0) return;
  if (!try_gemv(x, w, y, true, sm_count(), stream())) Backend::matmul_add(x, w, y, scratch);
}

void CudaBackend::matmul(const Tensor& x, const Tensor& w, Tensor& y) {
  check_matmul(x, w, y);
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  if (T == 0 || N == 0) return;
  const size_t wsize = w.dtype() == DType::F32 ? 4 : 2;
  if (try_gemv(x, w, y, false, sm_count(), stream())) return;
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
  launch(argmax_kernel, static_cast<unsigned>(T), 1024, 0, stream(), "argmax", logits.ptr<float>(),
         N, idx);
  check_cuda(cudaMemcpyAsync(out.data(), idx, static_cast<size_t>(T) * 4, cudaMemcpyDeviceToHost,
                             stream()),
             "matmul_argmax");
  check_device_errors();
  return out;
}

}  // namespace kvp::cuda
