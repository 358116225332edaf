#pragma once
// The CUDA backend's entry points for backend/factory.cpp, in plain C++ (no CUDA headers).
#include <memory>
#include <string>

#include "backend/backend.h"

namespace kvp::cuda {

// GPUs the CUDA runtime sees (0 when there is no driver or no device); never throws.
int device_count();
// A backend on GPU 0. Throws Error when there is none.
std::unique_ptr<Backend> make_backend();

}  // namespace kvp::cuda
