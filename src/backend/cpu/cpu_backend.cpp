#include "backend/cpu/cpu_backend.h"

namespace kvp {

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
  return std::make_unique<cpu::CpuBackend>(n_threads);
}

}  // namespace kvp
