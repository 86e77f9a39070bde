// The baseline build of the GEMM kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_GEMM_NS baseline
#define FC_VEC_BYTES 16
#include "gemm.inl"
