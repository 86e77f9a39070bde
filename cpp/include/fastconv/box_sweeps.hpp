// The box arithmetic of boxes.cpp and of the instruction-set builds of its sweeps
// (simd/box_sweeps.inl): one IoU formula, operation for operation, so that every path
// rounds alike (all are compiled with -ffp-contract=off), and the sweeps' table.
#pragma once

#include <cstdint>

#include "fastconv/cpu_features.hpp"

namespace fastconv {

// std::max/std::min semantics, spelled out so that the sweeps vectorize.
template <typename T>
FC_INLINE T max_of(T a, T b) {
  return a < b ? b : a;
}
template <typename T>
FC_INLINE T min_of(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
FC_INLINE T box_area(T x1, T y1, T x2, T y2) {
  return (x2 - x1) * (y2 - y1);
}

// The contract's formula, operation for operation; written branch-free on the min/max so
// that loops over it vectorize.
template <typename T>
FC_INLINE T pair_iou(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2, T area_b) {
  const T w = max_of(T(0), min_of(ax2, bx2) - max_of(ax1, bx1));
  const T h = max_of(T(0), min_of(ay2, by2) - max_of(ay1, by1));
  const T inter = w * h;
  const T uni = area_a + area_b - inter;
  // A safe denominator instead of a guarded division keeps the loop body branch-free.
  const bool ok = uni > T(0);
  const T q = inter / (ok ? uni : T(1));
  return ok ? q : T(0);
}

// One box and its area, the fixed side of a sweep.
template <typename T>
struct Box {
  T x1, y1, x2, y2, area;
};

// The sweeps of one dtype over boxes in structure-of-arrays form (X1, Y1, X2, Y2, areas):
// iou_row: row[j] = IoU(box, j) for j < m; suppress: for j in [from, to),
// sup[j] |= IoU(box, j) >= thr, returning how many entries that newly suppressed.
template <typename T>
struct BoxSweepFns {
  void (*iou_row)(const Box<T>& box, const T* X1, const T* Y1, const T* X2, const T* Y2,
                  const T* AR, int64_t m, T* row);
  int64_t (*suppress)(const Box<T>& box, const T* X1, const T* Y1, const T* X2, const T* Y2,
                      const T* AR, T thr, int64_t from, int64_t to, unsigned char* sup);
};

struct BoxSweeps {
  BoxSweepFns<float> f32;
  BoxSweepFns<double> f64;
};

}  // namespace fastconv

FC_DECLARE_PER_ISA(const BoxSweeps& box_sweeps())
