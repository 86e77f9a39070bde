// Elementwise activations vectorized per instruction set (simd/activations.inl).
#pragma once

#include <cstdint>

#include "fastconv/cpu_features.hpp"

FC_DECLARE_PER_ISA(void tanh_f32(const float* x, float* y, int64_t count))
FC_DECLARE_PER_ISA(void tanh_f64(const double* x, double* y, int64_t count))
