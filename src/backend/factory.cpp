#include "backend/factory.h"

#include <algorithm>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace kvp {

std::vector<std::string> backend_names() {
  return {"cpu"};
}

std::unique_ptr<Backend> make_backend(const std::string& device, int threads) {
  check(threads >= 0, "a backend needs at least one thread (0: one per core)");
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (device == "cpu") return std::make_unique<cpu::CpuBackend>(threads);
  std::string names;
  for (const std::string& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
  if (device == "cuda")
    throw Error("--device cuda: this build has no CUDA backend (it has: " + names + ")");
  throw Error("unknown device '" + device + "' (this build has: " + names + ")");
}

}  // namespace kvp
