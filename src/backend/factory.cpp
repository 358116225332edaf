#include "backend/factory.h"

#include <algorithm>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#ifdef KVP_HAVE_CUDA
#include "backend/cuda/cuda_factory.h"
#endif

namespace kvp {

std::vector<std::string> backend_names() {
  std::vector<std::string> names{"cpu"};
  if (cuda_built()) names.push_back("cuda");
  return names;
}

bool cuda_built() {
#ifdef KVP_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_gpus() {
#ifdef KVP_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::vector<std::string> usable_backend_names() {
  std::vector<std::string> names{"cpu"};
  if (cuda_gpus() > 0) names.push_back("cuda");
  return names;
}

std::unique_ptr<Backend> make_backend(const std::string& device, int threads) {
  check(threads >= 0, "a backend needs at least one thread (0: one per core)");
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (device == "cpu") return std::make_unique<cpu::CpuBackend>(threads);
  std::string names;
  for (const std::string& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
#ifdef KVP_HAVE_CUDA
  if (device == "cuda") return cuda::make_backend();
#endif
  if (device == "cuda")
    throw Error("--device cuda: this build has no CUDA backend (it has: " + names +
                "); configure with -DKVP_CUDA=ON where nvcc is installed");
  throw Error("unknown device '" + device + "' (this build has: " + names + ")");
}

}  // namespace kvp
