#pragma once
// Argument checks shared by the CPU backend's ops and the references: each names the op's
// argument in its error.
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace kvp::cpu {

inline void check_cpu(const Tensor& t, const char* what) {
  check(t.device() == Device::CPU, std::string(what) + " must be on the CPU");
}

inline void check_f32(const Tensor& t, const char* what) {
  check(t.dtype() == DType::F32, std::string(what) + " must be F32, got " + dtype_name(t.dtype()));
  check_cpu(t, what);
}

// Rows of the cache's types (F32, F16 or BF16), with a shape.
inline void check_rows(const Tensor& x, const char* what) {
  check(x.dtype() == DType::F32 || x.dtype() == DType::F16 || x.dtype() == DType::BF16,
        std::string(what) + " must be F32, F16 or BF16, got " + dtype_name(x.dtype()));
  check_cpu(x, what);
  check(x.ndim() >= 1, std::string(what) + " has no shape");
}

}  // namespace kvp::cpu
