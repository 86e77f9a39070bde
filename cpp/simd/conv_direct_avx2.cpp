// The avx2 build of the direct convolution kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_DIRECT_NS avx2
#define FC_VEC_BYTES 32
#include "conv_direct.inl"
