// Picks the GEMM build for the best instruction set the processor reports, once.
#include <cctype>
#include <cstdlib>
#include <string>

#include "fastconv/gemm.hpp"

namespace fastconv {

namespace {

// True unless FASTCONV_DISABLE_CPU_FEATURES names `feature` (case-insensitive list).
bool allowed(const char* feature) {
  const char* env = std::getenv("FASTCONV_DISABLE_CPU_FEATURES");
  if (!env) return true;
  std::string list(env);
  for (auto& ch : list) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find_first_of(", ", start);
    if (end == std::string::npos) end = list.size();
    if (list.compare(start, end - start, feature) == 0) return false;
    start = end + 1;
  }
  return true;
}

GemmKernels select() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    allowed("AVX2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw") && allowed("AVX512F");
#define FC_GEMM_TABLE(ns) \
  {ns::gemm_f32, ns::gemm_f64, ns::pack_f32, ns::pack_f64, ns::packed_f32, ns::packed_f64, \
   ns::panels_f32, ns::panels_f64, ns::shifted_f32, ns::shifted_f64, ns::dot_f32, ns::dot_f64, \
   #ns, ns::panel_rows,                                                                      \
   ns::panel_cols_f32, ns::panel_cols_f64}
  if (avx512) return FC_GEMM_TABLE(avx512);
  if (avx2) return FC_GEMM_TABLE(avx2);
  return FC_GEMM_TABLE(baseline);
#undef FC_GEMM_TABLE
}

}  // namespace

const GemmKernels& gemm_kernels() {
  static const GemmKernels kernels = select();
  return kernels;
}

}  // namespace fastconv
