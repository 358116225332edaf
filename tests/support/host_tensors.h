#pragma once
// Tests that build caches by hand: one CPU backend per test program, and host vectors as the
// [T, heads, head_dim] tensors KVCache::append takes.
#include <memory>
#include <vector>

#include "backend/factory.h"

namespace kvp::test {

inline Backend& cpu_backend() {
  static const std::unique_ptr<Backend> backend = make_backend("cpu", 1);
  return *backend;
}

// x holds T * heads * head_dim floats; the tensor views them (x must outlive it).
inline Tensor heads_view(const std::vector<float>& x, int64_t T, int64_t heads, int64_t head_dim) {
  return Tensor::view(DType::F32, {T, heads, head_dim}, const_cast<float*>(x.data()));
}

}  // namespace kvp::test
