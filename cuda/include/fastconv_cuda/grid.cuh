// Launch sizes shared by every CUDA kernel family; no CUDA runtime calls, so cuda/emu/
// compiles it as plain C++.
#pragma once

#include <cstdint>

namespace fastconv::cuda {

constexpr int kThreads = 256;  // threads per block, unless a launch says otherwise

// Blocks for a grid-stride loop over `n` items: enough to fill the device, never more than
// the grid limit (loops take int64 indices, so any n is covered).
inline unsigned blocks_for(int64_t n, int64_t per_block = kThreads) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (int64_t(1) << 20) ? (int64_t(1) << 20) : b));
}

}  // namespace fastconv::cuda
