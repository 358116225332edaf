#pragma once
// Argument checks of the CUDA backend's ops: each names the op's argument in its error.
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace kvp::cuda {

inline void check_dev(const Backend* be, const Tensor& t, const char* what) {
  check(t.backend() == be, std::string(what) + " must be in the CUDA backend's memory");
}

inline void check_f32(const Backend* be, const Tensor& t, const char* what) {
  check(t.dtype() == DType::F32, std::string(what) + " must be F32, got " + dtype_name(t.dtype()));
  check_dev(be, t, what);
}

// Rows of the cache's types (F32, F16 or BF16), with a shape.
inline void check_rows(const Backend* be, const Tensor& x, const char* what) {
  check(x.dtype() == DType::F32 || x.dtype() == DType::F16 || x.dtype() == DType::BF16,
        std::string(what) + " must be F32, F16 or BF16, got " + dtype_name(x.dtype()));
  check_dev(be, x, what);
  check(x.ndim() >= 1, std::string(what) + " has no shape");
}

}  // namespace kvp::cuda
