#pragma once
// Makes a backend by the name --device takes. The one place that knows the implementations:
// everything else holds a Backend&.
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace kvp {

// The devices this build has, in order of preference ("cpu" always).
std::vector<std::string> backend_names();
// Those of them this machine can run now: "cuda" only where a GPU is visible.
std::vector<std::string> usable_backend_names();
// Whether this build has the CUDA backend, and how many GPUs it sees (0 without one).
bool cuda_built();
int cuda_gpus();
// A backend for `device` with `threads` host threads (0: one per core). An unknown name, or
// one this build lacks, is an Error that lists what there is.
std::unique_ptr<Backend> make_backend(const std::string& device, int threads);

}  // namespace kvp
