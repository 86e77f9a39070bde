// The geometry every conv/im2col kernel receives by value: per-dim vectors in fixed-capacity
// arrays (at most kMaxDims spatial dims; the bindings reject more with ValueError).
#pragma once

#include <cstdint>

#include "fastconv/check.hpp"
#include "fastconv/geometry.hpp"

namespace fastconv::cuda {

constexpr int kMaxDims = 8;       // spatial dims supported (fixed-capacity arrays below)
constexpr int kThreads = 256;     // every kernel here runs 256-thread blocks

// The whole geometry, passed to every kernel by value. Entries past `dims` are unused.
struct ConvParams {
  int dims;
  int64_t N, C, K, G, Cg, Kg;
  int64_t R;     // Cg * kvol: the forward reduction length
  int64_t kvol;  // prod(kernel)
  int64_t L;     // prod(out): output positions per image
  int64_t P;     // prod(in): input positions per image
  int64_t in[kMaxDims], out[kMaxDims], kernel[kMaxDims];
  int64_t stride[kMaxDims], pad[kMaxDims], dil[kMaxDims];
  int64_t in_str[kMaxDims];   // step of dim d within an input plane: prod(in[d+1:])
  int64_t out_str[kMaxDims];  // likewise within an output plane
};

// Blocks for a grid-stride loop over n items.
inline unsigned blocks_for(int64_t n, int64_t per_block = kThreads) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (int64_t(1) << 20) ? (int64_t(1) << 20) : b));
}

// The window part of the geometry (validated by make_window_geom); the channel fields are
// those of an ungrouped op with K = C (im2col's view), which conv callers overwrite.
inline ConvParams window_params(const char* op, const WindowGeom& w) {
  const int64_t dims = static_cast<int64_t>(w.in.size());
  FC_CHECK(dims <= kMaxDims, op, ": the CUDA backend supports at most ", kMaxDims,
           " spatial dims, got ", dims, " (spatial size ", tuple_str(w.in), ")");
  ConvParams p{};
  p.dims = static_cast<int>(dims);
  p.N = w.batch;
  p.C = p.K = p.Cg = p.Kg = w.channels;
  p.G = 1;
  // Products below are bounded by the element counts make_window_geom checked.
  int64_t in_step = 1, out_step = 1, kvol = 1;
  for (int d = p.dims - 1; d >= 0; --d) {
    p.in[d] = w.in[d];
    p.out[d] = w.out[d];
    p.kernel[d] = w.kernel[d];
    p.stride[d] = w.stride[d];
    p.pad[d] = w.pad_before[d];
    p.dil[d] = w.dilation[d];
    p.in_str[d] = in_step;
    p.out_str[d] = out_step;
    in_step *= w.in[d];
    out_step *= w.out[d];
    kvol *= w.kernel[d];
  }
  p.P = in_step;
  p.L = out_step;
  p.kvol = kvol;
  p.R = w.channels * kvol;
  return p;
}

}  // namespace fastconv::cuda
