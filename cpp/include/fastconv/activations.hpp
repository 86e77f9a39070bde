// Elementwise activations for the network layer, compiled once per instruction set
// (simd/activations.inl) so that the math library's vector variants of the same width run.
#pragma once

#include <cstdint>

namespace fastconv {

#define FC_DECLARE_ACTIVATIONS_TARGET(ns)                         \
  namespace ns {                                                  \
  void tanh_f32(const float* x, float* y, int64_t count);         \
  void tanh_f64(const double* x, double* y, int64_t count);       \
  }
FC_DECLARE_ACTIVATIONS_TARGET(baseline)
FC_DECLARE_ACTIVATIONS_TARGET(avx2)
FC_DECLARE_ACTIVATIONS_TARGET(avx512)
#undef FC_DECLARE_ACTIVATIONS_TARGET

}  // namespace fastconv
