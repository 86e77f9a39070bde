// What pool.cpp and the instruction-set builds of its row kernels (simd/pool_rows.inl)
// share: the tabulated geometry of one call (PoolPlan, AvgPlan) and the table of row
// kernels each build exports.
#pragma once

#include <cstdint>
#include <vector>

#include "fastconv/cpu_features.hpp"
#include "fastconv/geometry.hpp"

namespace fastconv {

using Dims = std::vector<int64_t>;

// Per spatial dim, for every output coordinate o (window start o*stride - pad_before):
// the input cells [lo, hi) it covers, and how many cells it covers inside the padded
// extent [-pad_before, n + pad_after) (the count_include_pad divisor).
struct OutTable {
  Dims lo, hi, padded;
};

// Per spatial dim, for every input coordinate i: the outputs [first, last) whose window
// covers it. Used by the gather form of the average-pool adjoint.
struct InTable {
  Dims first, last;
};

struct PoolPlan {
  WindowGeom g;
  std::vector<OutTable> out_tab;
  int64_t in_plane = 0, out_plane = 0;
  int64_t in_last = 0, out_last = 0;  // extents of the last spatial dim
  Dims in_pitch, out_pitch;           // element step of each spatial dim within a plane
  // Per last-dim tap that can reach the input (in tap order): the outputs [tap_lo, tap_hi)
  // for which that tap is an input cell, and the input coordinate of output 0 under it
  // (o * stride + tap_shift).
  Dims tap_lo, tap_hi, tap_shift;

  int64_t lead_dims() const { return g.dims() - 1; }
  int64_t taps() const { return static_cast<int64_t>(tap_shift.size()); }
  int64_t planes() const { return g.batch * g.channels; }
};

// Inputs of the average-pool kernels beyond the pool plan: the count divisors.
struct AvgPlan {
  const PoolPlan* pool;
  std::vector<InTable> in_tab;     // per dim: the outputs covering each input coordinate
  std::vector<double> last_count;  // divisor share of the last dim, per output coordinate
  bool count_include_pad;
};

// Row kernels: fn(plan, src, dst, [indices,] begin, end) computes rows [begin, end) of one
// call (single-threaded; the caller splits the rows over threads).
template <typename T>
using MaxRowsFn = void (*)(const PoolPlan*, const T*, T*, int64_t*, int64_t, int64_t);
template <typename T>
using AvgRowsFn = void (*)(const AvgPlan*, const T*, T*, int64_t, int64_t);

// The kernels of one dtype, indexed by the last dim's stride: [0] any, [1] one, [2] two
// (strides 1 and 2 have vector paths).
template <typename T>
struct PoolRowKernels {
  MaxRowsFn<T> max[3];                // values only
  MaxRowsFn<T> max_indices[3];        // and int64 winner positions
  MaxRowsFn<T> max_indices_narrow[3];  // planes below 2^31 cells: 32-bit positions inside
  AvgRowsFn<T> avg[3];
  AvgRowsFn<T> avg_backward[3];       // the adjoint, per input row
};

struct PoolRows {
  PoolRowKernels<float> f32;
  PoolRowKernels<double> f64;
};

}  // namespace fastconv

FC_DECLARE_PER_ISA(const PoolRows& pool_rows())
