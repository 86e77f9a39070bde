// Convolution kernels for the CUDA backend (device code plus the host-side launch plans).
//
// This header holds no pybind11 and no CUDA runtime calls: kernels are launched through a
// caller-supplied `launch(kernel, grid, args...)` (256 threads per block, the caller's
// stream) and temporary memory comes from a caller-supplied workspace (`ws.get<T>(count)`).
// conv.cu binds it to CuPy; cuda/emu/ compiles the same code as plain C++ (one host thread
// per CUDA thread, a barrier for __syncthreads, AddressSanitizer for bounds) so the index
// arithmetic is exercised without a GPU.
//
// Layout: x (N, C, *in), w (K, Cg, *kernel), y (N, K, *out), all C-contiguous. Per group g
// (Cg = C/G input and Kg = K/G output channels) the convolution is a GEMM whose column
// matrix is never materialized:
//   forward          y[n, g*Kg+m, pos] = sum_r  W[g*Kg+m, r] * X_col[r, (n, pos)]
//                    r = (c, tap) over R = Cg*prod(kernel); X_col gathered on the fly.
//   backward input   dx[n, g*Cg+c, ipos] = sum_r' W[g*Kg+k, c, tap] * dy[n, g*Kg+k, opos]
//                    r' = (k, tap) over Kg*prod(kernel); only taps with
//                    (ipos + pad - tap*dil) divisible by the stride contribute (a gather:
//                    every dx element is written once, no atomics).
//   backward weight  dW[g*Kg+m, r] = sum_(n,pos) dy[n, g*Kg+m, pos] * X_col[r, (n, pos)]
//                    the (n, pos) reduction is split across blocks (split-K) into partial
//                    buffers summed in slice order by a second kernel: deterministic.
// Forward and input-gradient elements are one FMA chain over the reduction index in
// increasing order in every kernel family (a padding tap adds an exact +0 in the GEMMs and
// is skipped by the direct kernels), so GEMM and direct results are bit-identical. Weight-
// gradient sums use a fixed split (GEMM) or tree (direct) order. Nothing uses atomics, so
// every result is identical run to run.
//
// GEMM kernels: 256 threads, a BM x BN output tile per block, the reduction walked in chunks
// of kChunk. Each chunk's A (weights or dy) and B (gathered input) tiles are read from
// global memory into registers while the previous chunk is multiplied out of shared memory
// (double buffering, one __syncthreads per chunk). Thread (tx, ty) of the 16 x 16 thread
// grid owns rows ty + i*16 and columns tx + j*16 of the tile (i < TM, j < TN): the strided
// ownership keeps shared-memory reads conflict-free and the epilogue's stores coalesced.
// Tiles are walked by a block-stride loop over a 1-D grid, so any tile count is covered.
// Tile shapes (choose_tile): 128x128 (8x8 per thread) and 64x128 (4x8) for float32 layers
// large enough to fill the device, 64x64 (4x4) for float64 and small layers.
//
// Per-row facts of the reduction index (channel offset, tap offset per dim) come from a
// small table built by build_row_tables, so the gathers do not decode the reduction index
// (the input gradient still divides by the stride when it is not 1); the per-column facts
// (image, window start) are decoded once per tile (forward, backward input) or stepped
// incrementally (backward weight, whose columns are the reduction).
//
// Direct kernels (one thread per output element, or one block per weight-gradient
// element) handle depthwise and other thin groups, where a 64-row tile would be mostly
// idle. They use the same tables and the same summation order as the GEMMs.
#pragma once

#include <cstdint>

#include "fastconv_cuda/conv_params.cuh"

namespace fastconv::cuda {

constexpr int kChunk = 8;         // reduction indices per shared-memory stage
constexpr int kSmemPad = 4;       // row padding of the shared tiles (bank-conflict-free stores)

template <typename T>
__device__ __forceinline__ T fmadd(T a, T b, T c) {
  // A fused multiply-add rounds once, like the contracted FMA of the CPU kernels.
  if constexpr (sizeof(T) == 4) {
    return fmaf(a, b, c);
  } else {
    return fma(a, b, c);
  }
}

// ---- tables ------------------------------------------------------------------------------

// Row tables for `rows` reduction indices r = (outer, tap), tap in row-major kernel order.
//   tapoff[d * rows + r] = tap_d * dil_d (the tap's reach along dim d), and
//   forward/backward weight (bwd_input false), outer = input channel c:
//     off0[r] = c*in_plane + sum_d tap_d*dil_d*in_pitch_d   (offset from the window start)
//   backward input (bwd_input true), outer = output channel k of the group:
//     off0[r] = k*R + tap                           (offset into W_g for channel c = 0)
//     off1[r] = k*L                                 (offset into dy[n, g*Kg])
__global__ void __launch_bounds__(kThreads)
build_row_tables(const ConvParams p, int64_t rows, bool bwd_input, int64_t* off0, int64_t* off1,
                 int64_t* tapoff) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t outer = r / p.kvol;
    int64_t tap = r % p.kvol;
    int64_t spatial = 0;
    for (int d = p.dims - 1; d >= 0; --d) {
      const int64_t reach = (tap % p.kernel[d]) * p.dilation[d];
      tap /= p.kernel[d];
      tapoff[d * rows + r] = reach;
      spatial += reach * p.in_pitch[d];
    }
    if (bwd_input) {
      off0[r] = outer * p.R + r % p.kvol;
      off1[r] = outer * p.out_plane;
    } else {
      off0[r] = outer * p.in_plane + spatial;
    }
  }
}

// ---- shared GEMM pieces --------------------------------------------------------------------

// acc[i][j] += sum over the chunk of A[kk][ty + i*TY] * B[kk][tx + j*TX], kk increasing.
template <typename T, int BM, int BN, int TM, int TN>
__device__ __forceinline__ void multiply_chunk(const T (*As)[BM + kSmemPad],
                                               const T (*Bs)[BN + kSmemPad], T (&acc)[TM][TN],
                                               int tx, int ty) {
  constexpr int TX = BN / TN, TY = BM / TM;
#pragma unroll
  for (int kk = 0; kk < kChunk; ++kk) {
    T a[TM], b[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
    for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = fmadd(a[i], b[j], acc[i][j]);
    }
  }
}

// Splits a flat tile index into (row tile, column tile, rest) with the row tile fastest.
__device__ __forceinline__ void split_tile(int64_t tile, int64_t tiles_m, int64_t tiles_n,
                                           int64_t& mt, int64_t& nt, int64_t& rest) {
  mt = tile % tiles_m;
  nt = tile / tiles_m % tiles_n;
  rest = tile / (tiles_m * tiles_n);
}

// ---- forward GEMM --------------------------------------------------------------------------

template <typename T, int BM, int BN, int TM, int TN>
__global__ void __launch_bounds__(kThreads)
conv_fwd_gemm(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
              T* __restrict__ y, const ConvParams p, const int64_t* __restrict__ roff,
              const int64_t* __restrict__ tapoff, int64_t tiles_m, int64_t tiles_n,
              int64_t tiles) {
  constexpr int TX = BN / TN, TY = BM / TM;
  static_assert(TX * TY == kThreads, "one thread per TM x TN sub-tile");
  // A tile (BM x kChunk of W): thread reads column ak of rows am + i*A_STEP (consecutive
  // threads read consecutive r: contiguous in W).
  constexpr int A_STEP = kThreads / kChunk, A_LOADS = BM / A_STEP;
  // B tile (kChunk x BN of X_col): thread owns column bj, rows bk + i*B_STEP (consecutive
  // threads gather consecutive output positions: mostly contiguous input).
  constexpr int B_STEP = kThreads / BN, B_LOADS = kChunk / B_STEP;
  static_assert(BM % A_STEP == 0 && kThreads % BN == 0 && kChunk % B_STEP == 0, "tile shape");
  __shared__ T As[2][kChunk][BM + kSmemPad];
  __shared__ T Bs[2][kChunk][BN + kSmemPad];

  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int ak = tid % kChunk, am = tid / kChunk;
  const int bj = tid % BN, bk = tid / BN;
  const int64_t J = p.N * p.out_plane;
  const int64_t chunks = (p.R + kChunk - 1) / kChunk;

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t mt, nt, g;
    split_tile(tile, tiles_m, tiles_n, mt, nt, g);
    const int64_t m0 = mt * BM, j0 = nt * BN;

    // This thread's gather column j = (n, pos): the window start per dim and the input
    // offset of the window origin. Offsets are summed modulo 2^64 (uint64) because a window
    // start in the padding makes a partial sum negative or, for extreme geometry, out of
    // int64 range; the sum is only used for in-bounds taps, where the true value fits.
    const int64_t j = j0 + bj;
    const bool col_ok = j < J;
    int64_t start[kMaxDims];
    uint64_t col_base;
    {
      const int64_t n = col_ok ? j / p.out_plane : 0;
      int64_t pos = col_ok ? j % p.out_plane : 0;
      col_base = uint64_t((n * p.C + g * p.Cg) * p.in_plane);
#pragma unroll
      for (int d = kMaxDims - 1; d >= 0; --d) {
        start[d] = 0;
        if (d < p.dims) {
          const int64_t o = pos % p.out[d];
          pos /= p.out[d];
          start[d] = o * p.stride[d] - p.pad_before[d];
          col_base += uint64_t(start[d]) * uint64_t(p.in_pitch[d]);
        }
      }
    }
    const T* wg = w + g * p.Kg * p.R;

    T areg[A_LOADS], breg[B_LOADS];
    auto load = [&](int64_t r0) {
      const int64_t ra = r0 + ak;
#pragma unroll
      for (int i = 0; i < A_LOADS; ++i) {
        const int64_t m = m0 + am + i * A_STEP;
        areg[i] = (m < p.Kg && ra < p.R) ? wg[m * p.R + ra] : T(0);
      }
#pragma unroll
      for (int i = 0; i < B_LOADS; ++i) {
        const int64_t r = r0 + bk + i * B_STEP;
        T v = T(0);
        if (col_ok && r < p.R) {
          bool ok = true;
#pragma unroll
          for (int d = 0; d < kMaxDims; ++d) {
            if (d < p.dims) {
              // Input coordinate along d; unsigned compare rejects both padding sides.
              const int64_t c = start[d] + tapoff[d * p.R + r];
              ok = ok && uint64_t(c) < uint64_t(p.in[d]);
            }
          }
          if (ok) v = x[int64_t(col_base + uint64_t(roff[r]))];
        }
        breg[i] = v;
      }
    };
    auto store = [&](int buf) {
#pragma unroll
      for (int i = 0; i < A_LOADS; ++i) As[buf][ak][am + i * A_STEP] = areg[i];
#pragma unroll
      for (int i = 0; i < B_LOADS; ++i) Bs[buf][bk + i * B_STEP][bj] = breg[i];
    };

    T acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
      for (int jj = 0; jj < TN; ++jj) acc[i][jj] = T(0);
    }
    __syncthreads();  // the previous tile's last reads of shared memory are done
    load(0);
    store(0);
    __syncthreads();
    for (int64_t kc = 0; kc < chunks; ++kc) {
      const int buf = int(kc & 1);
      if (kc + 1 < chunks) load((kc + 1) * kChunk);
      multiply_chunk<T, BM, BN, TM, TN>(As[buf], Bs[buf], acc, tx, ty);
      // The other buffer was last read in iteration kc-1, before that iteration's barrier.
      if (kc + 1 < chunks) store(buf ^ 1);
      __syncthreads();
    }

    // Epilogue: bias added after the sum, as the CPU kernel does.
#pragma unroll
    for (int jj = 0; jj < TN; ++jj) {
      const int64_t col = j0 + tx + jj * TX;
      if (col >= J) continue;
      const int64_t n = col / p.out_plane, pos = col % p.out_plane;
      T* yn = y + (n * p.K + g * p.Kg) * p.out_plane + pos;
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const int64_t m = m0 + ty + i * TY;
        if (m < p.Kg) yn[m * p.out_plane] = bias ? acc[i][jj] + bias[g * p.Kg + m] : acc[i][jj];
      }
    }
  }
}

// ---- backward input GEMM -------------------------------------------------------------------

// Rows: input channel c of the group (M = Cg). Columns: (n, ipos) over N*P. Reduction:
// r' = (k, tap) over Rb = Kg*kvol, with woff/dyoff/tapoff from build_row_tables.
template <typename T, int BM, int BN, int TM, int TN>
__global__ void __launch_bounds__(kThreads)
conv_bwd_input_gemm(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,
                    const ConvParams p, const int64_t* __restrict__ woff,
                    const int64_t* __restrict__ dyoff, const int64_t* __restrict__ tapoff,
                    int64_t tiles_m, int64_t tiles_n, int64_t tiles) {
  constexpr int TX = BN / TN, TY = BM / TM;
  static_assert(TX * TY == kThreads, "one thread per TM x TN sub-tile");
  constexpr int A_STEP = kThreads / kChunk, A_LOADS = BM / A_STEP;
  constexpr int B_STEP = kThreads / BN, B_LOADS = kChunk / B_STEP;
  static_assert(BM % A_STEP == 0 && kThreads % BN == 0 && kChunk % B_STEP == 0, "tile shape");
  __shared__ T As[2][kChunk][BM + kSmemPad];
  __shared__ T Bs[2][kChunk][BN + kSmemPad];

  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int ak = tid % kChunk, am = tid / kChunk;
  const int bj = tid % BN, bk = tid / BN;
  const int64_t J = p.N * p.in_plane;
  const int64_t Rb = p.Kg * p.kvol;
  const int64_t chunks = (Rb + kChunk - 1) / kChunk;

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t mt, nt, g;
    split_tile(tile, tiles_m, tiles_n, mt, nt, g);
    const int64_t m0 = mt * BM, j0 = nt * BN;

    // Column j = (n, ipos): q_d = i_d + pad_d, the input coordinate in padded space. Tap t
    // reaches it from output o_d = (q_d - t_d*dil_d) / stride_d when that divides exactly.
    const int64_t j = j0 + bj;
    const bool col_ok = j < J;
    int64_t q[kMaxDims];
    int64_t dy_base;
    {
      const int64_t n = col_ok ? j / p.in_plane : 0;
      int64_t ipos = col_ok ? j % p.in_plane : 0;
      dy_base = (n * p.K + g * p.Kg) * p.out_plane;
#pragma unroll
      for (int d = kMaxDims - 1; d >= 0; --d) {
        q[d] = 0;
        if (d < p.dims) {
          q[d] = ipos % p.in[d] + p.pad_before[d];
          ipos /= p.in[d];
        }
      }
    }
    const T* wg = w + g * p.Kg * p.R;

    T areg[A_LOADS], breg[B_LOADS];
    auto load = [&](int64_t r0) {
      const int64_t ra = r0 + ak;
      const int64_t wa = ra < Rb ? woff[ra] : 0;
#pragma unroll
      for (int i = 0; i < A_LOADS; ++i) {
        const int64_t c = m0 + am + i * A_STEP;
        areg[i] = (c < p.Cg && ra < Rb) ? wg[wa + c * p.kvol] : T(0);
      }
#pragma unroll
      for (int i = 0; i < B_LOADS; ++i) {
        const int64_t r = r0 + bk + i * B_STEP;
        T v = T(0);
        if (col_ok && r < Rb) {
          bool ok = true;
          int64_t off = 0;
#pragma unroll
          for (int d = 0; d < kMaxDims; ++d) {
            if (d < p.dims) {
              const int64_t s = p.stride[d];
              const int64_t e = q[d] - tapoff[d * Rb + r];
              const int64_t o = s == 1 ? e : e / s;
              ok = ok && e >= 0 && o * s == e && o < p.out[d];
              off += o * p.out_pitch[d];
            }
          }
          if (ok) v = dy[dy_base + dyoff[r] + off];
        }
        breg[i] = v;
      }
    };
    auto store = [&](int buf) {
#pragma unroll
      for (int i = 0; i < A_LOADS; ++i) As[buf][ak][am + i * A_STEP] = areg[i];
#pragma unroll
      for (int i = 0; i < B_LOADS; ++i) Bs[buf][bk + i * B_STEP][bj] = breg[i];
    };

    T acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
      for (int jj = 0; jj < TN; ++jj) acc[i][jj] = T(0);
    }
    __syncthreads();
    load(0);
    store(0);
    __syncthreads();
    for (int64_t kc = 0; kc < chunks; ++kc) {
      const int buf = int(kc & 1);
      if (kc + 1 < chunks) load((kc + 1) * kChunk);
      multiply_chunk<T, BM, BN, TM, TN>(As[buf], Bs[buf], acc, tx, ty);
      if (kc + 1 < chunks) store(buf ^ 1);
      __syncthreads();
    }

#pragma unroll
    for (int jj = 0; jj < TN; ++jj) {
      const int64_t col = j0 + tx + jj * TX;
      if (col >= J) continue;
      const int64_t n = col / p.in_plane, ipos = col % p.in_plane;
      T* dxn = dx + (n * p.C + g * p.Cg) * p.in_plane + ipos;
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const int64_t c = m0 + ty + i * TY;
        if (c < p.Cg) dxn[c * p.in_plane] = acc[i][jj];
      }
    }
  }
}

// ---- backward weight GEMM (split-K) --------------------------------------------------------

// Adds `step` positions to (n, o): o is the row-major output coordinate, carried into n.
__device__ __forceinline__ void advance_position(const ConvParams& p, int64_t (&o)[kMaxDims],
                                                 int64_t& n, int64_t step) {
  int64_t carry = step;
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; --d) {
    if (d < p.dims) {
      o[d] += carry;
      carry = 0;
      while (o[d] >= p.out[d]) {  // step is kChunk, so this runs a few times at most
        o[d] -= p.out[d];
        ++carry;
      }
    }
  }
  n += carry;
}

// Rows: output channel m of the group (M = Kg). Columns: r over R. Reduction: positions
// j = (n, pos) in [split * per_split, min(J, (split+1) * per_split)). Result: the slice's
// dW written (not added) to out + split * K * R.
// Both tiles are indexed by the thread's reduction lane jj = tid % kChunk, so each thread
// follows one position (n, o) per chunk, stepped by kChunk without division.
template <typename T, int BM, int BN, int TM, int TN>
__global__ void __launch_bounds__(kThreads)
conv_bwd_weight_gemm(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ out,
                     const ConvParams p, const int64_t* __restrict__ roff,
                     const int64_t* __restrict__ tapoff, int64_t per_split, int64_t tiles_m,
                     int64_t tiles_n, int64_t tiles) {
  constexpr int TX = BN / TN, TY = BM / TM;
  static_assert(TX * TY == kThreads, "one thread per TM x TN sub-tile");
  constexpr int STEP = kThreads / kChunk;
  constexpr int A_LOADS = BM / STEP, B_LOADS = BN / STEP;
  static_assert(BM % STEP == 0 && BN % STEP == 0, "tile shape");
  __shared__ T As[2][kChunk][BM + kSmemPad];
  __shared__ T Bs[2][kChunk][BN + kSmemPad];

  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int lane = tid % kChunk, row = tid / kChunk;
  const int64_t J = p.N * p.out_plane;

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t mt, nt, rest;
    split_tile(tile, tiles_m, tiles_n, mt, nt, rest);
    const int64_t g = rest % p.G, split = rest / p.G;
    const int64_t m0 = mt * BM, c0 = nt * BN;
    const int64_t jb = split * per_split;
    const int64_t je = jb + per_split < J ? jb + per_split : J;
    const int64_t chunks = (je - jb + kChunk - 1) / kChunk;

    // This thread's reduction position j = jb + kc*kChunk + lane, as (n, o).
    int64_t j = jb + lane, n = 0;
    int64_t o[kMaxDims];
    {
      int64_t pos = j < je ? j % p.out_plane : 0;
      n = j < je ? j / p.out_plane : 0;
#pragma unroll
      for (int d = kMaxDims - 1; d >= 0; --d) {
        o[d] = 0;
        if (d < p.dims) {
          o[d] = pos % p.out[d];
          pos /= p.out[d];
        }
      }
    }

    T areg[A_LOADS], breg[B_LOADS];
    auto load = [&]() {
      const bool ok_j = j < je;
      int64_t pos = 0;
      uint64_t x_base = uint64_t((n * p.C + g * p.Cg) * p.in_plane);
      int64_t start[kMaxDims];
#pragma unroll
      for (int d = 0; d < kMaxDims; ++d) {
        start[d] = 0;
        if (d < p.dims) {
          pos += o[d] * p.out_pitch[d];
          start[d] = o[d] * p.stride[d] - p.pad_before[d];
          x_base += uint64_t(start[d]) * uint64_t(p.in_pitch[d]);  // modulo 2^64, as forward
        }
      }
      const T* dyj = dy + (n * p.K + g * p.Kg) * p.out_plane + pos;
#pragma unroll
      for (int i = 0; i < A_LOADS; ++i) {
        const int64_t m = m0 + row + i * STEP;
        areg[i] = (ok_j && m < p.Kg) ? dyj[m * p.out_plane] : T(0);
      }
#pragma unroll
      for (int i = 0; i < B_LOADS; ++i) {
        const int64_t r = c0 + row + i * STEP;
        T v = T(0);
        if (ok_j && r < p.R) {
          bool ok = true;
#pragma unroll
          for (int d = 0; d < kMaxDims; ++d) {
            if (d < p.dims) {
              const int64_t c = start[d] + tapoff[d * p.R + r];
              ok = ok && uint64_t(c) < uint64_t(p.in[d]);
            }
          }
          if (ok) v = x[int64_t(x_base + uint64_t(roff[r]))];
        }
        breg[i] = v;
      }
      if (ok_j) advance_position(p, o, n, kChunk);
      j += kChunk;
    };
    auto store = [&](int buf) {
#pragma unroll
      for (int i = 0; i < A_LOADS; ++i) As[buf][lane][row + i * STEP] = areg[i];
#pragma unroll
      for (int i = 0; i < B_LOADS; ++i) Bs[buf][lane][row + i * STEP] = breg[i];
    };

    T acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
      for (int jj = 0; jj < TN; ++jj) acc[i][jj] = T(0);
    }
    __syncthreads();
    if (chunks > 0) {
      load();
      store(0);
    }
    __syncthreads();
    for (int64_t kc = 0; kc < chunks; ++kc) {
      const int buf = int(kc & 1);
      if (kc + 1 < chunks) load();
      multiply_chunk<T, BM, BN, TM, TN>(As[buf], Bs[buf], acc, tx, ty);
      if (kc + 1 < chunks) store(buf ^ 1);
      __syncthreads();
    }

    T* dst = out + split * p.K * p.R + g * p.Kg * p.R;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t m = m0 + ty + i * TY;
      if (m >= p.Kg) continue;
#pragma unroll
      for (int jj = 0; jj < TN; ++jj) {
        const int64_t r = c0 + tx + jj * TX;
        if (r < p.R) dst[m * p.R + r] = acc[i][jj];
      }
    }
  }
}

// dw[i] = sum over slices s = 0, 1, ... of partial[s * count + i], in that order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
sum_splits(const T* __restrict__ partial, int64_t splits, int64_t count, T* __restrict__ dw) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    T sum = partial[i];
    for (int64_t s = 1; s < splits; ++s) sum += partial[s * count + i];
    dw[i] = sum;
  }
}

// ---- direct kernels (thin groups) ----------------------------------------------------------

// One thread per output element y[n, k, pos].
template <typename T>
__global__ void __launch_bounds__(kThreads)
conv_fwd_direct(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                T* __restrict__ y, const ConvParams p, const int64_t* __restrict__ roff,
                const int64_t* __restrict__ tapoff) {
  const int64_t total = p.N * p.K * p.out_plane;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t pos = e % p.out_plane;
    const int64_t k = e / p.out_plane % p.K, n = e / (p.out_plane * p.K), g = k / p.Kg;
    int64_t start[kMaxDims];
    uint64_t base = uint64_t((n * p.C + g * p.Cg) * p.in_plane);
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      start[d] = 0;
      if (d < p.dims) {
        start[d] = pos % p.out[d] * p.stride[d] - p.pad_before[d];
        pos /= p.out[d];
        base += uint64_t(start[d]) * uint64_t(p.in_pitch[d]);
      }
    }
    const T* wk = w + k * p.R;
    T acc = T(0);
    for (int64_t r = 0; r < p.R; ++r) {
      bool ok = true;
#pragma unroll
      for (int d = 0; d < kMaxDims; ++d) {
        if (d < p.dims) ok = ok && uint64_t(start[d] + tapoff[d * p.R + r]) < uint64_t(p.in[d]);
      }
      if (ok) acc = fmadd(wk[r], x[int64_t(base + uint64_t(roff[r]))], acc);
    }
    y[e] = bias ? acc + bias[k] : acc;
  }
}

// One thread per input-gradient element dx[n, c, ipos]; tables as conv_bwd_input_gemm.
template <typename T>
__global__ void __launch_bounds__(kThreads)
conv_bwd_input_direct(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,
                      const ConvParams p, const int64_t* __restrict__ woff,
                      const int64_t* __restrict__ dyoff, const int64_t* __restrict__ tapoff) {
  const int64_t total = p.N * p.C * p.in_plane;
  const int64_t Rb = p.Kg * p.kvol;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t ipos = e % p.in_plane;
    const int64_t ch = e / p.in_plane % p.C, n = e / (p.in_plane * p.C);
    const int64_t g = ch / p.Cg, c = ch % p.Cg;
    int64_t q[kMaxDims];
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      q[d] = 0;
      if (d < p.dims) {
        q[d] = ipos % p.in[d] + p.pad_before[d];
        ipos /= p.in[d];
      }
    }
    const T* wc = w + g * p.Kg * p.R + c * p.kvol;
    const T* dyg = dy + (n * p.K + g * p.Kg) * p.out_plane;
    T acc = T(0);
    for (int64_t r = 0; r < Rb; ++r) {
      bool ok = true;
      int64_t off = 0;
#pragma unroll
      for (int d = 0; d < kMaxDims; ++d) {
        if (d < p.dims) {
          const int64_t s = p.stride[d];
          const int64_t v = q[d] - tapoff[d * Rb + r];
          const int64_t o = s == 1 ? v : v / s;
          ok = ok && v >= 0 && o * s == v && o < p.out[d];
          off += o * p.out_pitch[d];
        }
      }
      if (ok) acc = fmadd(wc[woff[r]], dyg[dyoff[r] + off], acc);
    }
    dx[e] = acc;
  }
}

// One block per weight-gradient element dw[k, r]: the block's threads stride over the
// positions j = (n, pos), then add their partial sums in a fixed tree (deterministic).
template <typename T>
__global__ void __launch_bounds__(kThreads)
conv_bwd_weight_direct(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dw,
                       const ConvParams p, const int64_t* __restrict__ roff,
                       const int64_t* __restrict__ tapoff) {
  __shared__ T partial[kThreads];
  const int tid = threadIdx.x;
  const int64_t total = p.K * p.R, J = p.N * p.out_plane;
  for (int64_t e = blockIdx.x; e < total; e += gridDim.x) {
    const int64_t k = e / p.R, r = e % p.R, g = k / p.Kg;
    T acc = T(0);
    for (int64_t j = tid; j < J; j += kThreads) {
      const int64_t n = j / p.out_plane;
      int64_t pos = j % p.out_plane;
      const int64_t opos = pos;
      uint64_t base = uint64_t((n * p.C + g * p.Cg) * p.in_plane);
      bool ok = true;
#pragma unroll
      for (int d = kMaxDims - 1; d >= 0; --d) {
        if (d < p.dims) {
          const int64_t start = pos % p.out[d] * p.stride[d] - p.pad_before[d];
          pos /= p.out[d];
          base += uint64_t(start) * uint64_t(p.in_pitch[d]);
          ok = ok && uint64_t(start + tapoff[d * p.R + r]) < uint64_t(p.in[d]);
        }
      }
      if (ok) acc = fmadd(dy[(n * p.K + k) * p.out_plane + opos], x[int64_t(base + uint64_t(roff[r]))], acc);
    }
    __syncthreads();  // the previous element's tree reads are done
    partial[tid] = acc;
    __syncthreads();
    for (int width = kThreads / 2; width > 0; width /= 2) {
      if (tid < width) partial[tid] += partial[tid + width];
      __syncthreads();
    }
    if (tid == 0) dw[e] = partial[0];
  }
}

// ---- host-side plans -----------------------------------------------------------------------

// Which kernels a conv uses. kAuto picks by shape; the others exist for tests, so that the
// same cases run through every path.
enum class ConvPath { kAuto, kGemm, kGemmWide, kGemmLarge, kDirect };

inline ConvPath& conv_path_override() {
  static ConvPath path = ConvPath::kAuto;
  return path;
}

// Blocks for a block-stride loop over `tiles` (one block per tile up to the grid limit).
inline unsigned blocks_for_tiles(int64_t tiles) {
  return static_cast<unsigned>(tiles < 1 ? 1 : (tiles > (int64_t(1) << 24) ? (int64_t(1) << 24) : tiles));
}

enum class Tile { kDirect, k64x64, k64x128, k128x128 };

constexpr int64_t kThinRows = 8;     // fewer GEMM rows than this: the direct kernels
constexpr int64_t kWaveTiles = 132;  // wide tiles only when they fill about one wave (H100)

// Tile for an M x Ncols GEMM per group. float64 always uses 64 x 64 (4 x 4 doubles per
// thread). float32 uses 8 columns per thread (BN = 128) when that still gives a wave of
// blocks, and 128 rows only when M is not better served by 64 (M = 64 or 96 would leave a
// 128-row tile a quarter to half idle).
inline Tile choose_tile(bool is_float, int64_t M, int64_t Ncols, int64_t groups) {
  switch (conv_path_override()) {
    case ConvPath::kDirect: return Tile::kDirect;
    case ConvPath::kGemm: return Tile::k64x64;
    case ConvPath::kGemmWide: return is_float ? Tile::k64x128 : Tile::k64x64;
    case ConvPath::kGemmLarge: return is_float ? Tile::k128x128 : Tile::k64x64;
    case ConvPath::kAuto: break;
  }
  if (M < kThinRows) return Tile::kDirect;
  if (!is_float) return Tile::k64x64;
  const bool tall = M > 64 && (M % 128 == 0 || M > 192);
  const int64_t bm = tall ? 128 : 64;
  const int64_t wide_tiles = ((M + bm - 1) / bm) * ((Ncols + 127) / 128) * groups;
  if (wide_tiles < kWaveTiles) return Tile::k64x64;
  return tall ? Tile::k128x128 : Tile::k64x128;
}

template <int BM_, int BN_, int TM_, int TN_>
struct GemmShape {
  static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = TN_;
};

// Calls direct() or gemm(GemmShape<...>{}) for the chosen tile; float64 instantiates only
// the 64 x 64 shape (the others would need 128+ double accumulators per thread).
template <typename T, class Direct, class Gemm>
void dispatch_tile(Tile tile, Direct&& direct, Gemm&& gemm) {
  if (tile == Tile::kDirect) {
    direct();
    return;
  }
  if constexpr (sizeof(T) == 4) {
    if (tile == Tile::k128x128) {
      gemm(GemmShape<128, 128, 8, 8>{});
      return;
    }
    if (tile == Tile::k64x128) {
      gemm(GemmShape<64, 128, 4, 8>{});
      return;
    }
  }
  gemm(GemmShape<64, 64, 4, 4>{});
}

template <typename T, class Workspace, class Launch>
void conv_forward_run(const ConvParams& p, const T* x, const T* w, const T* bias, T* y,
                      Workspace& ws, Launch&& launch) {
  int64_t* table = ws.template get<int64_t>(p.R * (1 + p.dims));
  int64_t* roff = table;
  int64_t* tapoff = table + p.R;
  launch(&build_row_tables, blocks_for(p.R), p, p.R, false, roff, static_cast<int64_t*>(nullptr),
         tapoff);
  const int64_t J = p.N * p.out_plane;
  auto gemm = [&](auto shape) {
    using S = decltype(shape);
    const int64_t tm = (p.Kg + S::BM - 1) / S::BM, tn = (J + S::BN - 1) / S::BN;
    const int64_t tiles = tm * tn * p.G;
    launch(&conv_fwd_gemm<T, S::BM, S::BN, S::TM, S::TN>, blocks_for_tiles(tiles), x, w, bias,
           y, p, static_cast<const int64_t*>(roff), static_cast<const int64_t*>(tapoff), tm, tn,
           tiles);
  };
  auto direct = [&] {
    launch(&conv_fwd_direct<T>, blocks_for(p.N * p.K * p.out_plane), x, w, bias, y, p,
           static_cast<const int64_t*>(roff), static_cast<const int64_t*>(tapoff));
  };
  dispatch_tile<T>(choose_tile(sizeof(T) == 4, p.Kg, J, p.G), direct, gemm);
}

template <typename T, class Workspace, class Launch>
void conv_backward_input_run(const ConvParams& p, const T* dy, const T* w, T* dx, Workspace& ws,
                             Launch&& launch) {
  const int64_t Rb = p.Kg * p.kvol;
  int64_t* table = ws.template get<int64_t>(Rb * (2 + p.dims));
  int64_t* woff = table;
  int64_t* dyoff = table + Rb;
  int64_t* tapoff = table + 2 * Rb;
  launch(&build_row_tables, blocks_for(Rb), p, Rb, true, woff, dyoff, tapoff);
  const int64_t J = p.N * p.in_plane;
  auto gemm = [&](auto shape) {
    using S = decltype(shape);
    const int64_t tm = (p.Cg + S::BM - 1) / S::BM, tn = (J + S::BN - 1) / S::BN;
    const int64_t tiles = tm * tn * p.G;
    launch(&conv_bwd_input_gemm<T, S::BM, S::BN, S::TM, S::TN>, blocks_for_tiles(tiles), dy, w,
           dx, p, static_cast<const int64_t*>(woff), static_cast<const int64_t*>(dyoff),
           static_cast<const int64_t*>(tapoff), tm, tn, tiles);
  };
  auto direct = [&] {
    launch(&conv_bwd_input_direct<T>, blocks_for(p.N * p.C * p.in_plane), dy, w, dx, p,
           static_cast<const int64_t*>(woff), static_cast<const int64_t*>(dyoff),
           static_cast<const int64_t*>(tapoff));
  };
  dispatch_tile<T>(choose_tile(sizeof(T) == 4, p.Cg, J, p.G), direct, gemm);
}

constexpr int64_t kSplitTargetBlocks = 264;  // about two waves of 132 SMs
constexpr int64_t kMinSplitPositions = 512;  // reduction length worth a slice of its own
constexpr int64_t kMaxPartialBytes = int64_t(256) << 20;

// Number of slices and positions per slice for the weight-gradient reduction over J
// positions: enough blocks to fill the device, slices long enough to amortize a tile, the
// partial buffers bounded. Depends only on the shapes, so results are reproducible.
inline void plan_splits(int64_t tiles, int64_t J, int64_t slice_bytes, int64_t& splits,
                        int64_t& per_split) {
  splits = 1;
  if (tiles < kSplitTargetBlocks) splits = (kSplitTargetBlocks + tiles - 1) / tiles;
  const int64_t by_length = (J + kMinSplitPositions - 1) / kMinSplitPositions;
  if (splits > by_length) splits = by_length;
  const int64_t by_memory = kMaxPartialBytes / (slice_bytes > 0 ? slice_bytes : 1);
  if (splits > by_memory) splits = by_memory;
  if (splits < 1) splits = 1;
  per_split = (J + splits - 1) / splits;
  per_split = (per_split + kChunk - 1) / kChunk * kChunk;
  splits = (J + per_split - 1) / per_split;
}

template <typename T, class Workspace, class Launch>
void conv_backward_weight_run(const ConvParams& p, const T* x, const T* dy, T* dw, Workspace& ws,
                              Launch&& launch) {
  int64_t* table = ws.template get<int64_t>(p.R * (1 + p.dims));
  int64_t* roff = table;
  int64_t* tapoff = table + p.R;
  launch(&build_row_tables, blocks_for(p.R), p, p.R, false, roff, static_cast<int64_t*>(nullptr),
         tapoff);
  const int64_t J = p.N * p.out_plane;
  const int64_t count = p.K * p.R;
  auto gemm = [&](auto shape) {
    using S = decltype(shape);
    const int64_t tm = (p.Kg + S::BM - 1) / S::BM, tn = (p.R + S::BN - 1) / S::BN;
    int64_t splits = 1, per_split = J;
    plan_splits(tm * tn * p.G, J, count * int64_t(sizeof(T)), splits, per_split);
    T* target = splits > 1 ? ws.template get<T>(splits * count) : dw;
    const int64_t tiles = tm * tn * p.G * splits;
    launch(&conv_bwd_weight_gemm<T, S::BM, S::BN, S::TM, S::TN>, blocks_for_tiles(tiles), x, dy,
           target, p, static_cast<const int64_t*>(roff), static_cast<const int64_t*>(tapoff),
           per_split, tm, tn, tiles);
    if (splits > 1) {
      launch(&sum_splits<T>, blocks_for(count), static_cast<const T*>(target), splits, count, dw);
    }
  };
  auto direct = [&] {
    launch(&conv_bwd_weight_direct<T>, blocks_for_tiles(count), x, dy, dw, p,
           static_cast<const int64_t*>(roff), static_cast<const int64_t*>(tapoff));
  };
  dispatch_tile<T>(choose_tile(sizeof(T) == 4, p.Kg, p.R, p.G), direct, gemm);
}

}  // namespace fastconv::cuda
