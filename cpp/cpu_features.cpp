// Picks the best instruction set the processor reports, once (see cpu_features.hpp).
#include "fastconv/cpu_features.hpp"

#include <cctype>
#include <cstdlib>
#include <string>

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

Isa detect() {
#ifdef FASTCONV_BASELINE_ONLY
  return Isa::kBaseline;
#endif
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    allowed("AVX2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw") && allowed("AVX512F");
  return avx512 ? Isa::kAvx512 : avx2 ? Isa::kAvx2 : Isa::kBaseline;
}

}  // namespace

Isa cpu_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

}  // namespace fastconv
