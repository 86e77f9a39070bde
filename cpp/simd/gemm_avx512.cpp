// The avx512 build of the GEMM kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_GEMM_NS avx512
#define FC_VEC_BYTES 64
#include "gemm.inl"
