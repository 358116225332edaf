#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_factory.h"

namespace kvp::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the sticky-free error
    return 0;
  }
  return n;
}

std::unique_ptr<Backend> make_backend() {
  return std::make_unique<CudaBackend>();
}

}  // namespace kvp::cuda
