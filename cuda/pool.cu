// CUDA max and average pooling, forward and backward, for any number of spatial dims (up to
// kMaxPoolDims), with the semantics of cpp/pool.cpp bit for bit.
//
// Layout: x (N, C, *in) and y (N, C, *out), C-contiguous; an (n, c) pair is a "plane", and
// indices are flat offsets within the input plane. The geometry travels by value in a
// fixed-capacity struct (PoolDev), so kernels need no device-side tables.
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
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>

#include "fastconv/geometry.hpp"
#include "fastconv_cuda/bindings.hpp"
#include "fastconv_cuda/common.hpp"
#include "radix_sort.cuh"

namespace fastconv::cuda {

namespace {

constexpr int kMaxPoolDims = 8;

struct PoolDev {
  int dims = 0;
  int64_t planes = 0, in_plane = 0, out_plane = 0;
  int64_t in[kMaxPoolDims] = {}, out[kMaxPoolDims] = {}, kernel[kMaxPoolDims] = {},
          stride[kMaxPoolDims] = {}, pad_before[kMaxPoolDims] = {},
          pad_after[kMaxPoolDims] = {};
  int64_t in_pitch[kMaxPoolDims] = {}, out_pitch[kMaxPoolDims] = {};  // element steps
};

// D > 0: the number of spatial dims is a compile-time constant (loops unroll, per-dim
// arrays stay in registers); D == 0: any count up to kMaxPoolDims, read from g.dims.
template <int D>
__device__ __forceinline__ int dims_of(const PoolDev& g) {
  return D > 0 ? D : g.dims;
}

// Window box of output coordinate o along dim d: input cells [lo, hi), and its count for
// the average (cells in the padded extent, or input cells only).
__device__ __forceinline__ void window_1d(const PoolDev& g, int d, int64_t o, int64_t& lo,
                                          int64_t& hi) {
  const int64_t start = o * g.stride[d] - g.pad_before[d];
  lo = start > 0 ? start : 0;
  const int64_t end = start + g.kernel[d];
  hi = end < g.in[d] ? end : g.in[d];
}

__device__ __forceinline__ int64_t count_1d(const PoolDev& g, int d, int64_t o,
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
__device__ __forceinline__ void split(const PoolDev& g, const int64_t* extent, int64_t flat,
                                      int64_t* coord) {
  const int dims = dims_of<D>(g);
#pragma unroll
  for (int d = kMaxPoolDims - 1; d >= 0; --d) {
    if (d >= dims) continue;
    const int64_t q = div_nonneg(flat, extent[d]);
    coord[d] = flat - q * extent[d];
    flat = q;
  }
}

// Advances the row-major cursor over the leading dims [0, dims - 1) of the box [lo, hi);
// false once every point was visited.
template <int D>
__device__ __forceinline__ bool next_lead(const PoolDev& g, const int64_t* lo, const int64_t* hi,
                                          int64_t* cur) {
  const int dims = dims_of<D>(g);
  for (int d = dims - 2; d >= 0; --d) {
    if (++cur[d] < hi[d]) return true;
    cur[d] = lo[d];
  }
  return false;
}

template <typename T, int D, bool kIndex>
__global__ void max_pool_forward_kernel(PoolDev g, const T* __restrict__ x, T* __restrict__ y,
                                        int64_t* __restrict__ indices) {
  constexpr int K = D > 0 ? D : kMaxPoolDims;
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
__global__ void avg_pool_forward_kernel(PoolDev g, const T* __restrict__ x, T* __restrict__ y,
                                        bool count_include_pad) {
  constexpr int K = D > 0 ? D : kMaxPoolDims;
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
__global__ void avg_pool_backward_kernel(PoolDev g, const T* __restrict__ dy,
                                         T* __restrict__ dx, bool count_include_pad) {
  constexpr int K = D > 0 ? D : kMaxPoolDims;
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

// ---------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------

Dims shape_after_nc(const WindowGeom& g) {
  Dims s{g.batch, g.channels};
  s.insert(s.end(), g.out.begin(), g.out.end());
  return s;
}

void fill_pitches(const Dims& extent, int64_t* pitch) {
  int64_t p = 1;
  for (int64_t d = static_cast<int64_t>(extent.size()) - 1; d >= 0; --d) {
    pitch[d] = p;
    p *= extent[d];
  }
}

// The CPU's make_plan checks (same geometry code, same messages), then the by-value struct.
PoolDev make_pool_dev(const char* op, const Dims& x_shape, const Dims& kernel,
                      const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                      bool ceil_mode, const char* x_name, WindowGeom* geom) {
  FC_CHECK(x_shape.size() >= 3, op, ": ", x_name,
           " must be (N, C, *spatial) with at least one spatial dim, got shape ",
           tuple_str(x_shape));
  const Dims in(x_shape.begin() + 2, x_shape.end());
  const WindowGeom g = make_window_geom(op, x_shape[0], x_shape[1], in, kernel, stride,
                                        pad_before, pad_after, Dims(in.size(), 1), ceil_mode,
                                        PadLimit::kPool);
  FC_CHECK(g.dims() <= kMaxPoolDims, op, ": the CUDA kernels support at most ", kMaxPoolDims,
           " spatial dims, got ", g.dims());
  PoolDev p;
  p.dims = static_cast<int>(g.dims());
  p.planes = checked_mul(g.batch, g.channels, "number of planes");
  p.in_plane = g.in_plane();
  p.out_plane = g.out_plane();
  // Element counts of the whole tensors must fit int64 too (flat thread indices).
  checked_mul(p.planes, std::max(p.in_plane, p.out_plane), "element count");
  for (int d = 0; d < p.dims; ++d) {
    p.in[d] = g.in[d];
    p.out[d] = g.out[d];
    p.kernel[d] = g.kernel[d];
    p.stride[d] = g.stride[d];
    p.pad_before[d] = g.pad_before[d];
    p.pad_after[d] = g.pad_after[d];
  }
  fill_pitches(g.in, p.in_pitch);
  fill_pitches(g.out, p.out_pitch);
  *geom = g;
  return p;
}

// Launches KERNEL<T, D> with D = 1, 2, 3 specialized and 0 (generic) otherwise.
#define FC_POOL_CASE(KERNEL, T, D, N, STREAM, ...) \
  KERNEL<T, D><<<grid_for(N), kBlockThreads, 0, STREAM>>>(__VA_ARGS__)
#define FC_POOL_LAUNCH(KERNEL, T, N, STREAM, ...)                              \
  do {                                                                         \
    switch (p.dims) {                                                          \
      case 1: FC_POOL_CASE(KERNEL, T, 1, N, STREAM, __VA_ARGS__); break;       \
      case 2: FC_POOL_CASE(KERNEL, T, 2, N, STREAM, __VA_ARGS__); break;       \
      case 3: FC_POOL_CASE(KERNEL, T, 3, N, STREAM, __VA_ARGS__); break;       \
      default: FC_POOL_CASE(KERNEL, T, 0, N, STREAM, __VA_ARGS__); break;      \
    }                                                                          \
    FC_LAUNCH_CHECK();                                                         \
  } while (0)

template <typename T, int D>
void launch_max_forward(const PoolDev& p, const T* x, T* y, int64_t* idx, cudaStream_t stream) {
  const int64_t n = p.planes * p.out_plane;
  const unsigned blocks = grid_for(n);
  if (idx) {
    max_pool_forward_kernel<T, D, true><<<blocks, kBlockThreads, 0, stream>>>(p, x, y, idx);
  } else {
    max_pool_forward_kernel<T, D, false><<<blocks, kBlockThreads, 0, stream>>>(p, x, y, nullptr);
  }
  FC_LAUNCH_CHECK();
}

void max_pool_forward_cuda(py::handle x, py::handle out, std::optional<py::handle> indices,
                           const Dims& kernel, const Dims& stride, const Dims& pad_before,
                           const Dims& pad_after, bool ceil_mode, py::object alloc,
                           uintptr_t stream_handle) {
  (void)alloc;
  const DeviceArray xa = device_array(x, "x"), ya = device_array(out, "out");
  WindowGeom g;
  const PoolDev p = make_pool_dev("max_pool", xa.shape, kernel, stride, pad_before, pad_after,
                                  ceil_mode, "x", &g);
  check_shape(ya, shape_after_nc(g), "out");
  std::optional<DeviceArray> ia;
  if (indices && !indices->is_none()) {
    ia = device_array(*indices, "indices");
    check_shape(*ia, shape_after_nc(g), "indices");
  }
  const cudaStream_t stream = as_stream(stream_handle);
  dispatch_float(xa, "x", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(xa, "x");
    T* yp = output_ptr<T>(ya, "out");
    int64_t* ip = ia ? output_ptr<int64_t>(*ia, "indices") : nullptr;
    switch (p.dims) {
      case 1: launch_max_forward<T, 1>(p, xp, yp, ip, stream); break;
      case 2: launch_max_forward<T, 2>(p, xp, yp, ip, stream); break;
      case 3: launch_max_forward<T, 3>(p, xp, yp, ip, stream); break;
      default: launch_max_forward<T, 0>(p, xp, yp, ip, stream); break;
    }
  });
}

void avg_pool_forward_cuda(py::handle x, py::handle out, const Dims& kernel, const Dims& stride,
                           const Dims& pad_before, const Dims& pad_after, bool ceil_mode,
                           bool count_include_pad, py::object alloc, uintptr_t stream_handle) {
  (void)alloc;
  const DeviceArray xa = device_array(x, "x"), ya = device_array(out, "out");
  WindowGeom g;
  const PoolDev p = make_pool_dev("avg_pool", xa.shape, kernel, stride, pad_before, pad_after,
                                  ceil_mode, "x", &g);
  check_shape(ya, shape_after_nc(g), "out");
  const cudaStream_t stream = as_stream(stream_handle);
  dispatch_float(xa, "x", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(xa, "x");
    T* yp = output_ptr<T>(ya, "out");
    FC_POOL_LAUNCH(avg_pool_forward_kernel, T, p.planes * p.out_plane, stream, p, xp, yp,
                   count_include_pad);
  });
}

void avg_pool_backward_cuda(py::handle dy, py::handle dx, const Dims& kernel,
                            const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                            bool ceil_mode, bool count_include_pad, py::object alloc,
                            uintptr_t stream_handle) {
  (void)alloc;
  const DeviceArray dya = device_array(dy, "dy"), dxa = device_array(dx, "dx");
  WindowGeom g;
  const PoolDev p = make_pool_dev("avg_pool_backward", dxa.shape, kernel, stride, pad_before,
                                  pad_after, ceil_mode, "dx", &g);
  check_shape(dya, shape_after_nc(g), "dy");
  const cudaStream_t stream = as_stream(stream_handle);
  dispatch_float(dya, "dy", [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dya, "dy");
    T* dxp = output_ptr<T>(dxa, "dx");
    FC_POOL_LAUNCH(avg_pool_backward_kernel, T, p.planes * p.in_plane, stream, p, dyp, dxp,
                   count_include_pad);
  });
}

void max_pool_backward_cuda(py::handle dy, py::handle indices, py::handle dx, py::object alloc,
                            uintptr_t stream_handle) {
  const DeviceArray dya = device_array(dy, "dy"), ia = device_array(indices, "indices"),
                    dxa = device_array(dx, "dx");
  const Dims& dy_shape = dya.shape;
  const Dims& dx_shape = dxa.shape;
  const ScatterPlanes s = make_scatter_planes("max_pool_backward", dy_shape, dx_shape);
  check_shape(ia, dy_shape, "indices");
  const int64_t planes = s.planes, in_plane = s.in_plane, out_plane = s.out_plane;
  const int64_t count = planes * out_plane, dx_size = planes * in_plane;
  const int64_t* ip = input_ptr<int64_t>(ia, "indices");
  const cudaStream_t stream = as_stream(stream_handle);
  Workspace ws(alloc);

  // Hit counters are 32-bit; with fewer positions than 2^32 they cannot wrap.
  FC_CHECK(count < (int64_t(1) << 32), "max_pool_backward: dy has ", count,
           " elements; the CUDA kernel takes fewer than 2^32");
  unsigned* hits = ws.get<unsigned>(dx_size);
  // status[0]: first bad position (0x7f bytes: a sentinel above any position, for
  // atomicMin); status[1]: number of queued positions.
  long long* status = ws.get<long long>(2);
  FC_CUDA_CHECK(cudaMemsetAsync(status, 0x7f, sizeof(long long), stream));
  FC_CUDA_CHECK(cudaMemsetAsync(status + 1, 0, sizeof(long long), stream));
  FC_CUDA_CHECK(cudaMemsetAsync(hits, 0, static_cast<size_t>(dx_size) * sizeof(unsigned),
                                stream));
  count_hits_kernel<<<grid_for(count), kBlockThreads, 0, stream>>>(ip, count, out_plane,
                                                                   in_plane, status, hits);
  FC_LAUNCH_CHECK();
  // The queue of (key, value) pairs for the positions of multi-hit cells (worst case: all).
  uint64_t* keys = ws.get<uint64_t>(count);
  int64_t* values = ws.get<int64_t>(count);
  dispatch_float(dya, "dy", [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dya, "dy");
    T* dxp = output_ptr<T>(dxa, "dx");
    FC_CUDA_CHECK(cudaMemsetAsync(dxp, 0, static_cast<size_t>(dx_size) * sizeof(T), stream));
    store_single_hits_kernel<T><<<grid_for(count), kBlockThreads, 0, stream>>>(
        ip, count, out_plane, in_plane, hits, dyp, dxp,
        reinterpret_cast<unsigned long long*>(status + 1), keys, values);
    FC_LAUNCH_CHECK();
    // One read brings back the first bad index and the queue length: the op's only sync.
    // As on the CPU, a bad index raises ValueError; dx (the op's output) may then hold
    // partial results, but nothing outside it is ever written.
    long long host[2] = {0, 0};
    {
      py::gil_scoped_release release;
      FC_CUDA_CHECK(cudaMemcpyAsync(host, status, sizeof host, cudaMemcpyDeviceToHost, stream));
      FC_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    const long long bad = host[0], queued = host[1];
    if (bad < count) {
      int64_t value = 0;
      FC_CUDA_CHECK(cudaMemcpyAsync(&value, ip + bad, sizeof value, cudaMemcpyDeviceToHost,
                                    stream));
      FC_CUDA_CHECK(cudaStreamSynchronize(stream));
      FC_CHECK(false, "max_pool_backward: indices must lie in [0, ", in_plane,
               ") (the spatial size of one plane of dx shape ", tuple_str(dx_shape), "), got ",
               value, " at flat position ", bad, " of indices shape ", tuple_str(dy_shape));
    }
    if (queued == 0) return;
    // Sort by position, then stably by cell: each cell's run lists its positions in
    // increasing order, the CPU's summation order.
    uint64_t* keys2 = ws.get<uint64_t>(queued);
    int64_t* values2 = ws.get<int64_t>(queued);
    stable_sort_pairs(ws, keys, keys2, values, values2, queued,
                      bits_for(static_cast<uint64_t>(count - 1)), stream);
    swap_pairs_kernel<<<grid_for(queued), kBlockThreads, 0, stream>>>(keys2, values2, queued,
                                                                      keys, values);
    FC_LAUNCH_CHECK();
    stable_sort_pairs(ws, keys, keys2, values, values2, queued,
                      bits_for(static_cast<uint64_t>(dx_size - 1)), stream);
    sum_runs_kernel<T><<<grid_for(queued), kBlockThreads, 0, stream>>>(
        keys2, values2, queued, static_cast<uint64_t>(dx_size), dyp, dxp);
    FC_LAUNCH_CHECK();
  });
}

}  // namespace

void bind_pool(py::module_& m) {
  m.def("max_pool_forward", &max_pool_forward_cuda, py::arg("x"), py::arg("out"),
        py::arg("indices").none(true), py::arg("kernel_size"), py::arg("stride"),
        py::arg("pad_before"), py::arg("pad_after"), py::arg("ceil_mode"), py::arg("alloc"),
        py::arg("stream"),
        "out (N, C, *out_spatial) <- window maxima of x (N, C, *spatial); indices (int64, same "
        "shape, or None) <- their flat offsets within each (n, c) plane. GPU arrays.");
  m.def("avg_pool_forward", &avg_pool_forward_cuda, py::arg("x"), py::arg("out"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("alloc"), py::arg("stream"),
        "out (N, C, *out_spatial) <- window means of x (N, C, *spatial). GPU arrays.");
  m.def("max_pool_backward", &max_pool_backward_cuda, py::arg("dy"), py::arg("indices"),
        py::arg("dx"), py::arg("alloc"), py::arg("stream"),
        "dx (N, C, *spatial) <- dy (N, C, *out_spatial) added at indices per plane, summed in "
        "the CPU's order. Synchronizes the stream once to validate the indices.");
  m.def("avg_pool_backward", &avg_pool_backward_cuda, py::arg("dy"), py::arg("dx"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("alloc"), py::arg("stream"),
        "dx (N, C, *spatial) <- gradient of avg_pool_forward (its exact adjoint). GPU arrays.");
}

}  // namespace fastconv::cuda
