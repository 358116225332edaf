#pragma once
// Programmatic dependent launch (Hopper and later). A kernel launched with launch() may be
// scheduled while the kernel before it in the stream is still running, so that its start
// (block scheduling, and loads of memory that no kernel writes, such as weights) overlaps the
// tail of its predecessor. In exchange, every block of such a kernel must call
// wait_for_predecessor() before it touches memory that earlier work writes or reads, and
// before it returns. Kernels that call release_dependents() let the next launch start early.
// KVP_PDL=0 turns the attribute off (A/B timing); the kernels then run strictly in order,
// and the two device calls return at once.
#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace kvp::cuda {

__device__ __forceinline__ void wait_for_predecessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void release_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether launch() asks for early scheduling (KVP_PDL, read once).
bool dependent_launch_enabled();

// kernel<<<grid, block, smem, stream>>>(args...), allowed to start before its predecessor ends.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            const char* what, Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = dependent_launch_enabled() ? 1 : 0;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  check_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), what);
}

}  // namespace kvp::cuda
