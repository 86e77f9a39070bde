// Direct convolution (no column matrix) for layers whose GEMM would be a sliver: grouped
// convolutions with few channels per group (depthwise, with or without a channel
// multiplier) and dense convolutions over very few input channels (LeNet C1, 1-D signals).
// conv.cpp asks the *_applies() functions first and falls back to im2col + GEMM otherwise.
#pragma once

#include <cstdint>
#include <vector>

#include "fastconv/cpu_features.hpp"
#include "fastconv/geometry.hpp"

namespace fastconv {

// True when the direct kernels beat im2col + GEMM for this layer (rule and measurements in
// conv_direct.cpp).
bool conv_direct_applies(const WindowGeom& win, int64_t out_channels, int64_t groups);

// y (N, K, *out) = x (N, C, *in) cross-correlated with w (K, C/groups, *kernel), + bias (K,)
// when bias is not null. Multithreaded; every output is summed in one fixed order
// (bias, then input channel, then kernel taps in row-major order), so the result does not
// depend on the thread count.
template <typename T>
void conv_direct_forward(const WindowGeom& win, int64_t out_channels, int64_t groups, const T* x,
                         const T* w, const T* bias, T* y);

// conv_backward_input through the direct kernels: for unit strides, where the gradient is
// itself a direct-friendly convolution of dy.
bool conv_direct_backward_input_applies(const WindowGeom& win, int64_t out_channels,
                                         int64_t groups);

// dx (N, C, *in) = gradient of conv_direct_forward's y with respect to x, given dy (N, K, *out).
template <typename T>
void conv_direct_backward_input(const WindowGeom& win, int64_t out_channels, int64_t groups,
                                const T* dy, const T* w, T* dx);

// conv_backward_weight through the direct kernels (same rule as the forward pass).
bool conv_direct_backward_weight_applies(const WindowGeom& win, int64_t out_channels,
                                          int64_t groups);

// dw (K, C/groups, *kernel) = gradient of conv_direct_forward's y with respect to w, given
// x and dy. Each job sums its images into its own partial dw and the partials are added in
// job order, so the result is fixed for a given thread count.
template <typename T>
void conv_direct_backward_weight(const WindowGeom& win, int64_t out_channels, int64_t groups,
                                 const T* x, const T* dy, T* dw);

// How one call is cut into jobs, and where each job finds its inputs. A job owns
// images_per_job images (1 in the forward pass), one group g and a block of the first
// output dim; it copies the input rows it reads into a scratch buffer laid out so that every
// tap of the innermost dim reads unit-stride, zero-padded memory, then sweeps its output rows
// with the accumulators in registers.
struct DirectConvPlan {
  const WindowGeom* win;
  int64_t out_channels;  // K
  int64_t groups;        // G
  int64_t group_in;      // Cg
  int64_t group_out;     // Kg
  int64_t block_rows;    // outputs of dim 0 per job
  int64_t blocks;        // jobs per (images, group)
  int64_t images_per_job;
  // Innermost dim of the scratch: the padded input row, split by stride into `phases`
  // rows of `phase_len`, so that phase p, index i holds padded position (j0 + i)*stride + p
  // for the job's first output j0. Tap b of the innermost dim then starts at
  // tap_offset[b] = phase * phase_len + shift, with phase = (b*dilation) % stride and
  // shift = (b*dilation) / stride.
  int64_t phases;
  int64_t phase_len;
  std::vector<int64_t> tap_offset;
  int64_t scratch_elems;  // per job
  // Each output plane reads one input plane (C/groups == 1) through a square kernel of at
  // most kMaxPlaneKernel taps a side, with unit strides and dilations, in 2-D: the jobs then
  // read the input in place (masked vector loads at the borders, no scratch) with the
  // kernel's weights held in registers.
  bool plane_kernel;
};

constexpr int64_t kMaxPlaneKernel = 7;

}  // namespace fastconv

// Jobs [first, last) of the plan, single-threaded; `scratch` holds plan.scratch_elems values.
// The weight gradient writes job j's partial sum (K/groups x C/groups x prod(kernel)) at
// partial + j * that size.
FC_DECLARE_PER_ISA(void direct_forward_f32(const DirectConvPlan&, int64_t first, int64_t last,
                                           const float* x, const float* w, const float* bias,
                                           float* y, float* scratch))
FC_DECLARE_PER_ISA(void direct_forward_f64(const DirectConvPlan&, int64_t first, int64_t last,
                                           const double* x, const double* w,
                                           const double* bias, double* y, double* scratch))
FC_DECLARE_PER_ISA(void direct_weight_grad_f32(const DirectConvPlan&, int64_t first,
                                               int64_t last, const float* x, const float* dy,
                                               float* partial, float* scratch))
FC_DECLARE_PER_ISA(void direct_weight_grad_f64(const DirectConvPlan&, int64_t first,
                                               int64_t last, const double* x, const double* dy,
                                               double* partial, double* scratch))
