// The CUDA backend's memory: the stream-ordered allocator, host<->device copies, the staging
// ring for host arrays, weight loading and copy_rows (the KV cache's append and compaction).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <thread>
#include <vector>

#include "backend/cpu/reference.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/launch.cuh"
#include "core/half.h"

namespace kvp::cuda {

namespace {

constexpr size_t kRingBytes = size_t{16} << 20;
constexpr size_t kAlign = 256;

size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

bool is_row_type(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

// Row dst_rows[i] of dst = row src_rows[i] of src, one warp per row, converting through f32.
template <typename S, typename D>
__global__ void copy_rows_kernel(const S* src, const int64_t* idx, D* dst, int64_t n,
                                 int64_t cols) {
  wait_for_predecessor();
  release_dependents();
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= n) return;
  const S* from = src + idx[warp] * cols;
  D* to = dst + idx[n + warp] * cols;
  for (int64_t c = lane; c < cols; c += 32) to[c] = from_f32<D>(to_f32(from[c]));
}

// The same-type case in 16-byte words.
__global__ void copy_rows_words(const uint4* src, const int64_t* idx, uint4* dst, int64_t n,
                                int64_t words) {
  wait_for_predecessor();
  release_dependents();
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= n) return;
  const uint4* from = src + idx[warp] * words;
  uint4* to = dst + idx[n + warp] * words;
  for (int64_t c = lane; c < words; c += 32) to[c] = from[c];
}

// gather_rows: one warp per kept row of segment blockIdx.y, its K and V rows in 16-byte words.
struct GatherSeg {
  int64_t src_offset, dst_offset, count, first;  // first: into the rows array, -1 for i
};
__global__ void gather_rows_kernel(const uint4* k_src, const uint4* v_src, const GatherSeg* segs,
                                   const int32_t* rows, uint4* k_dst, uint4* v_dst, int64_t words) {
  wait_for_predecessor();
  release_dependents();
  const GatherSeg g = segs[blockIdx.y];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (i >= g.count) return;
  const int64_t from = (g.src_offset + (g.first >= 0 ? rows[g.first + i] : i)) * words;
  const int64_t to = (g.dst_offset + i) * words;
  for (int64_t c = threadIdx.x % 32; c < words; c += 32) {
    k_dst[to + c] = k_src[from + c];
    v_dst[to + c] = v_src[from + c];
  }
}

// A host weight dequantised to `to` (BF16 or F32) on the host, several threads at once.
Tensor host_dequantized(const Tensor& w, DType to) {
  Tensor out = Tensor::empty(to, w.shape(), w.ndim());
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t n_threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 32);
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = begin; r < end; ++r) {
      ref::dequantize_row(w.dtype(), w.row_ptr(r), row.data(), cols);
      if (to == DType::F32) {
        std::memcpy(out.row_ptr(r), row.data(), row.size() * sizeof(float));
        continue;
      }
      auto* dst = reinterpret_cast<uint16_t*>(out.row_ptr(r));
      for (int64_t c = 0; c < cols; ++c) dst[c] = f32_to_bf16(row[static_cast<size_t>(c)]);
    }
  };
  std::vector<std::thread> threads;
  const int64_t per = (rows + n_threads - 1) / n_threads;
  for (int64_t b = 0; b < rows; b += per) threads.emplace_back(work, b, std::min(rows, b + per));
  for (std::thread& t : threads) t.join();
  return out;
}

}  // namespace

DeviceState::~DeviceState() {
  if (stream) {
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  }
}

bool dependent_launch_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("KVP_PDL");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

CudaBackend::CudaBackend() : state_(std::make_shared<DeviceState>()) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    throw Error("--device cuda: no CUDA GPU is visible (cudaGetDeviceCount found none)");
  }
  check_cuda(cudaSetDevice(0), "cudaSetDevice");
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  sm_count_ = prop.multiProcessorCount;
  device_name_ = prop.name;
  check_cuda(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking), "stream");
  // Keep freed memory in the pool: steady-state steps then never go to the driver.
  cudaMemPool_t pool;
  check_cuda(cudaDeviceGetDefaultMemPool(&pool, 0), "cudaDeviceGetDefaultMemPool");
  uint64_t keep = UINT64_MAX;
  check_cuda(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "pool");
  check_cublas(cublasCreate(&cublas_), "cublasCreate");
  check_cublas(cublasSetStream(cublas_, state_->stream), "cublasSetStream");
  if (const char* w = std::getenv("KVP_CUDA_WEIGHTS")) {
    const std::string v = w;
    check(v == "f32" || v == "bf16", "KVP_CUDA_WEIGHTS must be f32 or bf16, not '" + v + "'");
    quantized_to_ = v == "f32" ? DType::F32 : DType::BF16;
  }
  grow_ring(kRingBytes);
  check_cuda(cudaMalloc(&error_flag_, sizeof(int)), "error flag");
  check_cuda(cudaMemset(error_flag_, 0, sizeof(int)), "error flag");
}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(state_->stream);
  for (Tensor& t : scratch_) t = Tensor();
  if (cublas_) cublasDestroy(cublas_);
  cudaFree(ring_);
  cudaFreeHost(pinned_);
  cudaFree(error_flag_);
}

size_t CudaBackend::reserved_bytes() const {
  cudaMemPool_t pool;
  uint64_t v = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess)
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &v);
  return v;
}

size_t CudaBackend::peak_used_bytes() const {
  cudaMemPool_t pool;
  uint64_t v = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess)
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &v);
  return v;
}

void CudaBackend::reset_peak() {
  cudaMemPool_t pool;
  uint64_t zero = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess)
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero);
}

void CudaBackend::check_mine(const Tensor& t, const char* what) const {
  if (t.backend() != this)
    throw Error(std::string(what) + ": the tensor is not in this CUDA backend's memory");
}

Tensor CudaBackend::alloc(DType dtype, const std::array<int64_t, 4>& shape, int ndim) {
  for (int i = 0; i < ndim; ++i) check(shape[static_cast<size_t>(i)] >= 0, "alloc: negative dim");
  const Tensor probe = Tensor::view(dtype, shape, ndim, nullptr, nullptr);
  const size_t bytes = probe.nbytes();
  void* p = nullptr;
  check_cuda(cudaMallocAsync(&p, std::max<size_t>(bytes, 1), stream()), "cudaMallocAsync");
  if (bytes) check_cuda(cudaMemsetAsync(p, 0, bytes, stream()), "cudaMemsetAsync");
  std::shared_ptr<DeviceState> state = state_;
  std::shared_ptr<const void> owner(
      p, [state](const void* q) { cudaFreeAsync(const_cast<void*>(q), state->stream); });
  return Tensor::view(dtype, shape, ndim, p, std::move(owner)).adopted_by(*this, Device::CUDA);
}

namespace {

void check_span(const Tensor& t, size_t offset, size_t bytes, const char* what) {
  if (offset > t.nbytes() || bytes > t.nbytes() - offset)
    throw Error(std::string(what) + ": bytes [" + std::to_string(offset) + ", " +
                std::to_string(offset + bytes) + ") lie outside a tensor of " +
                std::to_string(t.nbytes()) + " bytes");
}

}  // namespace

void CudaBackend::upload(const void* src, Tensor& dst, size_t dst_offset, size_t bytes) {
  check_mine(dst, "upload");
  check_span(dst, dst_offset, bytes, "upload");
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(static_cast<uint8_t*>(dst.data()) + dst_offset, src, bytes,
                             cudaMemcpyHostToDevice, stream()),
             "upload");
}

void CudaBackend::download(const Tensor& src, size_t src_offset, void* dst, size_t bytes) {
  check_mine(src, "download");
  check_span(src, src_offset, bytes, "download");
  if (bytes)
    check_cuda(cudaMemcpyAsync(dst, static_cast<const uint8_t*>(src.data()) + src_offset, bytes,
                               cudaMemcpyDeviceToHost, stream()),
               "download");
  check_device_errors();
}

void CudaBackend::copy(const Tensor& src, size_t src_offset, Tensor& dst, size_t dst_offset,
                       size_t bytes) {
  check_mine(src, "copy");
  check_mine(dst, "copy");
  check_span(src, src_offset, bytes, "copy");
  check_span(dst, dst_offset, bytes, "copy");
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(static_cast<uint8_t*>(dst.data()) + dst_offset,
                             static_cast<const uint8_t*>(src.data()) + src_offset, bytes,
                             cudaMemcpyDeviceToDevice, stream()),
             "copy");
}

void CudaBackend::synchronize() {
  check_device_errors();
}

void CudaBackend::check_device_errors() {
  int flag = 0;
  check_cuda(cudaMemcpyAsync(&flag, error_flag_, sizeof(int), cudaMemcpyDeviceToHost, stream()),
             "error flag");
  check_cuda(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  if (flag == 0) return;
  check_cuda(cudaMemsetAsync(error_flag_, 0, sizeof(int), stream()), "error flag");
  throw Error("scatter_value: an index is out of range (checked on the GPU)");
}

const void* CudaBackend::stage(const void* host, size_t bytes) {
  // A decode step stages the same small arrays layer after layer (positions, append rows,
  // segment tables of equal lengths): reuse the copy still in the ring instead of another
  // host-to-device transfer on the stream.
  constexpr size_t kDedupBytes = 16 << 10;
  if (bytes <= kDedupBytes) {
    for (const StagedCopy& c : staged_)
      if (c.bytes.size() == bytes && std::memcmp(c.bytes.data(), host, bytes) == 0) return c.dev;
  }
  const size_t need = align_up(std::max<size_t>(bytes, 1));
  if (need > ring_size_) grow_ring(std::max(need, 2 * ring_size_));
  if (ring_pos_ + need > ring_size_) {
    // The pinned bytes about to be overwritten may still be queued for copying: wait for
    // them. Once per trip round the ring; a decode step stages a few KB of a 16 MB ring.
    check_cuda(cudaStreamSynchronize(stream()), "staging ring");
    ring_pos_ = 0;
    staged_.clear();  // the copies they name will be overwritten
  }
  void* dst = static_cast<uint8_t*>(ring_) + ring_pos_;
  uint8_t* pinned = static_cast<uint8_t*>(pinned_) + ring_pos_;
  ring_pos_ += need;
  // Small arrays go straight from pageable memory, which the driver carries inside the
  // command stream (measured faster in decode steps than a copy-engine transfer); larger ones
  // through the pinned ring, since from pageable memory the driver may wait for the stream.
  constexpr size_t kInlineBytes = 64 << 10;
  if (bytes > kInlineBytes) {
    std::memcpy(pinned, host, bytes);
    check_cuda(cudaMemcpyAsync(dst, pinned, bytes, cudaMemcpyHostToDevice, stream()), "stage");
  } else if (bytes) {
    check_cuda(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream()), "stage");
  }
  if (bytes <= kDedupBytes) {
    if (staged_.size() == kStagedKept) staged_.erase(staged_.begin());
    const auto* h = static_cast<const uint8_t*>(host);
    staged_.push_back({std::vector<uint8_t>(h, h + bytes), dst});
  }
  return dst;
}

void CudaBackend::grow_ring(size_t bytes) {
  check_cuda(cudaStreamSynchronize(stream()), "staging ring");  // no copy reads the old one
  cudaFree(ring_);
  cudaFreeHost(pinned_);
  ring_ = pinned_ = nullptr;
  check_cuda(cudaMalloc(&ring_, bytes), "staging ring");
  check_cuda(cudaMallocHost(&pinned_, bytes), "staging ring (pinned)");
  ring_size_ = bytes;
  ring_pos_ = 0;
  staged_.clear();
}

void* CudaBackend::scratch(Slot slot, size_t bytes) {
  Tensor& t = scratch_[static_cast<int>(slot)];
  if (t.nbytes() < bytes) {
    const int64_t n = static_cast<int64_t>(align_up(std::max(bytes, t.nbytes() * 3 / 2)));
    t = alloc(DType::I32, {n / 4});
  }
  return t.data();
}

Tensor CudaBackend::load_weight(const Tensor& host) {
  if (host.backend() == this) return host;
  check(host.backend() == nullptr, "load_weight: the tensor belongs to another backend");
  // Quantised matrices are dequantised to BF16 (or F32 under KVP_CUDA_WEIGHTS=f32); plain
  // ones keep their type; vectors (norms, biases) are F32 already.
  const bool matrix = host.ndim() >= 2;
  const Tensor src =
      matrix && is_quantized(host.dtype()) ? host_dequantized(host, quantized_to_) : host;
  check(is_row_type(src.dtype()),
        "load_weight: unsupported weight type " + dtype_name(src.dtype()));
  Tensor dev = alloc(src.dtype(), src.shape(), src.ndim());
  upload(src.data(), dev, 0, src.nbytes());
  synchronize();  // the host copy may be a temporary
  return dev;
}

void CudaBackend::copy_rows(const Tensor& src, const int64_t* src_rows, Tensor& dst,
                            const int64_t* dst_rows, int64_t n) {
  check_mine(src, "copy_rows");
  check_mine(dst, "copy_rows");
  check(n >= 0, "copy_rows: negative row count");
  if (n == 0) return;
  check(src.cols() == dst.cols(), "copy_rows: rows of " + src.shape_string() + " and " +
                                      dst.shape_string() + " differ in length");
  check(src.dtype() == dst.dtype() || (is_row_type(src.dtype()) && is_row_type(dst.dtype())),
        "copy_rows: converts between F32, F16 and BF16 only");
  const int64_t src_n = src.rows(), dst_n = dst.rows();
  // Range checks as min/max passes and the lists as two block copies: a compaction moves
  // hundreds of thousands of rows, and a per-row branch costs more than the copies.
  const auto [src_lo, src_hi] = std::minmax_element(src_rows, src_rows + n);
  const auto [dst_lo, dst_hi] = std::minmax_element(dst_rows, dst_rows + n);
  if (*src_lo < 0 || *src_hi >= src_n || *dst_lo < 0 || *dst_hi >= dst_n)
    throw Error("copy_rows: rows " + std::to_string(*src_lo) + ".." + std::to_string(*src_hi) +
                " -> " + std::to_string(*dst_lo) + ".." + std::to_string(*dst_hi) + " outside " +
                std::to_string(src_n) + " -> " + std::to_string(dst_n) + " rows");
  std::vector<int64_t>& idx = row_lists_;
  idx.resize(static_cast<size_t>(2 * n));
  std::copy(src_rows, src_rows + n, idx.begin());
  std::copy(dst_rows, dst_rows + n, idx.begin() + n);
  const auto* d_idx = static_cast<const int64_t*>(stage(idx.data(), idx.size() * sizeof(int64_t)));
  const unsigned blocks = static_cast<unsigned>((n + 7) / 8);
  const size_t rb = src.row_bytes();
  if (src.dtype() == dst.dtype() && rb % 16 == 0) {
    return launch(copy_rows_words, blocks, 256, 0, stream(), "copy_rows",
                  static_cast<const uint4*>(src.data()), d_idx, static_cast<uint4*>(dst.data()), n,
                  static_cast<int64_t>(rb / 16));
  }
  check(is_row_type(src.dtype()),
        "copy_rows: " + dtype_name(src.dtype()) + " rows must be a multiple of 16 bytes");
  with_row_type(src.dtype(), [&](auto s) {
    using S = std::remove_const_t<std::remove_pointer_t<decltype(s)>>;
    with_row_type(dst.dtype(), [&](auto d) {
      using D = std::remove_const_t<std::remove_pointer_t<decltype(d)>>;
      launch(copy_rows_kernel<S, D>, blocks, 256, 0, stream(), "copy_rows",
             static_cast<const S*>(src.data()), d_idx, static_cast<D*>(dst.data()), n, src.cols());
    });
  });
}

void CudaBackend::gather_rows(const Tensor& k_src, const Tensor& v_src,
                              std::span<const SegmentRows> segs, Tensor& k_dst, Tensor& v_dst) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&k_src, &v_src, &k_dst, &v_dst})
    check_mine(*t, "gather_rows");
  const size_t rb = k_src.row_bytes();
  const bool words = k_src.dtype() == k_dst.dtype() && v_src.dtype() == k_src.dtype() &&
                     v_dst.dtype() == k_src.dtype() && rb % 16 == 0 && v_src.row_bytes() == rb &&
                     k_dst.row_bytes() == rb && v_dst.row_bytes() == rb;
  if (!words || segs.empty()) return Backend::gather_rows(k_src, v_src, segs, k_dst, v_dst);
  const int64_t src_n = std::min(k_src.rows(), v_src.rows());
  const int64_t dst_n = std::min(k_dst.rows(), v_dst.rows());
  // The segment table, then every segment's rows (int32), staged as one host buffer.
  std::vector<GatherSeg> table(segs.size());
  int64_t n_rows = 0, longest = 0;
  for (size_t s = 0; s < segs.size(); ++s) {
    const SegmentRows& g = segs[s];
    int64_t lo = 0, hi = g.count - 1;
    if (g.rows && g.count > 0) {
      const auto [a, b] = std::minmax_element(g.rows, g.rows + g.count);
      lo = *a, hi = *b;
    }
    if (g.count < 0 || (g.count > 0 && (g.src_offset + lo < 0 || g.src_offset + hi >= src_n ||
                                        g.dst_offset < 0 || g.dst_offset + g.count > dst_n)))
      throw Error("gather_rows: segment " + std::to_string(s) + " moves rows outside " +
                  std::to_string(src_n) + " -> " + std::to_string(dst_n) + " rows");
    table[s] = {g.src_offset, g.dst_offset, g.count, g.rows ? n_rows : -1};
    if (g.rows) n_rows += g.count;
    longest = std::max(longest, g.count);
  }
  if (longest == 0) return;
  check(segs.size() <= 65535, "gather_rows: more than 65535 segments");
  std::vector<uint8_t>& buf = gather_staging_;
  const size_t table_bytes = table.size() * sizeof(GatherSeg);
  buf.resize(table_bytes + static_cast<size_t>(n_rows) * sizeof(int32_t));
  std::memcpy(buf.data(), table.data(), table_bytes);
  auto* rows = reinterpret_cast<int32_t*>(buf.data() + table_bytes);
  for (const SegmentRows& g : segs)
    if (g.rows) rows = std::copy(g.rows, g.rows + g.count, rows);
  const auto* d = static_cast<const uint8_t*>(stage(buf.data(), buf.size()));
  constexpr int kWarps = 8;
  const dim3 grid(static_cast<unsigned>((longest + kWarps - 1) / kWarps),
                  static_cast<unsigned>(segs.size()));
  launch(gather_rows_kernel, grid, kWarps * 32, 0, stream(), "gather_rows",
         static_cast<const uint4*>(k_src.data()), static_cast<const uint4*>(v_src.data()),
         reinterpret_cast<const GatherSeg*>(d), reinterpret_cast<const int32_t*>(d + table_bytes),
         static_cast<uint4*>(k_dst.data()), static_cast<uint4*>(v_dst.data()),
         static_cast<int64_t>(rb / 16));
}

}  // namespace kvp::cuda
