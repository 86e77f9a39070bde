// One stable radix sort shared by the pool and box kernels. It lives in its own translation
// unit (radix_sort.cu) so CUB's heavy templates are instantiated exactly once: every caller
// encodes its ordering into uint64 keys and carries int64 payloads.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastconv_cuda/binding.hpp"

namespace fastconv::cuda {

// Stable ascending sort of (keys_in, values_in) over bits [0, end_bit) of the keys into
// (keys_out, values_out), n items, on `stream`; temporary storage from `ws`. Equal keys keep
// their input order (LSD radix sort), which callers rely on for tie-breaking. n may be 0.
void stable_sort_pairs(Workspace& ws, const uint64_t* keys_in, uint64_t* keys_out,
                       const int64_t* values_in, int64_t* values_out, int64_t n, int end_bit,
                       cudaStream_t stream);

// Number of bits needed to represent every value in [0, max_value]; at least 1.
inline int bits_for(uint64_t max_value) {
  int bits = 1;
  while (bits < 64 && (max_value >> bits) != 0) ++bits;
  return bits;
}

}  // namespace fastconv::cuda
