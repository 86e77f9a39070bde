// The baseline build of the direct convolution kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_DIRECT_NS baseline
#define FC_VEC_BYTES 16
#include "conv_direct.inl"
