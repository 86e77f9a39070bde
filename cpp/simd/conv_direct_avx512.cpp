// The avx512 build of the direct convolution kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_DIRECT_NS avx512
#define FC_VEC_BYTES 64
#include "conv_direct.inl"
