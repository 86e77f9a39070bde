// Compile-time shuffle masks for the GCC vector-extension kernels (simd/*.inl), shared by
// every instruction-set build.
#pragma once

#include <utility>

namespace fastconv {

// Masks are folded at compile time inside each instruction-set region; no vector crosses a
// call between differently compiled code, so the ABI note GCC attaches to returning one
// does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

// The mask that makes __builtin_shuffle(x, y, mask) zip one half of two W-lane vectors in
// groups of G lanes: lane l is lane l % G of the (l / 2G)-th group of G lanes in that half
// of x (l % 2G < G) or of y (half 0: the low W/2 lanes, 1: the high ones). With G = 1 it
// interleaves the lanes of x and y.
template <typename IVec, int W, int G, int... L>
constexpr IVec zip_mask(std::integer_sequence<int, L...>, int half) {
  return IVec{((L % (2 * G) < G ? 0 : W) + half * W / 2 + L / (2 * G) * G + L % G)...};
}

#pragma GCC diagnostic pop

}  // namespace fastconv
