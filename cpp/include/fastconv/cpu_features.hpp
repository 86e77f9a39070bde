// Instruction-set selection, the one place every SIMD kernel family goes through.
//
// A family's vector code lives in cpp/simd/<family>.inl, which cpp/CMakeLists.txt compiles
// once per instruction set (baseline x86-64, AVX2, AVX-512) into namespace
// fastconv::<isa> with FC_ISA naming that namespace and FC_VEC_BYTES the vector width. The
// family's header declares its entry points in each namespace with FC_DECLARE_PER_ISA, and
// its .cpp picks one build with for_cpu_path: the path cpu_isa() chose at import.
#pragma once

namespace fastconv {

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The best instruction set the processor supports, less those FASTCONV_DISABLE_CPU_FEATURES
// names (comma-separated, e.g. "AVX512F,AVX2"); decided once.
Isa cpu_isa();

// "avx512", "avx2" or "baseline".
const char* isa_name(Isa isa);

// Of one entry point compiled once per instruction set, the build for the selected path.
template <typename Fn>
Fn for_cpu_path(Fn avx512_build, Fn avx2_build, Fn baseline_build) {
  switch (cpu_isa()) {
    case Isa::kAvx512: return avx512_build;
    case Isa::kAvx2: return avx2_build;
    default: return baseline_build;
  }
}

// The float32 or float64 half (`.f32`, `.f64`) of a kernel table, by T.
template <typename T, typename Table>
const auto& of_dtype(const Table& table) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return table.f32;
  } else {
    return table.f64;
  }
}

}  // namespace fastconv

// Declares `declaration` (one entry point of a SIMD family) in every instruction-set
// namespace, e.g. FC_DECLARE_PER_ISA(double fma_peak_gflops(double seconds)).
#ifdef FASTCONV_BASELINE_ONLY
// Testing builds (CMake FASTCONV_BASELINE_ONLY): only the baseline kernels exist, and the
// other namespaces name them, so every for_cpu_path call site links unchanged.
namespace fastconv::baseline {}
namespace fastconv {
namespace avx2 = baseline;
namespace avx512 = baseline;
}  // namespace fastconv
#define FC_DECLARE_PER_ISA(...) namespace fastconv::baseline { __VA_ARGS__; }
#else
#define FC_DECLARE_PER_ISA(...)                   \
  namespace fastconv::baseline { __VA_ARGS__; }   \
  namespace fastconv::avx2 { __VA_ARGS__; }       \
  namespace fastconv::avx512 { __VA_ARGS__; }
#endif

// Forces inlining in the vector kernels, where a call would spill the vector registers.
#define FC_INLINE inline __attribute__((always_inline))
