// The launcher handed to the kernel headers' *_run plans (conv_kernels.cuh,
// im2col_kernels.cuh): every kernel there runs 256-thread blocks on the caller's stream,
// and every launch is checked at once (FC_LAUNCH_CHECK).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "fastconv_cuda/common.hpp"
#include "fastconv_cuda/conv_params.cuh"

namespace fastconv::cuda {

struct StreamLauncher {
  cudaStream_t stream;
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), unsigned grid, Args&&... args) const {
    kernel<<<grid, kThreads, 0, stream>>>(std::forward<Args>(args)...);
    FC_LAUNCH_CHECK();
  }
};

}  // namespace fastconv::cuda
