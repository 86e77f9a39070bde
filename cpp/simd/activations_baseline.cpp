// The baseline build of the activation kernels (compiler flags set in cpp/CMakeLists.txt).
#define FC_ACT_NS baseline
#include "activations.inl"
