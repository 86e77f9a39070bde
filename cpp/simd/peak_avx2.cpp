// The avx2 build of the arithmetic-peak probe (compiler flags set in cpp/CMakeLists.txt).
#define FC_PEAK_NS avx2
#define FC_VEC_BYTES 32
#include "peak.inl"
