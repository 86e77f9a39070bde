// The one device geometry struct: a validated sliding window (cpp geometry.hpp's
// WindowGeom) in fixed-capacity arrays, passed to every window kernel (conv, im2col,
// pooling, RoI) by value, so kernels need no device-side tables for it. No pybind11 and no
// CUDA runtime calls: cuda/emu/ compiles it as plain C++.
#pragma once

#include <algorithm>
#include <cstdint>

#include "fastconv/check.hpp"
#include "fastconv/geometry.hpp"

namespace fastconv::cuda {

constexpr int kMaxDims = 8;  // spatial dims supported (fixed-capacity arrays below)

// Entries past `dims` are unused. Pitches are element steps of dim d within one (n, c)
// plane: prod(in[d+1:]) and prod(out[d+1:]).
struct DeviceWindow {
  int dims;
  int64_t N, C;       // batch and (input) channels
  int64_t planes;     // N * C
  int64_t in_plane;   // prod(in): cells of one input plane
  int64_t out_plane;  // prod(out): positions of one output plane (the L of im2col)
  int64_t kvol;       // prod(kernel)
  int64_t in[kMaxDims], out[kMaxDims], kernel[kMaxDims], stride[kMaxDims];
  int64_t pad_before[kMaxDims], pad_after[kMaxDims], dilation[kMaxDims];
  int64_t in_pitch[kMaxDims], out_pitch[kMaxDims];
};

// `w` (already validated by make_window_geom, so its products fit int64) in the kernels'
// form; more than kMaxDims spatial dims raise ValueError naming `op`.
inline DeviceWindow device_window(const char* op, const WindowGeom& w) {
  const int64_t dims = w.dims();
  FC_CHECK(dims <= kMaxDims, op, ": the CUDA backend supports at most ", kMaxDims,
           " spatial dims, got ", dims, " (spatial size ", tuple_str(w.in), ")");
  DeviceWindow p{};
  p.dims = static_cast<int>(dims);
  p.N = w.batch;
  p.C = w.channels;
  p.planes = checked_mul(w.batch, w.channels, "number of planes");
  // Element counts of the whole tensors must fit int64 too (flat thread indices).
  checked_mul(p.planes, std::max(w.in_plane(), w.out_plane()), "element count");
  int64_t in_step = 1, out_step = 1, kvol = 1;
  for (int d = p.dims - 1; d >= 0; --d) {
    p.in[d] = w.in[d];
    p.out[d] = w.out[d];
    p.kernel[d] = w.kernel[d];
    p.stride[d] = w.stride[d];
    p.pad_before[d] = w.pad_before[d];
    p.pad_after[d] = w.pad_after[d];
    p.dilation[d] = w.dilation[d];
    p.in_pitch[d] = in_step;
    p.out_pitch[d] = out_step;
    in_step *= w.in[d];
    out_step *= w.out[d];
    kvol *= w.kernel[d];
  }
  p.in_plane = in_step;
  p.out_plane = out_step;
  p.kvol = kvol;
  return p;
}

}  // namespace fastconv::cuda
