#pragma once
// A contiguous, row-major tensor of up to 4 dims. It either owns its storage (shared, so
// copies of a Tensor are cheap handles, never copies of data) or views memory owned by
// someone else, such as a mapped model file. No autograd, no broadcasting.
//
// A tensor a backend allocated (Backend::alloc) records that backend: its data lives in that
// backend's memory, which only the backend's ops read or write (on a GPU the pointer is a
// device address). Host tensors (Tensor::empty, mapped weights) have no backend.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace kvp {

enum class Device { CPU, CUDA };
class Backend;  // backend/backend.h; a tensor only names its owner

class Tensor {
 public:
  Tensor() = default;

  // Allocates zeroed host memory, 64-byte aligned.
  static Tensor empty(DType dtype, std::initializer_list<int64_t> shape);
  static Tensor empty(DType dtype, const std::array<int64_t, 4>& shape, int ndim);
  // A shape list as the array the other factories take (checked: at most 4 dims, none < 0).
  static std::array<int64_t, 4> shape_array(std::initializer_list<int64_t> shape);
  // Wraps memory this tensor does not own; the caller keeps it alive.
  static Tensor view(DType dtype, std::initializer_list<int64_t> shape, void* data,
                     Device device = Device::CPU);
  // Wraps memory kept alive by `owner` (for example a mapped file).
  static Tensor view(DType dtype, const std::array<int64_t, 4>& shape, int ndim, const void* data,
                     std::shared_ptr<const void> owner);

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  // The backend whose memory holds the data; null for host memory no backend owns.
  Backend* backend() const { return backend_; }
  int ndim() const { return ndim_; }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  const std::array<int64_t, 4>& shape() const { return shape_; }
  int64_t numel() const;
  // Elements of the last dim form rows; quantised types are counted in bytes per row.
  // The product of every dim but the last (also when the last is 0).
  int64_t rows() const;
  int64_t cols() const { return ndim_ == 0 ? 0 : shape_[static_cast<size_t>(ndim_ - 1)]; }
  size_t row_bytes() const;
  size_t nbytes() const;
  bool defined() const { return data_ != nullptr; }
  // Whoever keeps the storage alive (this tensor's own buffer, a mapped file), held weakly:
  // expired once the storage is gone, and from the start for a view() without an owner. A
  // cache of data derived from a tensor uses it to tell the tensor from new memory that
  // reuses a freed address.
  std::weak_ptr<const void> owner() const { return storage_; }
  // Whether both tensors start at the same memory with the same dtype and byte size (a view
  // of the same rows).
  bool same_data(const Tensor& o) const {
    return data_ == o.data_ && dtype_ == o.dtype_ && nbytes() == o.nbytes();
  }

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <typename T>
  T* ptr() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* ptr() const {
    return static_cast<const T*>(data_);
  }
  // Pointer to row r (of the flattened leading dims).
  uint8_t* row_ptr(int64_t r) {
    return static_cast<uint8_t*>(data_) + static_cast<size_t>(r) * row_bytes();
  }
  const uint8_t* row_ptr(int64_t r) const {
    return static_cast<const uint8_t*>(data_) + static_cast<size_t>(r) * row_bytes();
  }

  // The same storage, recorded as `backend`'s memory on `device`: Backend::alloc returns
  // empty() (host memory) or a view() of device memory with its owner, adopted.
  Tensor adopted_by(Backend& backend, Device device) const {
    Tensor t = *this;
    t.backend_ = &backend;
    t.device_ = device;
    return t;
  }
  // Same storage, new shape with the same number of elements.
  Tensor reshaped(std::initializer_list<int64_t> shape) const;
  // Same storage: rows [begin, end) of the flattened leading dims, reshaped to `shape`
  // (same element count). Keeps the owner and backend, so the view may outlive this handle.
  Tensor row_slice(int64_t begin, int64_t end, std::initializer_list<int64_t> shape) const;
  std::string shape_string() const;

 private:
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  Backend* backend_ = nullptr;
  int ndim_ = 0;
  std::array<int64_t, 4> shape_{0, 0, 0, 0};
  void* data_ = nullptr;
  std::shared_ptr<const void> storage_;
};

}  // namespace kvp
