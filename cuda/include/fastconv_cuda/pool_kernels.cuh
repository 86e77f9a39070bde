// Pooling kernels for the CUDA backend (device code plus the launch plans of the forward
// passes and the average adjoint): max and average pooling, forward and backward, for any
// number of spatial dims (up to kMaxDims), with the semantics of cpp/pool.cpp bit for bit.
// No pybind11 and no CUDA runtime calls: plans launch through a caller-supplied
// `launch(kernel, grid, args...)`, so cuda/emu/ runs them on the host; pool.cu binds them and
// orchestrates max_pool_backward, which needs a sort and a read-back.
//
// Layout: x (N, C, *in) and y (N, C, *out), C-contiguous; an (n, c) pair is a "plane", and
// indices are flat offsets within the input plane. The geometry travels by value in the
// shared DeviceWindow (window.cuh), so kernels need no device-side tables.
//
// Forward (max and avg): one thread per output element, grid-stride over planes * out_plane;
// consecutive threads take consecutive outputs of the innermost dim, so the stores coalesce
// and neighbouring threads read overlapping, cached input rows. Each thread decodes its
// window's box [lo, hi) per dim (padding clipped away, so padded cells never take part) and
// scans it in row-major order, exactly as the CPU scans it:
//   max: seeded with the first cell; a later cell wins when it is greater, or when it is a
//        NaN and the best is not (so the first maximum / first NaN wins);
//   avg: sums in double in scan order, divides once by the window count
//        (count_include_pad: cells inside the padded extent, else input cells only).
// Backward:
//   avg: a gather, one thread per input cell: it walks the box of outputs whose windows
//        cover it, in the CPU's order (leading dims row-major; per leading point a double
//        partial sum over the last dim, added to the total), so no atomics and the result is
//        deterministic and equal to the CPU's.
//   max: max_pool_backward receives no geometry (only dy, indices, dx), so it cannot find
//        the windows covering a cell, and float atomics would make sums of three or more
//        terms order-dependent (and float32 atomics flush subnormals). Instead: one pass
//        validates the indices and counts the hits of every cell (integer atomics, exact);
//        a second stores the cells hit once directly (0 + dy, as the CPU) and queues the
//        positions of cells hit more often; those are radix-sorted by position and then
//        stably by cell, and one thread per run sums it in increasing position order from
//        0 -- the CPU's order, hence the CPU's bits. Non-overlapping pooling (kernel <=
//        stride) never queues anything. Raising ValueError on a bad index, like the CPU,
//        needs the validation result on the host: max_pool_backward synchronizes the stream
//        once (the same read returns the queue length the sorts need).
#pragma once

#include <cstdint>
#include <type_traits>

#include "fastconv_cuda/grid.cuh"
#include "fastconv_cuda/window.cuh"

namespace fastconv::cuda {

// D > 0: the number of spatial dims is a compile-time constant (loops unroll, per-dim
// arrays stay in registers); D == 0: any count up to kMaxDims, read from g.dims.
template <int D>
__device__ __forceinline__ int dims_of(const DeviceWindow& g) {
  return D > 0 ? D : g.dims;
}

// Window box of output coordinate o along dim d: input cells [lo, hi), and its count for
// the average (cells in the padded extent, or input cells only).
__device__ __forceinline__ void window_1d(const DeviceWindow& g, int d, int64_t o, int64_t& lo,
                                          int64_t& hi) {
  const int64_t start = o * g.stride[d] - g.pad_before[d];
  lo = start > 0 ? start : 0;
  const int64_t end = start + g.kernel[d];
  hi = end < g.in[d] ? end : g.in[d];
}

__device__ __forceinline__ int64_t count_1d(const DeviceWindow& g, int d, int64_t o,
                                            bool count_include_pad) {
  const int64_t start = o * g.stride[d] - g.pad_before[d];
  const int64_t end = start + g.kernel[d];
  if (count_include_pad) {
    // start >= -pad_before always, so only the end can leave the padded extent.
    const int64_t limit = g.in[d] + g.pad_after[d];
    return (end < limit ? end : limit) - start;
  }
  const int64_t lo = start > 0 ? start : 0;
  return (end < g.in[d] ? end : g.in[d]) - lo;
}

// a / b for non-negative a, b > 0: 32-bit division when both fit (the common case; a 64-bit
// division costs several times more and the kernels do a few per element).
__device__ __forceinline__ int64_t div_nonneg(int64_t a, int64_t b) {
  if (((a | b) >> 32) == 0) return static_cast<uint32_t>(a) / static_cast<uint32_t>(b);
  return a / b;
}

// Splits a flat in-plane offset into per-dim coordinates (row-major, last dim fastest).
template <int D>
__device__ __forceinline__ void split(const DeviceWindow& g, const int64_t* extent, int64_t flat,
                                      int64_t* coord) {
  const int dims = dims_of<D>(g);
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; --d) {
    if (d >= dims) continue;
    const int64_t q = div_nonneg(flat, extent[d]);
    coord[d] = flat - q * extent[d];
    flat = q;
  }
}

// Advances the row-major cursor over the leading dims [0, dims - 1) of the box [lo, hi);
// false once every point was visited.
template <int D>
__device__ __forceinline__ bool next_lead(const DeviceWindow& g, const int64_t* lo, const int64_t* hi,
                                          int64_t* cur) {
  const int dims = dims_of<D>(g);
  for (int d = dims - 2; d >= 0; --d) {
    if (++cur[d] < hi[d]) return true;
    cur[d] = lo[d];
  }
  return false;
}

template <typename T, int D, bool kIndex>
__global__ void max_pool_forward_kernel(DeviceWindow g, const T* __restrict__ x, T* __restrict__ y,
                                        int64_t* __restrict__ indices) {
  constexpr int K = D > 0 ? D : kMaxDims;
  const int dims = dims_of<D>(g);
  const int last = dims - 1;
  const int64_t total = g.planes * g.out_plane;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = div_nonneg(t, g.out_plane);
    int64_t o[K], lo[K], hi[K], cur[K];
    split<D>(g, g.out, t - plane * g.out_plane, o);
    int64_t first = 0;  // offset of the window's first input cell
#pragma unroll
    for (int d = 0; d < K; ++d) {
      if (d >= dims) continue;
      window_1d(g, d, o[d], lo[d], hi[d]);
      cur[d] = lo[d];
      first += lo[d] * g.in_pitch[d];
    }
    const T* src = x + plane * g.in_plane;
    // PadLimit::kPool guarantees lo < hi in every dim: the window holds an input cell.
    T best = src[first];
    int64_t pos = first;
    do {
      int64_t row = 0;  // offset of the current input row (leading coordinates = cur)
      for (int d = 0; d < last; ++d) row += cur[d] * g.in_pitch[d];
      for (int64_t i = lo[last]; i < hi[last]; ++i) {
        const T v = src[row + i];
        // v wins when greater, or when it is a NaN and best is not: the first NaN stays.
        const bool take = !(v <= best) && (best == best);
        if (take) {
          best = v;
          pos = row + i;
        }
      }
    } while (next_lead<D>(g, lo, hi, cur));
    y[t] = best;
    if (kIndex) indices[t] = pos;
  }
}

template <typename T, int D>
__global__ void avg_pool_forward_kernel(DeviceWindow g, const T* __restrict__ x, T* __restrict__ y,
                                        bool count_include_pad) {
  constexpr int K = D > 0 ? D : kMaxDims;
  const int dims = dims_of<D>(g);
  const int last = dims - 1;
  const int64_t total = g.planes * g.out_plane;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = div_nonneg(t, g.out_plane);
    int64_t o[K], lo[K], hi[K], cur[K];
    split<D>(g, g.out, t - plane * g.out_plane, o);
    int64_t count = 1;
#pragma unroll
    for (int d = 0; d < K; ++d) {
      if (d >= dims) continue;
      window_1d(g, d, o[d], lo[d], hi[d]);
      cur[d] = lo[d];
      count *= count_1d(g, d, o[d], count_include_pad);
    }
    const T* src = x + plane * g.in_plane;
    // Sums in double: float32 averages round once, at the end (as on the CPU).
    double acc = 0.0;
    do {
      int64_t row = 0;
      for (int d = 0; d < last; ++d) row += cur[d] * g.in_pitch[d];
      for (int64_t i = lo[last]; i < hi[last]; ++i) acc += static_cast<double>(src[row + i]);
    } while (next_lead<D>(g, lo, hi, cur));
    y[t] = static_cast<T>(acc / static_cast<double>(count));
  }
}

template <typename T, int D>
__global__ void avg_pool_backward_kernel(DeviceWindow g, const T* __restrict__ dy,
                                         T* __restrict__ dx, bool count_include_pad) {
  constexpr int K = D > 0 ? D : kMaxDims;
  const int dims = dims_of<D>(g);
  const int last = dims - 1;
  const int64_t total = g.planes * g.in_plane;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = div_nonneg(t, g.in_plane);
    int64_t i[K], first[K], stop[K], cur[K];
    split<D>(g, g.in, t - plane * g.in_plane, i);
    bool empty = false;
#pragma unroll
    for (int d = 0; d < K; ++d) {
      if (d >= dims) continue;
      // Output o covers i when o*s <= i + pb < o*s + k.
      const int64_t s = g.stride[d], reach = i[d] + g.pad_before[d];
      const int64_t lo_num = reach - g.kernel[d] + 1;
      first[d] = lo_num <= 0 ? 0 : div_nonneg(lo_num + s - 1, s);
      const int64_t l = div_nonneg(reach, s) + 1;
      stop[d] = l < g.out[d] ? l : g.out[d];
      empty |= first[d] >= stop[d];
      cur[d] = first[d];
    }
    double acc = 0.0;
    if (!empty) {
      const T* grad = dy + plane * g.out_plane;
      do {
        int64_t row = 0, lead_count = 1;
        for (int d = 0; d < last; ++d) {
          row += cur[d] * g.out_pitch[d];
          lead_count *= count_1d(g, d, cur[d], count_include_pad);
        }
        // Per leading point a partial sum over the last dim, then one add: the CPU's order.
        double s = 0.0;
        for (int64_t o = first[last]; o < stop[last]; ++o) {
          const int64_t c = lead_count * count_1d(g, last, o, count_include_pad);
          s += static_cast<double>(grad[row + o]) / static_cast<double>(c);
        }
        acc += s;
      } while (next_lead<D>(g, first, stop, cur));
    }
    dx[t] = static_cast<T>(acc);
  }
}

// ---------------------------------------------------------------------------------------
// max_pool_backward: count hits per cell; single-hit cells store directly, the rest are
// sorted by (cell, position) and summed run by run.
// ---------------------------------------------------------------------------------------

// Validates every index (first_bad <- the smallest position of one outside [0, in_plane))
// and counts the hits of every dx cell (hits saturate far below wrap-around: see caller).
__global__ void count_hits_kernel(const int64_t* __restrict__ indices, int64_t count,
                                  int64_t out_plane, int64_t in_plane, long long* first_bad,
                                  unsigned* __restrict__ hits) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count;
       j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = indices[j];
    if (v < 0 || v >= in_plane) {
      atomicMin(first_bad, static_cast<long long>(j));
      continue;
    }
    atomicAdd(hits + div_nonneg(j, out_plane) * in_plane + v, 1u);
  }
}

// A cell hit once gets 0 + dy[j] (the CPU's sum of one term, -0 included) with a plain
// store; a position whose cell is hit more often is queued (in any order: the sorts below
// restore it) as (key = j, value = cell).
template <typename T>
__global__ void store_single_hits_kernel(const int64_t* __restrict__ indices, int64_t count,
                                         int64_t out_plane, int64_t in_plane,
                                         const unsigned* __restrict__ hits,
                                         const T* __restrict__ dy, T* __restrict__ dx,
                                         unsigned long long* queued,
                                         uint64_t* __restrict__ queue_keys,
                                         int64_t* __restrict__ queue_values) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count;
       j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = indices[j];
    if (v < 0 || v >= in_plane) continue;  // reported by count_hits_kernel
    const int64_t cell = div_nonneg(j, out_plane) * in_plane + v;
    if (hits[cell] == 1) {
      dx[cell] = T(0) + dy[j];
    } else {
      const unsigned long long slot = atomicAdd(queued, 1ull);
      queue_keys[slot] = static_cast<uint64_t>(j);
      queue_values[slot] = cell;
    }
  }
}

// (j, cell) sorted by j -> (cell, j), for the second, stable sort by cell.
__global__ void swap_pairs_kernel(const uint64_t* __restrict__ keys_in,
                                  const int64_t* __restrict__ values_in, int64_t count,
                                  uint64_t* __restrict__ keys_out,
                                  int64_t* __restrict__ values_out) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < count;
       t += int64_t(gridDim.x) * blockDim.x) {
    keys_out[t] = static_cast<uint64_t>(values_in[t]);
    values_out[t] = static_cast<int64_t>(keys_in[t]);
  }
}

// The thread at the head of each run of equal keys sums dy over the run (positions in
// increasing j thanks to the stable sort) and stores the cell; dx was zeroed before.
template <typename T>
__global__ void sum_runs_kernel(const uint64_t* __restrict__ keys,
                                const int64_t* __restrict__ values, int64_t count,
                                uint64_t dx_size, const T* __restrict__ dy, T* __restrict__ dx) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < count;
       t += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t key = keys[t];
    if (t > 0 && keys[t - 1] == key) continue;
    T s = T(0);
    for (int64_t u = t; u < count && keys[u] == key; ++u) s += dy[values[u]];
    if (key < dx_size) dx[key] = s;  // validated already; the test only guards memory
  }
}

// Calls f(std::integral_constant<int, D>{}) with D = 1, 2, 3 specialized (loops unroll,
// per-dim arrays stay in registers) and 0 (any count) otherwise.
template <typename F>
void with_dims(const DeviceWindow& g, F&& f) {
  switch (g.dims) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

// y (and indices, when not null) of max pooling x: one thread per output.
template <typename T, class Launch>
void max_pool_forward_run(const DeviceWindow& g, const T* x, T* y, int64_t* indices,
                          Launch&& launch) {
  const unsigned grid = blocks_for(g.planes * g.out_plane);
  with_dims(g, [&](auto dims) {
    constexpr int D = decltype(dims)::value;
    if (indices) {
      launch(&max_pool_forward_kernel<T, D, true>, grid, g, x, y, indices);
    } else {
      launch(&max_pool_forward_kernel<T, D, false>, grid, g, x, y,
             static_cast<int64_t*>(nullptr));
    }
  });
}

template <typename T, class Launch>
void avg_pool_forward_run(const DeviceWindow& g, const T* x, T* y, bool count_include_pad,
                          Launch&& launch) {
  with_dims(g, [&](auto dims) {
    launch(&avg_pool_forward_kernel<T, decltype(dims)::value>,
           blocks_for(g.planes * g.out_plane), g, x, y, count_include_pad);
  });
}

// dx of average pooling from dy: one thread per input cell, gathering its outputs.
template <typename T, class Launch>
void avg_pool_backward_run(const DeviceWindow& g, const T* dy, T* dx, bool count_include_pad,
                           Launch&& launch) {
  with_dims(g, [&](auto dims) {
    launch(&avg_pool_backward_kernel<T, decltype(dims)::value>,
           blocks_for(g.planes * g.in_plane), g, dy, dx, count_include_pad);
  });
}

}  // namespace fastconv::cuda
