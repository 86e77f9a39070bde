// The sweeps box IoU and NMS spend their time in, compiled once per instruction set (see
// cpu_features.hpp) with -ffp-contract=off, so every build rounds exactly as the NumPy
// reference does; the loops are written for `omp simd` to vectorize.
#include <cstdint>

#include "fastconv/box_sweeps.hpp"

namespace fastconv {
namespace FC_ISA {
namespace {

template <typename T>
void iou_row(const Box<T>& a, const T* X1, const T* Y1, const T* X2, const T* Y2,
             const T* AR, int64_t m, T* __restrict row) {
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    row[j] = pair_iou(a.x1, a.y1, a.x2, a.y2, a.area, X1[j], Y1[j], X2[j], Y2[j], AR[j]);
  }
}

template <typename T>
int64_t suppress(const Box<T>& a, const T* X1, const T* Y1, const T* X2, const T* Y2,
                 const T* AR, T thr, int64_t from, int64_t to, unsigned char* __restrict sup) {
  // A 32-bit count (per-call sweeps are far shorter than 2^31) keeps the reduction from
  // widening every lane to 64 bits.
  int32_t fresh = 0;
#pragma omp simd reduction(+ : fresh)
  for (int64_t j = from; j < to; ++j) {
    const T iou = pair_iou(a.x1, a.y1, a.x2, a.y2, a.area, X1[j], Y1[j], X2[j], Y2[j], AR[j]);
    const unsigned char hit = iou >= thr;
    fresh += hit & (sup[j] ^ 1);
    sup[j] |= hit;
  }
  return fresh;
}

template <typename T>
BoxSweepFns<T> sweeps_of() {
  return {iou_row<T>, suppress<T>};
}

}  // namespace

const BoxSweeps& box_sweeps() {
  static const BoxSweeps sweeps{sweeps_of<float>(), sweeps_of<double>()};
  return sweeps;
}

}  // namespace FC_ISA
}  // namespace fastconv
