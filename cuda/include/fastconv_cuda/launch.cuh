// How host code launches kernels: checked CUDA calls and the one launcher every family's
// plans take (`launch(kernel, grid, args...)` on the caller's stream). No pybind11 here:
// binding.hpp holds the Python side. The launcher itself needs nvcc; the checks do not, so
// host-compiled files may include this header too.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <utility>

#include "fastconv/check.hpp"
#include "fastconv_cuda/grid.cuh"

namespace fastconv::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file,
                                          int line) {
  throw std::runtime_error(concat(file, ":", line, ": ", expr, " failed: ",
                                  cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

inline cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

}  // namespace fastconv::cuda

// A failed CUDA API call becomes RuntimeError("file:line: call failed: name (text)").
#define FC_CUDA_CHECK(expr)                                                          \
  do {                                                                               \
    const cudaError_t fc_cuda_err_ = (expr);                                         \
    if (fc_cuda_err_ != cudaSuccess)                                                 \
      ::fastconv::cuda::throw_cuda_error(fc_cuda_err_, #expr, __FILE__, __LINE__);   \
  } while (0)

// After every <<<...>>>: catches bad launch configurations at the launch site.
#define FC_LAUNCH_CHECK() FC_CUDA_CHECK(cudaGetLastError())

#ifdef __CUDACC__
namespace fastconv::cuda {

// Runs kernel<<<grid, threads, shared_bytes, stream>>>(args...) and checks the launch. The
// kernel families' plans (<family>_kernels.cuh) take it; cuda/emu/ passes its host twin.
struct StreamLauncher {
  cudaStream_t stream;
  int threads = kThreads;
  size_t shared_bytes = 0;

  template <typename Grid, typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), Grid grid, Args&&... args) const {
    kernel<<<grid, threads, shared_bytes, stream>>>(std::forward<Args>(args)...);
    FC_LAUNCH_CHECK();
  }
};

}  // namespace fastconv::cuda
#endif
