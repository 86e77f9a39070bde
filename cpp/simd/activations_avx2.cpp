// The avx2 build of the activation kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_ACT_NS avx2
#include "activations.inl"
