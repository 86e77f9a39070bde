// im2col / col2im kernels for the CUDA backend (device code plus launch plans; no pybind11,
// no CUDA runtime calls, so cuda/emu/ can run them on the host).
//
// Layout (as the CPU kernels and torch unfold): x (N, C, *in), cols (N, C*kvol, L) with row
// c*kvol + tap (tap in row-major kernel order) and column l (row-major output position).
//   im2col: one thread per cols element, a grid-stride loop over N*C*kvol*L with 64-bit
//           indices; the element decodes (n, c, tap, l) and copies one input value or 0.
//   col2im: a gather, one thread per image element (n, c, ipos): it sums, over taps in
//           row-major order, the column entries whose window reaches ipos, i.e. the taps
//           with (i_d + pad_d - tap_d*dil_d) divisible by stride_d and the quotient inside
//           the output. No atomics; each element is written once, summed in the CPU
//           kernel's order (tap by tap), so results match it bit for bit.
#pragma once

#include <cstdint>

#include "fastconv_cuda/conv_params.cuh"

namespace fastconv::cuda {

template <typename T>
__global__ void __launch_bounds__(kThreads)
im2col_kernel(const T* __restrict__ x, T* __restrict__ cols, const ConvParams p) {
  const int64_t total = p.N * p.R * p.out_plane;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t l = e % p.out_plane;
    const int64_t row = e / p.out_plane % p.R, n = e / (p.out_plane * p.R);
    const int64_t c = row / p.kvol;
    int64_t tap = row % p.kvol;
    bool ok = true;
    int64_t off = 0;
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      if (d < p.dims) {
        // Input coordinate o*stride - pad + tap*dil along d; unsigned compare tests both ends.
        const int64_t i = l % p.out[d] * p.stride[d] - p.pad_before[d] + tap % p.kernel[d] * p.dilation[d];
        l /= p.out[d];
        tap /= p.kernel[d];
        ok = ok && uint64_t(i) < uint64_t(p.in[d]);
        off += i * p.in_pitch[d];
      }
    }
    cols[e] = ok ? x[(n * p.C + c) * p.in_plane + off] : T(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
col2im_kernel(const T* __restrict__ cols, T* __restrict__ x, const ConvParams p) {
  const int64_t total = p.N * p.C * p.in_plane;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t ipos = e % p.in_plane;
    const int64_t nc = e / p.in_plane;  // n * C + c: cols rows of this channel start at nc * kvol
    int64_t q[kMaxDims], tap[kMaxDims];
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      q[d] = 0;
      tap[d] = 0;
      if (d < p.dims) {
        q[d] = ipos % p.in[d] + p.pad_before[d];  // coordinate in the padded input
        ipos /= p.in[d];
      }
    }
    const T* src = cols + nc * p.kvol * p.out_plane;
    T acc = T(0);
    for (int64_t t = 0; t < p.kvol; ++t) {
      bool ok = true;
      int64_t l = 0;
#pragma unroll
      for (int d = 0; d < kMaxDims; ++d) {
        if (d < p.dims) {
          const int64_t s = p.stride[d];
          const int64_t v = q[d] - tap[d] * p.dilation[d];
          const int64_t o = s == 1 ? v : v / s;
          ok = ok && v >= 0 && o * s == v && o < p.out[d];
          l += o * p.out_pitch[d];
        }
      }
      if (ok) acc += src[t * p.out_plane + l];
      // Next tap in row-major order (last dim fastest).
      bool carry = true;
#pragma unroll
      for (int d = kMaxDims - 1; d >= 0; --d) {
        if (d < p.dims && carry) {
          if (++tap[d] < p.kernel[d]) {
            carry = false;
          } else {
            tap[d] = 0;
          }
        }
      }
    }
    x[e] = acc;
  }
}

template <typename T, class Launch>
void im2col_run(const ConvParams& p, const T* x, T* cols, Launch&& launch) {
  launch(&im2col_kernel<T>, blocks_for(p.N * p.R * p.out_plane), x, cols, p);
}

template <typename T, class Launch>
void col2im_run(const ConvParams& p, const T* cols, T* x, Launch&& launch) {
  launch(&col2im_kernel<T>, blocks_for(p.N * p.C * p.in_plane), cols, x, p);
}

}  // namespace fastconv::cuda
