// Dense matrix product used by every convolution pass:
//   C[M x N] = op(A)[M x K] * op(B)[K x N]        (C += ... when `accumulate`)
// A and B are read through (row, column) strides, so a transposed operand costs
// nothing extra. C is row-major with leading dimension ldc. Single-threaded: callers
// parallelize over independent output blocks, which keeps results deterministic.
#pragma once

#include <cstdint>

namespace fastconv {

template <typename T>
struct MatrixView {
  const T* data;
  int64_t row_stride;
  int64_t col_stride;
};

template <typename T>
using GemmFn = void (*)(int64_t m, int64_t n, int64_t k, MatrixView<T> a, MatrixView<T> b, T* c,
                        int64_t ldc, bool accumulate);

struct GemmKernels {
  GemmFn<float> f32;
  GemmFn<double> f64;
  const char* isa;  // "avx512", "avx2" or "baseline"
};

// The kernels for the best instruction set this processor supports, chosen once.
// FASTCONV_DISABLE_CPU_FEATURES (comma-separated, e.g. "AVX512F,AVX2") forces a lower path.
const GemmKernels& gemm_kernels();

inline void gemm(int64_t m, int64_t n, int64_t k, MatrixView<float> a, MatrixView<float> b,
                 float* c, int64_t ldc, bool accumulate) {
  gemm_kernels().f32(m, n, k, a, b, c, ldc, accumulate);
}
inline void gemm(int64_t m, int64_t n, int64_t k, MatrixView<double> a, MatrixView<double> b,
                 double* c, int64_t ldc, bool accumulate) {
  gemm_kernels().f64(m, n, k, a, b, c, ldc, accumulate);
}

// One entry per instruction-set build of simd/gemm.inl.
#define FC_DECLARE_GEMM_TARGET(ns)                                                          \
  namespace ns {                                                                            \
  void gemm_f32(int64_t, int64_t, int64_t, MatrixView<float>, MatrixView<float>, float*,    \
                int64_t, bool);                                                             \
  void gemm_f64(int64_t, int64_t, int64_t, MatrixView<double>, MatrixView<double>, double*, \
                int64_t, bool);                                                             \
  }
FC_DECLARE_GEMM_TARGET(baseline)
FC_DECLARE_GEMM_TARGET(avx2)
FC_DECLARE_GEMM_TARGET(avx512)
#undef FC_DECLARE_GEMM_TARGET

}  // namespace fastconv
