// Register-only multiply-add loop that measures the float32 arithmetic peak of one core
// for the instruction set it is compiled for. Compiled once per instruction set, with
// FC_ISA and FC_VEC_BYTES as gemm.inl. Twelve independent accumulators cover the FMA latency
// times the FMA ports of current cores, and fit 16 vector registers with the two operands.
#include <omp.h>

#include <cstdint>

#include "fastconv/peak.hpp"

namespace fastconv {
namespace FC_ISA {

namespace {
typedef float Vec __attribute__((vector_size(FC_VEC_BYTES)));
constexpr int kLanes = FC_VEC_BYTES / sizeof(float);
constexpr int kAccumulators = 12;
constexpr int64_t kStepsPerCheck = 1 << 16;
}  // namespace

double fma_peak_gflops(double seconds) {
  double flops = 0;
  float sink = 0;
  const double start = omp_get_wtime();
#pragma omp parallel reduction(+ : flops, sink)
  {
    Vec acc[kAccumulators];
    for (int i = 0; i < kAccumulators; ++i) acc[i] = Vec{} + float(i + omp_get_thread_num());
    // Factors just below and above 1 keep the accumulators finite for any run length.
    const Vec scale = Vec{} + 0.999999f, shift = Vec{} + 1e-7f;
    int64_t steps = 0;
    do {
      for (int64_t s = 0; s < kStepsPerCheck; ++s) {
        // Without -ffast-math the compiler may not fold or reorder this chain, so every
        // step issues one multiply-add per accumulator.
        for (int i = 0; i < kAccumulators; ++i) acc[i] = acc[i] * scale + shift;
      }
      steps += kStepsPerCheck;
    } while (omp_get_wtime() - start < seconds);
    flops += 2.0 * kLanes * kAccumulators * double(steps);
    for (int i = 0; i < kAccumulators; ++i) sink += acc[i][0];
  }
  const double elapsed = omp_get_wtime() - start;
  // The sink is finite, so this only forces the accumulators to be computed.
  return sink == sink ? flops / elapsed / 1e9 : 0.0;
}

}  // namespace FC_ISA
}  // namespace fastconv
