// The float32 multiply-add peak probe, one build per instruction set (simd/peak.inl).
#pragma once

#include "fastconv/cpu_features.hpp"

FC_DECLARE_PER_ISA(double fma_peak_gflops(double seconds))
