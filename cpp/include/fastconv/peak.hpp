// Arithmetic-peak probe used by the benchmark table: one build per instruction set, like
// the GEMM kernels, so it reports the peak of the path the kernels actually run.
#pragma once

namespace fastconv {

// float32 GFLOP/s of a register-only multiply-add loop on all OpenMP threads, run for
// about `seconds`.
#define FC_DECLARE_PEAK_TARGET(ns) \
  namespace ns {                   \
  double fma_peak_gflops(double seconds); \
  }
FC_DECLARE_PEAK_TARGET(baseline)
FC_DECLARE_PEAK_TARGET(avx2)
FC_DECLARE_PEAK_TARGET(avx512)
#undef FC_DECLARE_PEAK_TARGET

}  // namespace fastconv
