// The geometry every conv/im2col kernel receives by value: the window (window.cuh) plus the
// channel groups of a convolution.
#pragma once

#include <cstdint>

#include "fastconv/check.hpp"
#include "fastconv/geometry.hpp"
#include "fastconv_cuda/grid.cuh"
#include "fastconv_cuda/window.cuh"

namespace fastconv::cuda {

// im2col's view is an ungrouped op with K = C; conv callers set the channel fields.
struct ConvParams : DeviceWindow {
  int64_t K;       // output channels
  int64_t G;       // groups
  int64_t Cg, Kg;  // channels per group, in and out
  int64_t R;       // Cg * kvol: the forward reduction length
};

inline ConvParams window_params(const char* op, const WindowGeom& w) {
  ConvParams p{};
  static_cast<DeviceWindow&>(p) = device_window(op, w);
  p.K = p.Cg = p.Kg = w.channels;
  p.G = 1;
  p.R = w.channels * p.kvol;
  return p;
}

}  // namespace fastconv::cuda
