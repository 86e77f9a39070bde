// tanh over a contiguous run, vectorized through glibc's libmvec (the vector variants of
// tanhf/tanh, same accuracy class as the scalar ones: a few ulp). Compiled once per
// instruction set into namespace FC_ISA; the compiler flags pick the vector width.
#include <features.h>

#include <cmath>
#include <cstdint>

#include "fastconv/activations.hpp"

// glibc declares the vector variants only under -ffast-math, whose other assumptions
// (no NaN, no signed zero) we do not want; they exist from glibc 2.35 on. Elsewhere the
// loop calls the scalar functions, with the same results up to those few ulp.
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 35) && defined(__x86_64__)
extern "C" float tanhf(float) noexcept __attribute__((simd("notinbranch")));
extern "C" double tanh(double) noexcept __attribute__((simd("notinbranch")));
#endif

namespace fastconv {
namespace FC_ISA {

void tanh_f32(const float* x, float* y, int64_t count) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] = tanhf(x[i]);
}

void tanh_f64(const double* x, double* y, int64_t count) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] = tanh(x[i]);
}

}  // namespace FC_ISA
}  // namespace fastconv
