// The baseline build of the arithmetic-peak probe (compiler flags set in cpp/CMakeLists.txt).
#define FC_PEAK_NS baseline
#define FC_VEC_BYTES 16
#include "peak.inl"
