#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace kvp {

namespace {

std::array<int64_t, 4> to_shape(std::initializer_list<int64_t> shape, int* ndim) {
  check(shape.size() <= 4, "tensors have at most 4 dims");
  std::array<int64_t, 4> s{0, 0, 0, 0};
  size_t i = 0;
  for (int64_t d : shape) {
    check(d >= 0, "negative tensor dimension");
    s[i++] = d;
  }
  *ndim = static_cast<int>(shape.size());
  return s;
}

}  // namespace

std::array<int64_t, 4> Tensor::shape_array(std::initializer_list<int64_t> shape) {
  int ndim = 0;
  return to_shape(shape, &ndim);
}

Tensor Tensor::empty(DType dtype, std::initializer_list<int64_t> shape) {
  int ndim = 0;
  auto s = to_shape(shape, &ndim);
  return empty(dtype, s, ndim);
}

Tensor Tensor::empty(DType dtype, const std::array<int64_t, 4>& shape, int ndim) {
  Tensor t;
  t.dtype_ = dtype;
  t.ndim_ = ndim;
  t.shape_ = shape;
  const size_t bytes = t.nbytes();
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = rounded == 0 ? nullptr : std::aligned_alloc(64, rounded);
  check(rounded == 0 || p != nullptr,
        "out of memory allocating " + std::to_string(bytes) + " bytes");
  if (p) std::memset(p, 0, rounded);
  t.storage_ =
      std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  t.data_ = p;
  return t;
}

Tensor Tensor::view(DType dtype, std::initializer_list<int64_t> shape, void* data, Device device) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = to_shape(shape, &t.ndim_);
  t.data_ = data;
  t.device_ = device;
  return t;
}

Tensor Tensor::view(DType dtype, const std::array<int64_t, 4>& shape, int ndim, const void* data,
                    std::shared_ptr<const void> owner) {
  check(ndim >= 0 && ndim <= 4, "tensors have at most 4 dims");
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.ndim_ = ndim;
  t.data_ = const_cast<void*>(data);  // constness is the owner's business, as with a mapping
  t.storage_ = std::move(owner);
  return t;
}

Tensor Tensor::row_slice(int64_t begin, int64_t end, std::initializer_list<int64_t> shape) const {
  check(begin >= 0 && begin <= end && end <= rows(), "rows [" + std::to_string(begin) + ", " +
                                                         std::to_string(end) + ") of a tensor of " +
                                                         std::to_string(rows()) + " rows");
  Tensor t = *this;
  t.data_ = static_cast<uint8_t*>(data_) + static_cast<size_t>(begin) * row_bytes();
  t.shape_ = to_shape(shape, &t.ndim_);
  check(t.nbytes() == static_cast<size_t>(end - begin) * row_bytes(),
        "row_slice: shape " + t.shape_string() + " does not hold " + std::to_string(end - begin) +
            " rows of " + shape_string());
  return t;
}

int64_t Tensor::numel() const {
  if (ndim_ == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= shape_[static_cast<size_t>(i)];
  return n;
}

int64_t Tensor::rows() const {
  if (ndim_ == 0) return 0;
  int64_t r = 1;
  for (int i = 0; i + 1 < ndim_; ++i) r *= shape_[static_cast<size_t>(i)];
  return r;
}

size_t Tensor::row_bytes() const {
  return kvp::row_bytes(dtype_, cols());
}

size_t Tensor::nbytes() const {
  return ndim_ == 0 ? 0 : static_cast<size_t>(rows()) * row_bytes();
}

Tensor Tensor::reshaped(std::initializer_list<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = to_shape(shape, &t.ndim_);
  check(t.numel() == numel(), "reshape from " + shape_string() + " changes the element count");
  return t;
}

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < ndim_; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape_[static_cast<size_t>(i)]);
  }
  return s + "]";
}

}  // namespace kvp
