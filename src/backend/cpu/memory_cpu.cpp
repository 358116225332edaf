// The CPU backend's memory: host memory, so upload, download and copy are memcpy. They still
// check their ranges, as a device backend's would.
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/half.h"

namespace kvp::cpu {

Tensor alloc_host(Backend& backend, DType dtype, const std::array<int64_t, 4>& shape, int ndim) {
  return Tensor::empty(dtype, shape, ndim).adopted_by(backend, Device::CPU);  // aligned, zeroed
}

void check_range(const Backend& backend, const Tensor& t, size_t offset, size_t bytes,
                 const char* what) {
  if (t.backend() != nullptr && t.backend() != &backend)
    throw Error(std::string(what) + ": the tensor belongs to another backend");
  if (offset > t.nbytes() || bytes > t.nbytes() - offset)
    throw Error(std::string(what) + ": bytes [" + std::to_string(offset) + ", " +
                std::to_string(offset + bytes) + ") lie outside a tensor of " +
                std::to_string(t.nbytes()) + " bytes");
}

void CpuBackend::upload(const void* src, Tensor& dst, size_t dst_offset, size_t bytes) {
  check_range(*this, dst, dst_offset, bytes, "upload");
  if (bytes) std::memcpy(static_cast<uint8_t*>(dst.data()) + dst_offset, src, bytes);
}

void CpuBackend::download(const Tensor& src, size_t src_offset, void* dst, size_t bytes) {
  check_range(*this, src, src_offset, bytes, "download");
  if (bytes) std::memcpy(dst, static_cast<const uint8_t*>(src.data()) + src_offset, bytes);
}

void CpuBackend::copy(const Tensor& src, size_t src_offset, Tensor& dst, size_t dst_offset,
                      size_t bytes) {
  check_range(*this, src, src_offset, bytes, "copy");
  check_range(*this, dst, dst_offset, bytes, "copy");
  if (bytes)
    std::memmove(static_cast<uint8_t*>(dst.data()) + dst_offset,
                 static_cast<const uint8_t*>(src.data()) + src_offset, bytes);
}

namespace {

// One row of n values from `from` to `to` (each F32, F16 or BF16).
void convert_row(DType from, const void* src, DType to, void* dst, int64_t n) {
  const auto* s16 = static_cast<const uint16_t*>(src);
  const auto* s32 = static_cast<const float*>(src);
  auto* d16 = static_cast<uint16_t*>(dst);
  auto* d32 = static_cast<float*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const float x = from == DType::F32   ? s32[i]
                    : from == DType::F16 ? f16_to_f32(s16[i])
                                         : bf16_to_f32(s16[i]);
    if (to == DType::F32) {
      d32[i] = x;
    } else {
      d16[i] = to == DType::F16 ? f32_to_f16(x) : f32_to_bf16(x);
    }
  }
}

bool is_float_type(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

}  // namespace

void CpuBackend::copy_rows(const Tensor& src, const int64_t* src_rows, Tensor& dst,
                           const int64_t* dst_rows, int64_t n) {
  check_range(*this, src, 0, 0, "copy_rows");
  check_range(*this, dst, 0, 0, "copy_rows");
  check(n >= 0, "copy_rows: negative row count");
  if (n == 0) return;
  check(src.cols() == dst.cols(), "copy_rows: rows of " + src.shape_string() + " and " +
                                      dst.shape_string() + " differ in length");
  const bool same = src.dtype() == dst.dtype();
  check(same || (is_float_type(src.dtype()) && is_float_type(dst.dtype())),
        "copy_rows: converts between F32, F16 and BF16 only");
  const int64_t src_n = src.rows(), dst_n = dst.rows(), cols = src.cols();
  const size_t src_bytes = src.row_bytes();
  for (int64_t i = 0; i < n; ++i) {
    if (src_rows[i] < 0 || src_rows[i] >= src_n || dst_rows[i] < 0 || dst_rows[i] >= dst_n)
      throw Error("copy_rows: row " + std::to_string(src_rows[i]) + " -> " +
                  std::to_string(dst_rows[i]) + " outside " + std::to_string(src_n) + " -> " +
                  std::to_string(dst_n) + " rows");
    const uint8_t* from = src.row_ptr(src_rows[i]);
    uint8_t* to = dst.row_ptr(dst_rows[i]);
    if (same) {
      std::memcpy(to, from, src_bytes);
    } else {
      convert_row(src.dtype(), from, dst.dtype(), to, cols);
    }
  }
}

}  // namespace kvp::cpu
