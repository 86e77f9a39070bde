// The avx512 build of the activation kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_ACT_NS avx512
#include "activations.inl"
