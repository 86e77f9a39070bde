// Dense matrix product used by every convolution pass:
//   C[M x N] = op(A)[M x K] * op(B)[K x N]        (C += ... when `accumulate`)
// A and B are read through (row, column) strides, so a transposed operand costs
// nothing extra. C is row-major with leading dimension ldc. Single-threaded: callers
// parallelize over independent output blocks, which keeps results deterministic.
#pragma once

#include <algorithm>
#include <cstdint>

#include "fastconv/cpu_features.hpp"

namespace fastconv {

template <typename T>
struct MatrixView {
  const T* data;
  int64_t row_stride;
  int64_t col_stride;
};

// A right operand whose rows (or columns) are shifted windows of one array, as in a
// convolution over the stride phases of a padded input: B[p][j] = base[offsets[p] + j], or
// with `by_columns`, B[p][j] = base[offsets[j] + p]. Rows are read in place by the
// micro-kernel, whole register tiles at a time, so up to panel_cols - 1 values past
// offsets[p] + n - 1 must be readable; columns are gathered while packing. Either way no
// column matrix is ever written.
template <typename T>
struct ShiftedRows {
  const T* base;
  const int64_t* offsets;
  bool by_columns;
};

// A left operand read in place through two offset tables: A[i][p] = base[row_offsets[i] +
// depth_offsets[p]]. A convolution's windows over a zero-padded input are such a matrix
// either way round: rows the output positions and depth the (channel, tap) pairs (the
// forward), or rows the (channel, tap) pairs and depth the positions (the weight gradient),
// so no column matrix is written and positions of several images share register tiles.
// The depth is summed in blocks of kGemmDepth, as in every other product here, so that
// each element of C is rounded exactly as on the other paths (a convolution's output does
// not depend on which path, batch or chunk computed it), unless `block_depth` asks for
// deeper blocks, which write C back less often.
template <typename T>
struct GatheredRows {
  const T* base;
  const int64_t* row_offsets;
  const int64_t* depth_offsets;
  int64_t block_depth = 0;  // 0: kGemmDepth
};

// Sets of depth steps: set s is the ascending depth indices entries[starts[s] ..
// starts[s + 1]), and vector u of a LaneRuns operand names set vector_set[u] (-1: the whole
// depth; indexed like vector_offsets). A register tile whose vectors all name one set sums
// over that set only, in the order it would sum the whole depth; other tiles sum it all.
// Leaving out products that are zeros leaves each sum bitwise as it was (save the sign of a
// zero sum, and an inf or NaN times a skipped zero), so results do not depend on which
// tiles skipped.
struct DepthSets {
  const int64_t* vector_set;
  const int64_t* starts;
  const int64_t* entries;
  int64_t count;
};

// A right operand whose vectors are runs of one array: B[p][j] = base[row_offsets[p] +
// vector_offsets[j / W] + j % W], W the lanes of one vector (GemmKernels::lanes_*), n a
// multiple of W. A convolution over an input with the images of the batch innermost (their
// W values of one cell side by side) is such a matrix with rows the (channel, tap) pairs and
// each vector one output position of W images: every lane works however small the maps.
//
// Vectors may name depth steps to skip (`skips`, sets over the rows p): where a convolution's
// windows overhang the input, the products over the taps that read padding are known zeros.
template <typename T>
struct LaneRuns {
  const T* base;
  const int64_t* row_offsets;
  const int64_t* vector_offsets;
  const DepthSets* skips = nullptr;
};

// A left operand packed once and reused by many products (convolution weights).
// Layout: for each depth block of kGemmDepth, rows [0, round_up_rows(m)) in panels of
// GemmKernels::panel_rows rows, each panel depth-major. Only the GEMM build that packed it
// may read it. Depth blocks are independent, so they may be packed in parallel by packing
// each block as its own matrix at dst + block_start * round_up_rows(m).
constexpr int64_t kGemmDepth = 256;

template <typename T>
struct PackedA {
  const T* data;
  int64_t padded_rows;    // round_up_rows(m) of the packed matrix
  int64_t first_row = 0;  // a product may use rows [first_row, first_row + its m), where
                          // first_row is a multiple of GemmKernels::panel_rows
  // Nonzero: `data` is A itself, unpacked and row-major with rows this far apart, which the
  // micro-kernel reads in place (for weights too large to be worth copying every call).
  int64_t row_stride = 0;
};

template <typename T>
using GemmFn = void (*)(int64_t m, int64_t n, int64_t k, MatrixView<T> a, MatrixView<T> b, T* c,
                        int64_t ldc, bool accumulate);
template <typename T>
using PackFn = void (*)(int64_t m, int64_t k, MatrixView<T> a, T* dst);
// B given as panels: for each group of panel_cols<T>() columns, a depth-major
// (k x panel_width) block, the groups one after another; panel_width is panel_cols but for
// a narrower last group (see panel_width<T>(), zero-padded to whole vectors). Producers that
// can write this layout directly (im2col) spare the GEMM its own packing pass.
template <typename T>
using GemmPanelsFn = void (*)(int64_t m, int64_t n, int64_t k, PackedA<T> a, const T* b_panels,
                              T* c, int64_t ldc, bool accumulate);
// C (+)= A * B with A either a strided view or, when packed_a is set, packed.
template <typename T>
using GemmShiftedFn = void (*)(int64_t m, int64_t n, int64_t k, MatrixView<T> a,
                               const PackedA<T>* packed_a, ShiftedRows<T> b, T* c, int64_t ldc,
                               bool accumulate);
template <typename T>
using GemmGatheredFn = void (*)(int64_t m, int64_t n, int64_t k, GatheredRows<T> a,
                                const T* b_panels, T* c, int64_t ldc, bool accumulate);
template <typename T>
using GemmLanesFn = void (*)(int64_t m, int64_t n, int64_t k, PackedA<T> a, LaneRuns<T> b, T* c,
                             int64_t ldc, bool accumulate);
template <typename T>
using GemmGatheredLanesFn = void (*)(int64_t m, int64_t n, int64_t k, GatheredRows<T> a,
                                     LaneRuns<T> b, T* c, int64_t ldc, bool accumulate);
template <typename T>
using GemmPackedFn = void (*)(int64_t m, int64_t n, int64_t k, PackedA<T> a, MatrixView<T> b,
                              T* c, int64_t ldc, bool accumulate);

// C[m x n] (+)= sum over `count` items of A_item * B_item^T with A row-major (rows
// a.row_stride apart, contiguous along the depth k) and row j of B at b.base + b.offsets[j];
// item t's operands lie t * a_stride and t * b_stride values further on. Both operands run
// along the depth, so they are read in place without packing.
struct DotBatch {
  int64_t count = 1;
  int64_t a_stride = 0;
  int64_t b_stride = 0;
};
template <typename T>
using GemmDotFn = void (*)(int64_t m, int64_t n, int64_t k, MatrixView<T> a, ShiftedRows<T> b,
                           T* c, int64_t ldc, bool accumulate, DotBatch batch);

// C[m x [j0, j1)] = A * B with A's m <= kStreamedMaxRows rows contiguous (k values each):
// for products bound by reading B, which is read in place once (B needs a unit stride).
constexpr int64_t kStreamedMaxRows = 4;
template <typename T>
using GemmStreamedFn = void (*)(int64_t m, int64_t j0, int64_t j1, int64_t k, const T* a,
                                MatrixView<T> b, T* c, int64_t ldc);

// One entry point's float32 and float64 builds (picked by of_dtype<T>).
template <template <typename> class Fn>
struct PerDtype {
  Fn<float> f32;
  Fn<double> f64;
};

struct GemmKernels {
  GemmFn<float> f32;
  GemmFn<double> f64;
  PackFn<float> pack_f32;
  PackFn<double> pack_f64;
  GemmPackedFn<float> packed_f32;
  GemmPackedFn<double> packed_f64;
  GemmPanelsFn<float> panels_f32;
  GemmPanelsFn<double> panels_f64;
  GemmShiftedFn<float> shifted_f32;
  GemmShiftedFn<double> shifted_f64;
  GemmDotFn<float> dot_f32;
  GemmDotFn<double> dot_f64;
  GemmStreamedFn<float> streamed_f32;
  GemmStreamedFn<double> streamed_f64;
  PerDtype<GemmGatheredFn> gathered;
  PerDtype<GemmLanesFn> lanes;
  PerDtype<GemmGatheredLanesFn> gathered_lanes;
  int64_t panel_rows;      // rows of C per register tile, the unit of PackedA's panels
  int64_t panel_cols_f32;  // columns of C per register tile, the unit of B panels
  int64_t panel_cols_f64;
  // The same for products of GatheredRows and B panels, whose register tiles are wider.
  int64_t gathered_panel_cols_f32;
  int64_t gathered_panel_cols_f64;
  int64_t lanes_f32_count;  // values per vector register (LaneRuns' W)
  int64_t lanes_f64_count;
};

// The kernels of the instruction set cpu_isa() chose (simd/gemm.inl), picked once.
const GemmKernels& gemm_kernels();

inline int64_t round_up_rows(int64_t m) {
  const int64_t rows = gemm_kernels().panel_rows;
  return (m + rows - 1) / rows * rows;
}

template <typename T>
int64_t panel_cols() {
  return sizeof(T) == sizeof(float) ? gemm_kernels().panel_cols_f32
                                    : gemm_kernels().panel_cols_f64;
}

template <typename T>
int64_t gathered_panel_cols() {
  return sizeof(T) == sizeof(float) ? gemm_kernels().gathered_panel_cols_f32
                                    : gemm_kernels().gathered_panel_cols_f64;
}

template <typename T>
int64_t vector_lanes() {
  return sizeof(T) == sizeof(float) ? gemm_kernels().lanes_f32_count
                                    : gemm_kernels().lanes_f64_count;
}

// Columns one B panel holds for `cols` <= nr columns (GemmPanelsFn layout): nr, or for a
// narrower last panel its columns rounded up to whole vectors of `lanes`, so that the
// micro-kernel reads it as densely as a full one.
constexpr int64_t panel_width(int64_t cols, int64_t nr, int64_t lanes) {
  return std::min(nr, (cols + lanes - 1) / lanes * lanes);
}
template <typename T>
int64_t panel_width(int64_t cols) {
  return panel_width(cols, panel_cols<T>(), vector_lanes<T>());
}

inline void gemm(int64_t m, int64_t n, int64_t k, MatrixView<float> a, MatrixView<float> b,
                 float* c, int64_t ldc, bool accumulate) {
  gemm_kernels().f32(m, n, k, a, b, c, ldc, accumulate);
}
inline void gemm(int64_t m, int64_t n, int64_t k, MatrixView<double> a, MatrixView<double> b,
                 double* c, int64_t ldc, bool accumulate) {
  gemm_kernels().f64(m, n, k, a, b, c, ldc, accumulate);
}

// Packs A (m x k) into `dst`, which holds round_up_rows(m) * k values.
inline void pack_a(int64_t m, int64_t k, MatrixView<float> a, float* dst) {
  gemm_kernels().pack_f32(m, k, a, dst);
}
inline void pack_a(int64_t m, int64_t k, MatrixView<double> a, double* dst) {
  gemm_kernels().pack_f64(m, k, a, dst);
}

// C[m x n] (+)= packed A times B.
inline void gemm(int64_t m, int64_t n, int64_t k, PackedA<float> a, MatrixView<float> b,
                 float* c, int64_t ldc, bool accumulate) {
  gemm_kernels().packed_f32(m, n, k, a, b, c, ldc, accumulate);
}
inline void gemm(int64_t m, int64_t n, int64_t k, PackedA<double> a, MatrixView<double> b,
                 double* c, int64_t ldc, bool accumulate) {
  gemm_kernels().packed_f64(m, n, k, a, b, c, ldc, accumulate);
}

// C[m x n] (+)= packed A times B given as panels (see GemmPanelsFn).
inline void gemm(int64_t m, int64_t n, int64_t k, PackedA<float> a, const float* b_panels,
                 float* c, int64_t ldc, bool accumulate) {
  gemm_kernels().panels_f32(m, n, k, a, b_panels, c, ldc, accumulate);
}
inline void gemm(int64_t m, int64_t n, int64_t k, PackedA<double> a, const double* b_panels,
                 double* c, int64_t ldc, bool accumulate) {
  gemm_kernels().panels_f64(m, n, k, a, b_panels, c, ldc, accumulate);
}

// C[m x n] (+)= A read through offset tables times B given as panels (see GemmPanelsFn).
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, GatheredRows<T> a, const T* b_panels, T* c,
          int64_t ldc, bool accumulate) {
  of_dtype<T>(gemm_kernels().gathered)(m, n, k, a, b_panels, c, ldc, accumulate);
}

// C[m x n] (+)= packed A times B read as lane runs (see LaneRuns).
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, PackedA<T> a, LaneRuns<T> b, T* c, int64_t ldc,
          bool accumulate) {
  of_dtype<T>(gemm_kernels().lanes)(m, n, k, a, b, c, ldc, accumulate);
}

// C[m x n] (+)= A read through offset tables times B read as lane runs.
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, GatheredRows<T> a, LaneRuns<T> b, T* c,
          int64_t ldc, bool accumulate) {
  of_dtype<T>(gemm_kernels().gathered_lanes)(m, n, k, a, b, c, ldc, accumulate);
}

// C[m x n] (+)= A times shifted-window B (see ShiftedRows).
inline void gemm(int64_t m, int64_t n, int64_t k, MatrixView<float> a,
                 const PackedA<float>* packed_a, ShiftedRows<float> b, float* c, int64_t ldc,
                 bool accumulate) {
  gemm_kernels().shifted_f32(m, n, k, a, packed_a, b, c, ldc, accumulate);
}
inline void gemm(int64_t m, int64_t n, int64_t k, MatrixView<double> a,
                 const PackedA<double>* packed_a, ShiftedRows<double> b, double* c, int64_t ldc,
                 bool accumulate) {
  gemm_kernels().shifted_f64(m, n, k, a, packed_a, b, c, ldc, accumulate);
}

// C[m x n] (+)= sum over the batch of A * B^T, both read along the depth (see GemmDotFn).
inline void gemm_streamed(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a,
                          MatrixView<float> b, float* c, int64_t ldc) {
  gemm_kernels().streamed_f32(m, j0, j1, k, a, b, c, ldc);
}
inline void gemm_streamed(int64_t m, int64_t j0, int64_t j1, int64_t k, const double* a,
                          MatrixView<double> b, double* c, int64_t ldc) {
  gemm_kernels().streamed_f64(m, j0, j1, k, a, b, c, ldc);
}

inline void gemm_dot(int64_t m, int64_t n, int64_t k, MatrixView<float> a, ShiftedRows<float> b,
                     float* c, int64_t ldc, bool accumulate, DotBatch batch) {
  gemm_kernels().dot_f32(m, n, k, a, b, c, ldc, accumulate, batch);
}
inline void gemm_dot(int64_t m, int64_t n, int64_t k, MatrixView<double> a,
                     ShiftedRows<double> b, double* c, int64_t ldc, bool accumulate,
                     DotBatch batch) {
  gemm_kernels().dot_f64(m, n, k, a, b, c, ldc, accumulate, batch);
}


}  // namespace fastconv

// Each build of simd/gemm.inl: its kernels and register-tile sizes.
FC_DECLARE_PER_ISA(const GemmKernels& gemm_table())
