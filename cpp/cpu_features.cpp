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
  if (avx512) return {avx512::gemm_f32, avx512::gemm_f64, "avx512"};
  if (avx2) return {avx2::gemm_f32, avx2::gemm_f64, "avx2"};
  return {baseline::gemm_f32, baseline::gemm_f64, "baseline"};
}

}  // namespace

const GemmKernels& gemm_kernels() {
  static const GemmKernels kernels = select();
  return kernels;
}

}  // namespace fastconv
