// RoI align and RoI pool: the semantics in one place, shared by the CPU kernels (roi.cpp and
// the instruction-set builds of simd/roi.inl), the CUDA kernels (cuda/.../roi_kernels.cuh)
// and their host emulation, plus the table of the CPU's vector kernels.
//
// Semantics are torchvision's CPU/CUDA kernels (roi_align_kernel.cpp, roi_pool_kernel.cpp),
// written out per axis: a roi is a box in input coordinates, and both ops cut it into a grid
// of bins that is the product of independent 1-D partitions. For RoI align along one axis of
// n cells with P bins:
//   start = lo * scale - (aligned ? 0.5 : 0), length = hi * scale - offset - start, at least
//   1 unless aligned; bin = length / P; grid = sampling_ratio > 0 ? sampling_ratio
//   : ceil(bin); sample i of bin p sits at start + p * bin + (i + 0.5) * bin / grid.
//   A sample outside [-1, n] reads nothing (its whole bilinear sample is zero); otherwise
//   it is clamped to [0, n - 1] and reads cells floor(y) and floor(y) + 1 with weights
//   1 - frac and frac (the last cell alone, weight 1, when floor(y) >= n - 1).
// A bin's value is the sum over its grid of samples of the product of the per-axis weights
// times the cell, divided by the number of samples (at least 1). The product form makes the
// sampling separable: each axis contributes a short list of (cell, weight) taps per bin, the
// sum of its samples' weights per cell. RoI pool rounds the scaled roi half away from zero,
// takes length = max(hi - lo + 1, 1) cells, bin = length / P, and bin p covers
// [floor(p * bin), ceil((p + 1) * bin)) + lo clipped to [0, n); an empty bin gives 0 and
// index -1, else the maximum (strictly greater than -FLT_MAX, the first in scan order).
//
// 2-D ops run as 3-D ones whose depth axis is one cell wide with one bin and one sample:
// that axis contributes the single tap (0, 1), so every weight and every result is the 2-D
// one exactly.
//
// The sample positions are computed with explicitly rounded operations on the GPU (nvcc
// would contract them into FMAs), so every device places a sample on the same cells.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "fastconv/check.hpp"
#include "fastconv/cpu_features.hpp"
#include "fastconv/geometry.hpp"

#if defined(__CUDACC__)
#define FC_HD __host__ __device__ __forceinline__
#else
#define FC_HD inline
#endif

namespace fastconv {

// ---------------------------------------------------------------------------------------
// Exactly rounded arithmetic (no contraction on the GPU; the CPU files that use these are
// compiled with -ffp-contract=off)
// ---------------------------------------------------------------------------------------

// One template per operation: the float and double intrinsics differ only by their prefix.
template <class T>
FC_HD T roi_add(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) return __fadd_rn(a, b); else return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
template <class T>
FC_HD T roi_mul(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) return __fmul_rn(a, b); else return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
template <class T>
FC_HD T roi_div(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) return __fdiv_rn(a, b); else return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

// ---------------------------------------------------------------------------------------
// Geometry of one call
// ---------------------------------------------------------------------------------------

constexpr int kRoiAxes = 3;                          // depth, height, width
constexpr int64_t kRoiGridLimit = int64_t(1) << 31;  // samples per bin and axis
constexpr int64_t kRoiCoordLimit = int64_t(1) << 31; // |rounded scaled coordinate| (roi pool)

// x (N, C, *in) with 2 or 3 spatial dims; rois (R, 1 + 2 dims); output (R, C, *out). A 2-D
// call has in[0] = out[0] = 1.
struct RoiGeom {
  int64_t dims = 2;
  int64_t batch = 0, channels = 0, rois = 0;
  int64_t in[kRoiAxes] = {1, 1, 1};
  int64_t out[kRoiAxes] = {1, 1, 1};

  FC_HD int64_t row_width() const { return 1 + 2 * dims; }
  FC_HD int64_t plane() const { return in[0] * in[1] * in[2]; }
  FC_HD int64_t bins() const { return out[0] * out[1] * out[2]; }
  // Column of a roi row holding the low coordinate along `axis` (x is column 1).
  FC_HD int64_t lo_column(int axis) const { return 1 + (kRoiAxes - 1 - axis); }
  FC_HD bool trivial(int axis) const { return axis < kRoiAxes - dims; }
};

enum RoiProblem : int {
  kRoiOk = 0,
  kRoiBatch = 1,      // batch index not an integer in [0, N)
  kRoiNonFinite = 2,  // a coordinate is NaN or infinite
  kRoiInverted = 3,   // hi < lo along some axis
  kRoiTooLarge = 4,   // scaled coordinates overflow, or an adaptive grid of 2^31 samples
};

// Checks shared by every op: batch index, finiteness, order. Returns a RoiProblem.
template <typename T>
FC_HD int roi_row_problem(const T* row, const RoiGeom& g) {
  const T b = row[0];
  if (!(b >= T(0) && b < static_cast<T>(g.batch) && b == std::floor(b))) {
    // NaN and infinities fail here too; report them as non-finite instead.
    return std::isfinite(b) ? kRoiBatch : kRoiNonFinite;
  }
  const int64_t w = g.row_width();
  for (int64_t j = 1; j < w; ++j) {
    if (!std::isfinite(row[j])) return kRoiNonFinite;
  }
  for (int64_t j = 1; j <= g.dims; ++j) {
    if (row[j + g.dims] < row[j]) return kRoiInverted;
  }
  return kRoiOk;
}

// ---------------------------------------------------------------------------------------
// RoI align along one axis
// ---------------------------------------------------------------------------------------

template <typename T>
struct RoiAxis {
  T start = T(0);    // position of the roi's low edge, in cells
  T bin = T(1);      // bin length, in cells
  int64_t grid = 1;  // samples per bin
  int64_t bins = 1;  // P
  int64_t size = 1;  // n, the input extent
};

// The axis of a roi with coordinates [lo, hi] before scaling.
template <typename T>
FC_HD RoiAxis<T> align_axis(T lo, T hi, T scale, bool aligned, int64_t sampling_ratio,
                            int64_t bins, int64_t size) {
  RoiAxis<T> a;
  const T offset = aligned ? T(0.5) : T(0);
  a.start = roi_add(roi_mul(lo, scale), -offset);
  const T end = roi_add(roi_mul(hi, scale), -offset);
  T length = roi_add(end, -a.start);
  if (!aligned && !(length >= T(1))) length = T(1);
  a.bin = roi_div(length, static_cast<T>(bins));
  // ceil of a finite bin below 2^31 (validated by align_row_problem) fits int64.
  a.grid = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(a.bin));
  a.bins = bins;
  a.size = size;
  return a;
}

// The trivial depth axis of a 2-D call: one bin, one sample, the tap (0, 1).
template <typename T>
FC_HD RoiAxis<T> trivial_axis() {
  return RoiAxis<T>{};
}

// Axis `axis` of roi `row` (trivial for the depth axis of a 2-D call).
template <typename T>
FC_HD RoiAxis<T> roi_align_axis(const T* row, const RoiGeom& g, int axis, T scale, bool aligned,
                                int64_t sampling_ratio) {
  if (g.trivial(axis)) return trivial_axis<T>();
  const int64_t c = g.lo_column(axis);
  return align_axis(row[c], row[c + g.dims], scale, aligned, sampling_ratio, g.out[axis],
                    g.in[axis]);
}

// RoI align's extra condition: scaled coordinates finite, adaptive grids below 2^31.
template <typename T>
FC_HD int align_row_problem(const T* row, const RoiGeom& g, T scale, bool aligned,
                            int64_t sampling_ratio) {
  const int problem = roi_row_problem(row, g);
  if (problem != kRoiOk) return problem;
  for (int axis = kRoiAxes - static_cast<int>(g.dims); axis < kRoiAxes; ++axis) {
    const RoiAxis<T> a = roi_align_axis(row, g, axis, scale, aligned, 1);
    if (!std::isfinite(a.start) || !std::isfinite(a.bin)) return kRoiTooLarge;
    if (sampling_ratio <= 0 && !(a.bin < static_cast<T>(kRoiGridLimit))) return kRoiTooLarge;
  }
  return kRoiOk;
}

// Position of sample i of bin p, torchvision's expression in T.
template <typename T>
FC_HD T sample_position(const RoiAxis<T>& a, int64_t p, int64_t i) {
  const T origin = roi_add(a.start, roi_mul(static_cast<T>(p), a.bin));
  const T within = roi_div(roi_mul(roi_add(static_cast<T>(i), T(0.5)), a.bin),
                           static_cast<T>(a.grid));
  return roi_add(origin, within);
}

// The cells a sample at `y` reads along an axis of n cells and their weights; false when
// the sample lies outside [-1, n] and reads nothing.
template <typename T>
FC_HD bool sample_taps(T y, int64_t n, int64_t& lo, int64_t& hi, T& w_lo, T& w_hi) {
  if (!(y >= T(-1) && y <= static_cast<T>(n))) return false;
  if (y <= T(0)) y = T(0);
  lo = static_cast<int64_t>(y);
  if (lo >= n - 1) {
    lo = hi = n - 1;
    y = static_cast<T>(lo);
  } else {
    hi = lo + 1;
  }
  const T frac = roi_add(y, -static_cast<T>(lo));
  w_lo = roi_add(T(1), -frac);
  w_hi = frac;
  return true;
}

// A range [k0, k1) of flat sample indices k = p * grid + i that holds every sample whose
// position (as sample_position computes it) lies in [lo, hi]. Positions are increasing in k;
// the range is widened by the rounding error of sample_position, so it may hold a few more.
template <typename T>
FC_HD void sample_span(const RoiAxis<T>& a, double lo, double hi, int64_t& k0, int64_t& k1) {
  const int64_t total = a.bins * a.grid;
  k0 = 0;
  k1 = total;
  if (total <= 0) {
    k1 = 0;
    return;
  }
  const double start = static_cast<double>(a.start), bin = static_cast<double>(a.bin);
  const double eps = sizeof(T) == sizeof(float) ? 1.2e-7 : 2.3e-16;
  const double tol = 8 * eps *
                     (std::fabs(start) + static_cast<double>(a.bins) * std::fabs(bin) +
                      std::fabs(lo) + std::fabs(hi) + 1);
  const double step = bin / static_cast<double>(a.grid);
  if (!(step > 0)) {  // a zero-length aligned roi: every sample sits at start
    if (!(start >= lo - tol && start <= hi + tol)) k1 = 0;
    return;
  }
  const double margin = tol / step + 2;
  const double f0 = (lo - start) / step - 0.5 - margin;
  const double f1 = (hi - start) / step + 0.5 + margin;
  const double t = static_cast<double>(total);
  k0 = f0 <= 0 ? 0 : f0 >= t ? total : static_cast<int64_t>(std::floor(f0));
  k1 = f1 <= 0 ? 0 : f1 >= t ? total : static_cast<int64_t>(std::ceil(f1));
  if (k1 < k0) k1 = k0;
}

// Weight of cell `cell` in sample k of an axis (0 when the sample does not read it).
template <typename T>
FC_HD T sample_weight(const RoiAxis<T>& a, int64_t k, int64_t cell) {
  const int64_t p = k / a.grid;
  int64_t lo = 0, hi = 0;
  T w_lo = T(0), w_hi = T(0);
  if (!sample_taps(sample_position(a, p, k - p * a.grid), a.size, lo, hi, w_lo, w_hi)) {
    return T(0);
  }
  T w = T(0);
  if (lo == cell) w = w_lo;
  if (hi == cell) w = roi_add(w, w_hi);
  return w;
}

// Samples of one bin (the divisor of its sum): the product of the per-axis grids, at least 1.
template <typename T>
FC_HD T sample_count(const RoiAxis<T>* axes) {
  const T count = roi_mul(roi_mul(static_cast<T>(axes[0].grid), static_cast<T>(axes[1].grid)),
                          static_cast<T>(axes[2].grid));
  return count > T(0) ? count : T(1);
}

// ---------------------------------------------------------------------------------------
// RoI pool along one axis
// ---------------------------------------------------------------------------------------

// round() half away from zero, as std::round, for |v| < 2^31 (validated).
template <typename T>
FC_HD int64_t round_away(T v) {
  return static_cast<int64_t>(std::round(v));
}

struct PoolAxis {
  int64_t start = 0;  // the rounded low edge, in cells
  double bin = 1;     // bin length (computed in the roi dtype, stored exactly)
  int64_t size = 1;   // n
};

template <typename T>
FC_HD PoolAxis pool_axis(T lo, T hi, T scale, int64_t bins, int64_t size) {
  PoolAxis a;
  a.start = round_away(roi_mul(lo, scale));
  const int64_t end = round_away(roi_mul(hi, scale));
  const int64_t length = end - a.start + 1 > 1 ? end - a.start + 1 : 1;
  a.bin = static_cast<double>(roi_div(static_cast<T>(length), static_cast<T>(bins)));
  a.size = size;
  return a;
}

template <typename T>
FC_HD PoolAxis roi_pool_axis(const T* row, const RoiGeom& g, int axis, T scale) {
  if (g.trivial(axis)) return PoolAxis{};
  const int64_t c = g.lo_column(axis);
  return pool_axis(row[c], row[c + g.dims], scale, g.out[axis], g.in[axis]);
}

// Cells [s, e) of bin p, clipped to the input; empty when e <= s.
template <typename T>
FC_HD void pool_bin(const PoolAxis& a, int64_t p, int64_t& s, int64_t& e) {
  const T bin = static_cast<T>(a.bin);
  s = static_cast<int64_t>(std::floor(roi_mul(static_cast<T>(p), bin))) + a.start;
  e = static_cast<int64_t>(std::ceil(roi_mul(static_cast<T>(p + 1), bin))) + a.start;
  s = s < 0 ? 0 : s > a.size ? a.size : s;
  e = e < 0 ? 0 : e > a.size ? a.size : e;
}

// RoI pool's extra condition: rounded scaled coordinates within +-2^31 (torchvision's int).
template <typename T>
FC_HD int pool_row_problem(const T* row, const RoiGeom& g, T scale) {
  const int problem = roi_row_problem(row, g);
  if (problem != kRoiOk) return problem;
  const T limit = static_cast<T>(kRoiCoordLimit);
  for (int64_t j = 1; j < g.row_width(); ++j) {
    const T v = roi_mul(row[j], scale);
    if (!(std::fabs(v) < limit)) return kRoiTooLarge;
  }
  return kRoiOk;
}

// The lowest value a roi pool bin starts from: strictly greater values win (torchvision's
// -FLT_MAX in both dtypes).
template <typename T>
FC_HD T pool_floor() {
  return static_cast<T>(-3.40282346638528859811704183484516925440e+38);
}

// ---------------------------------------------------------------------------------------
// Host side: argument checks and messages shared by the CPU and CUDA bindings
// ---------------------------------------------------------------------------------------

using RoiDims = std::vector<int64_t>;

// Validates x (N, C, *spatial), rois (R, 1 + 2 dims) and the output size; `x_name` names
// the first array in messages ("x", or "dx" for a gradient).
inline RoiGeom make_roi_geom(const char* op, const RoiDims& x_shape, const char* x_name,
                             const RoiDims& rois_shape, const RoiDims& out_size) {
  FC_CHECK(x_shape.size() == 4 || x_shape.size() == 5, op, ": ", x_name,
           " must be (N, C, H, W) or (N, C, D, H, W), got shape ", tuple_str(x_shape));
  for (int64_t s : x_shape) {
    FC_CHECK(s >= 1, op, ": ", x_name, " has a zero-size dim, shape ", tuple_str(x_shape));
  }
  RoiGeom g;
  g.dims = static_cast<int64_t>(x_shape.size()) - 2;
  g.batch = x_shape[0];
  g.channels = x_shape[1];
  FC_CHECK(rois_shape.size() == 2 && rois_shape[1] == g.row_width(), op, ": rois must have shape"
           " (R, ", g.row_width(), ") for ", x_name, " shape ", tuple_str(x_shape), ", got shape ",
           tuple_str(rois_shape));
  g.rois = rois_shape[0];
  FC_CHECK(static_cast<int64_t>(out_size.size()) == g.dims, op, ": output_size ",
           tuple_str(out_size), " must have ", g.dims, " entries for ", x_name, " shape ",
           tuple_str(x_shape));
  for (int64_t d = 0; d < g.dims; ++d) {
    const int axis = static_cast<int>(kRoiAxes - g.dims + d);
    g.in[axis] = x_shape[2 + d];
    g.out[axis] = out_size[d];
    FC_CHECK(out_size[d] >= 1, op, ": output_size ", tuple_str(out_size),
             " must be positive in every dim");
    FC_CHECK(out_size[d] <= kMaxExtent, op, ": output_size ", tuple_str(out_size), " is too large");
  }
  const int64_t plane = checked_mul(checked_mul(g.in[0], g.in[1], "plane size"), g.in[2],
                                    "plane size");
  checked_mul(checked_mul(g.batch, g.channels, "element count"), plane, "element count");
  const int64_t bins = checked_mul(checked_mul(g.out[0], g.out[1], "output size"), g.out[2],
                                   "output size");
  checked_mul(checked_mul(std::max<int64_t>(g.rois, 1), g.channels, "output element count"),
              bins, "output element count");
  return g;
}

inline RoiDims roi_out_shape(const RoiGeom& g) {
  RoiDims s{g.rois, g.channels};
  for (int axis = kRoiAxes - static_cast<int>(g.dims); axis < kRoiAxes; ++axis)
    s.push_back(g.out[axis]);
  return s;
}

inline RoiDims roi_in_shape(const RoiGeom& g) {
  RoiDims s{g.batch, g.channels};
  for (int axis = kRoiAxes - static_cast<int>(g.dims); axis < kRoiAxes; ++axis)
    s.push_back(g.in[axis]);
  return s;
}

inline void check_roi_scale(const char* op, double scale) {
  FC_CHECK(std::isfinite(scale) && scale > 0, op, ": spatial_scale must be finite and positive, "
           "got ", scale);
}

inline void check_sampling_ratio(const char* op, int64_t sampling_ratio) {
  FC_CHECK(sampling_ratio < kRoiGridLimit, op, ": sampling_ratio must be below 2^31, got ",
           sampling_ratio);
}

// Raises ValueError for `problem` (a RoiProblem) found in row r of rois.
template <typename T>
[[noreturn]] void raise_roi_problem(const char* op, int problem, int64_t r, const T* row,
                                    const RoiGeom& g) {
  std::string values = "[";
  for (int64_t j = 0; j < g.row_width(); ++j) values += (j ? ", " : "") + concat(+row[j]);
  values += "]";
  const std::string shapes = concat(" (rois shape ", tuple_str({g.rois, g.row_width()}),
                                    ", x shape ", tuple_str(roi_in_shape(g)), ")");
  const char* order = g.dims == 2 ? "x1 <= x2 and y1 <= y2" : "x1 <= x2, y1 <= y2 and z1 <= z2";
  switch (problem) {
    case kRoiBatch:
      FC_CHECK(false, op, ": rois row ", r, " has batch index ", +row[0], "; it must be an "
               "integer in [0, ", g.batch, ")", shapes);
    case kRoiNonFinite:
      FC_CHECK(false, op, ": rois row ", r, " has a non-finite value: ", values, shapes);
    case kRoiInverted:
      FC_CHECK(false, op, ": rois row ", r, " is inverted (need ", order, "): ", values, shapes);
    default:
      FC_CHECK(false, op, ": rois row ", r, " is too large once scaled by spatial_scale (scaled "
               "coordinates must stay below 2^31, and so must adaptive sampling grids): ", values,
               shapes);
  }
}

// ---------------------------------------------------------------------------------------
// The CPU's vector kernels (simd/roi.inl, one build per instruction set)
// ---------------------------------------------------------------------------------------

// The CPU works channels-last: a block of `vecs` vectors of channels of one image, in a
// buffer laid out (depth, height, width, channel) with the element pitches `pitch` (z, y,
// x). One roi's RoI-align taps per axis: bin p reads cell[k] with weight[k] for k in
// [begin[p], begin[p + 1]).
template <typename T>
struct AxisTaps {
  const int64_t* begin;
  const int64_t* cell;
  const T* weight;
};

template <typename T>
struct AlignTaps {
  AxisTaps<T> axis[kRoiAxes];
  const int64_t* out;  // bins per axis
};

// RoI pool bins of one roi: per axis, bin p covers cells [start[p], end[p]).
struct PoolBins {
  const int64_t* start[kRoiAxes];
  const int64_t* end[kRoiAxes];
  const int64_t* out;
};

template <typename T>
struct RoiKernelFns {
  // dst[bin][c] = (sum over the bin's taps of weight * src[cell][c]) / count.
  void (*align_forward)(const AlignTaps<T>& taps, const T* src, const int64_t* pitch,
                        int64_t vecs, T count, T* dst);
  // acc[cell][c] += weight * g[bin][c] over every tap of every bin whose cell lies in the
  // band of flat (z * H + y) rows [row0, row1); acc holds only those rows.
  void (*align_backward)(const AlignTaps<T>& taps, const T* g, int64_t vecs, int64_t height,
                         int64_t row0, int64_t row1, const int64_t* pitch, T* acc);
  // dst[bin][c] = the bin's maximum of src (0 when empty), at[bin][c] its flat cell
  // (z * H + y) * W + x (-1 when nothing beat -FLT_MAX). Float builds need planes below
  // 2^31 cells (32-bit positions in the vector lanes).
  void (*pool_forward)(const PoolBins& bins, const T* src, const int64_t* pitch, int64_t vecs,
                       int64_t height, int64_t width, T* dst, int64_t* at);
  // dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols: the layout
  // changes between the callers' arrays and the channels-last blocks.
  void (*transpose)(const T* src, int64_t src_stride, int64_t rows, int64_t cols, T* dst,
                    int64_t dst_stride);
  int64_t lanes;  // channels per vector
};

struct RoiKernels {
  RoiKernelFns<float> f32;
  RoiKernelFns<double> f64;
};

constexpr int64_t kRoiMaxVecs = 4;  // a channel block is at most this many vectors

}  // namespace fastconv

FC_DECLARE_PER_ISA(const RoiKernels& roi_kernels())
