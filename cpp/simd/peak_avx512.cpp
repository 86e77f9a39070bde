// The avx512 build of the arithmetic-peak probe (compiler flags set in cpp/CMakeLists.txt).
#define FC_PEAK_NS avx512
#define FC_VEC_BYTES 64
#include "peak.inl"
