// The avx2 build of the GEMM kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_GEMM_NS avx2
#define FC_VEC_BYTES 32
#include "gemm.inl"
