// RoI align and RoI pool kernels for the CUDA backend (device code plus launch plans), with
// the semantics of fastconv/roi.hpp, which the CPU kernels share (sample positions, taps,
// bins and row checks are the same functions). No pybind11 and no CUDA runtime calls: the
// plans launch through a caller-supplied `launch(kernel, grid, args...)` and take their
// temporary memory from a workspace (`ws.get<T>(count)`), so cuda/emu/ runs them on the
// host; roi.cu validates the arguments, binds them and reads the status back.
//
// Every plan starts with a prepare kernel, one thread per roi: it checks the row (batch
// index, finiteness, order, size; the first bad row goes to status[0] by atomicMin, read
// back by roi.cu, which then raises the CPU's message) and writes the roi's parameters to a
// table in the workspace (a bad row gets batch -1 and is skipped by the later kernels, so
// they never index out of bounds).
//
//   roi_align forward: one thread per output element (roi, channel, bin), torchvision's
//     order: samples of the bin row-major, each the bilinear (trilinear) sum of its
//     corners, divided by the sample count once.
//   roi_align backward, a gather with no atomics: one thread per input cell. It walks the
//     rois in increasing order, skips those of another image or whose taps cannot reach it
//     (the table holds each roi's reach per axis), and per axis visits only the samples
//     that can touch its cell (sample_span); the terms dy * weight / count are added in a
//     fixed order (roi, then sample z, y, x), so every run gives the same bits.
//   roi_pool forward: one thread per output element, scanning its bin row-major from
//     -FLT_MAX with strict >, as torchvision.
//   roi_pool backward: the cells of the recorded indices are sort keys; one stable radix
//     sort by cell (roi.cu) puts every cell's positions in increasing order -- roi, then
//     bin, the CPU's order -- and one thread per run sums them from 0, as the CPU does
//     (max_pool_backward's scheme). So the result equals the CPU's bit for bit.
#pragma once

#include <cstdint>

#include "fastconv/roi.hpp"
#include "fastconv_cuda/grid.cuh"

namespace fastconv::cuda {

// What the prepare kernels store per roi. batch is -1 for a bad row.
template <typename T>
struct AlignRoi {
  int64_t batch;
  T count;
  RoiAxis<T> axis[kRoiAxes];
  int64_t lo[kRoiAxes], hi[kRoiAxes];  // cells some sample reads (hi < lo: none)
};

struct PoolRoi {
  int64_t batch;
  PoolAxis axis[kRoiAxes];
};

enum RoiMode : int { kRoiAlignMode = 0, kRoiPoolMode = 1, kRoiRowsOnly = 2 };

__global__ void roi_fill_kernel(long long* p, int64_t count, long long value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    p[i] = value;
  }
}

// The cells read by the valid samples of an axis: [lo, hi], empty when hi < lo.
template <typename T>
__device__ __forceinline__ void axis_reach(const RoiAxis<T>& a, int64_t& lo, int64_t& hi) {
  int64_t k0 = 0, k1 = 0;
  sample_span(a, -1.0, static_cast<double>(a.size), k0, k1);
  lo = a.size;
  hi = -1;
  int64_t c0 = 0, c1 = 0;
  T w0 = T(0), w1 = T(0);
  for (int64_t k = k0; k < k1; ++k) {  // the first valid sample (a few steps at most)
    const int64_t p = k / a.grid;
    if (sample_taps(sample_position(a, p, k - p * a.grid), a.size, c0, c1, w0, w1)) {
      lo = c0;
      break;
    }
  }
  for (int64_t k = k1 - 1; k >= k0; --k) {  // and the last
    const int64_t p = k / a.grid;
    if (sample_taps(sample_position(a, p, k - p * a.grid), a.size, c0, c1, w0, w1)) {
      hi = c1;
      break;
    }
  }
}

template <typename T>
__global__ void roi_align_prepare_kernel(const T* __restrict__ rois, RoiGeom g, T scale,
                                         bool aligned, int64_t sampling_ratio,
                                         AlignRoi<T>* __restrict__ table, long long* status) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < g.rois;
       r += int64_t(gridDim.x) * blockDim.x) {
    const T* row = rois + r * g.row_width();
    AlignRoi<T> e;
    if (align_row_problem(row, g, scale, aligned, sampling_ratio) != kRoiOk) {
      atomicMin(status, static_cast<long long>(r));
      e.batch = -1;
      table[r] = e;
      continue;
    }
    e.batch = static_cast<int64_t>(row[0]);
    for (int a = 0; a < kRoiAxes; ++a) {
      e.axis[a] = roi_align_axis(row, g, a, scale, aligned, sampling_ratio);
      axis_reach(e.axis[a], e.lo[a], e.hi[a]);
    }
    e.count = sample_count(e.axis);
    table[r] = e;
  }
}

// The samples of bin p of an axis that read something: [k0, k1) within the bin.
template <typename T>
__device__ __forceinline__ void bin_samples(const RoiAxis<T>& a, int64_t p, int64_t& k0,
                                            int64_t& k1) {
  sample_span(a, -1.0, static_cast<double>(a.size), k0, k1);
  const int64_t first = p * a.grid, last = first + a.grid;
  k0 = k0 > first ? k0 : first;
  k1 = k1 < last ? k1 : last;
}

template <typename T>
__global__ void roi_align_forward_kernel(const T* __restrict__ x, RoiGeom g,
                                         const AlignRoi<T>* __restrict__ table,
                                         T* __restrict__ y) {
  const int64_t bins = g.bins(), per_roi = g.channels * bins, plane = g.plane();
  const int64_t total = g.rois * per_roi;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / per_roi, c = (t / bins) % g.channels, bin = t % bins;
    const AlignRoi<T>& e = table[r];
    if (e.batch < 0) {
      y[t] = T(0);
      continue;
    }
    const int64_t p[kRoiAxes] = {bin / (g.out[1] * g.out[2]), (bin / g.out[2]) % g.out[1],
                                 bin % g.out[2]};
    int64_t lo[kRoiAxes], hi[kRoiAxes];
    for (int a = 0; a < kRoiAxes; ++a) bin_samples(e.axis[a], p[a], lo[a], hi[a]);
    const T* src = x + (e.batch * g.channels + c) * plane;
    T sum = T(0);
    for (int64_t kz = lo[0]; kz < hi[0]; ++kz) {
      int64_t z[2];
      T wz[2];
      if (!sample_taps(sample_position(e.axis[0], p[0], kz - p[0] * e.axis[0].grid), g.in[0],
                       z[0], z[1], wz[0], wz[1]))
        continue;
      for (int64_t ky = lo[1]; ky < hi[1]; ++ky) {
        int64_t yy[2];
        T wy[2];
        if (!sample_taps(sample_position(e.axis[1], p[1], ky - p[1] * e.axis[1].grid), g.in[1],
                         yy[0], yy[1], wy[0], wy[1]))
          continue;
        for (int64_t kx = lo[2]; kx < hi[2]; ++kx) {
          int64_t xx[2];
          T wx[2];
          if (!sample_taps(sample_position(e.axis[2], p[2], kx - p[2] * e.axis[2].grid),
                           g.in[2], xx[0], xx[1], wx[0], wx[1]))
            continue;
          // The corners in torchvision's order (low before high per axis, x fastest); a
          // clamped axis reads its one cell once, with both weights.
          const int nz = z[0] == z[1] ? 1 : 2, ny = yy[0] == yy[1] ? 1 : 2,
                    nx = xx[0] == xx[1] ? 1 : 2;
          if (nz == 1) wz[0] = roi_add(wz[0], wz[1]);
          if (ny == 1) wy[0] = roi_add(wy[0], wy[1]);
          if (nx == 1) wx[0] = roi_add(wx[0], wx[1]);
          T value = T(0);
          for (int i = 0; i < nz; ++i) {
            for (int j = 0; j < ny; ++j) {
              const T* row = src + (z[i] * g.in[1] + yy[j]) * g.in[2];
              const T wzy = roi_mul(wz[i], wy[j]);
              for (int k = 0; k < nx; ++k) value += roi_mul(wzy, wx[k]) * row[xx[k]];
            }
          }
          sum += value;
        }
      }
    }
    y[t] = roi_div(sum, e.count);
  }
}

template <typename T>
__global__ void roi_align_backward_kernel(const T* __restrict__ dy, RoiGeom g,
                                          const AlignRoi<T>* __restrict__ table,
                                          T* __restrict__ dx) {
  const int64_t bins = g.bins(), plane = g.plane();
  const int64_t total = g.batch * g.channels * plane;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = t / (g.channels * plane), c = (t / plane) % g.channels;
    const int64_t cell = t % plane;
    const int64_t at[kRoiAxes] = {cell / (g.in[1] * g.in[2]), (cell / g.in[2]) % g.in[1],
                                  cell % g.in[2]};
    T sum = T(0);
    for (int64_t r = 0; r < g.rois; ++r) {
      const AlignRoi<T>& e = table[r];
      if (e.batch != n) continue;
      bool reach = true;
      for (int a = 0; a < kRoiAxes; ++a) reach &= e.lo[a] <= at[a] && at[a] <= e.hi[a];
      if (!reach) continue;
      int64_t k0[kRoiAxes], k1[kRoiAxes];
      for (int a = 0; a < kRoiAxes; ++a) {
        sample_span(e.axis[a], static_cast<double>(at[a] - 1), static_cast<double>(at[a] + 1),
                    k0[a], k1[a]);
      }
      const T* grad = dy + (r * g.channels + c) * bins;
      for (int64_t kz = k0[0]; kz < k1[0]; ++kz) {
        const T wz = sample_weight(e.axis[0], kz, at[0]);
        if (wz == T(0)) continue;
        const int64_t pz = kz / e.axis[0].grid;
        for (int64_t ky = k0[1]; ky < k1[1]; ++ky) {
          const T wy = sample_weight(e.axis[1], ky, at[1]);
          if (wy == T(0)) continue;
          const int64_t py = ky / e.axis[1].grid;
          const T wzy = roi_mul(wz, wy);
          for (int64_t kx = k0[2]; kx < k1[2]; ++kx) {
            const T wx = sample_weight(e.axis[2], kx, at[2]);
            if (wx == T(0)) continue;
            const int64_t px = kx / e.axis[2].grid;
            const T g_bin = grad[(pz * g.out[1] + py) * g.out[2] + px];
            sum = roi_add(sum, roi_div(roi_mul(g_bin, roi_mul(wzy, wx)), e.count));
          }
        }
      }
    }
    dx[t] = sum;
  }
}

template <typename T>
__global__ void roi_pool_prepare_kernel(const T* __restrict__ rois, RoiGeom g, T scale, int mode,
                                        PoolRoi* __restrict__ table, long long* status) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < g.rois;
       r += int64_t(gridDim.x) * blockDim.x) {
    const T* row = rois + r * g.row_width();
    PoolRoi e;
    const int problem = mode == kRoiPoolMode ? pool_row_problem(row, g, scale)
                                             : roi_row_problem(row, g);
    if (problem != kRoiOk) {
      atomicMin(status, static_cast<long long>(r));
      e.batch = -1;
      table[r] = e;
      continue;
    }
    e.batch = static_cast<int64_t>(row[0]);
    if (mode == kRoiPoolMode) {
      for (int a = 0; a < kRoiAxes; ++a) e.axis[a] = roi_pool_axis(row, g, a, scale);
    }
    table[r] = e;
  }
}

template <typename T>
__global__ void roi_pool_forward_kernel(const T* __restrict__ x, RoiGeom g,
                                        const PoolRoi* __restrict__ table, T* __restrict__ y,
                                        int64_t* __restrict__ indices) {
  const int64_t bins = g.bins(), per_roi = g.channels * bins, plane = g.plane();
  const int64_t total = g.rois * per_roi;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / per_roi, c = (t / bins) % g.channels, bin = t % bins;
    const PoolRoi& e = table[r];
    T best = T(0);
    int64_t where = -1;
    if (e.batch >= 0) {
      const int64_t p[kRoiAxes] = {bin / (g.out[1] * g.out[2]), (bin / g.out[2]) % g.out[1],
                                   bin % g.out[2]};
      int64_t s[kRoiAxes], f[kRoiAxes];
      bool empty = false;
      for (int a = 0; a < kRoiAxes; ++a) {
        pool_bin<T>(e.axis[a], p[a], s[a], f[a]);
        empty |= f[a] <= s[a];
      }
      if (!empty) {
        best = pool_floor<T>();
        const T* src = x + (e.batch * g.channels + c) * plane;
        for (int64_t zz = s[0]; zz < f[0]; ++zz) {
          for (int64_t yy = s[1]; yy < f[1]; ++yy) {
            const int64_t first = (zz * g.in[1] + yy) * g.in[2];
            for (int64_t xx = s[2]; xx < f[2]; ++xx) {
              const T v = src[first + xx];
              if (v > best) {
                best = v;
                where = first + xx;
              }
            }
          }
        }
      }
    }
    y[t] = best;
    if (indices) indices[t] = where;
  }
}

// Sort keys of roi_pool's backward: the flat cell of dx each recorded index adds to, or
// dx_size (past every cell: sum_runs_kernel skips it) for -1 and bad rows; values are the
// positions. A bad index (not in [-1, plane)) goes to status[1].
__global__ void roi_pool_keys_kernel(const int64_t* __restrict__ indices, RoiGeom g,
                                     const PoolRoi* __restrict__ table,
                                     uint64_t* __restrict__ keys, int64_t* __restrict__ values,
                                     long long* status) {
  const int64_t bins = g.bins(), per_roi = g.channels * bins, plane = g.plane();
  const int64_t total = g.rois * per_roi;
  const uint64_t past = static_cast<uint64_t>(g.batch * g.channels * plane);
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / per_roi, c = (t / bins) % g.channels, v = indices[t];
    const int64_t batch = table[r].batch;
    if (v < -1 || v >= plane) atomicMin(status + 1, static_cast<long long>(t));
    keys[t] = (v >= 0 && v < plane && batch >= 0)
                  ? static_cast<uint64_t>((batch * g.channels + c) * plane + v)
                  : past;
    values[t] = t;
  }
}

// The thread at the head of each run of equal keys sums dy over the run's positions (in
// increasing order, the sort being stable) and stores the cell; dx was zeroed before and
// keys at or past dx_size (no cell) are skipped.
template <typename T>
__global__ void roi_sum_runs_kernel(const uint64_t* __restrict__ keys,
                                    const int64_t* __restrict__ values, int64_t count,
                                    uint64_t dx_size, const T* __restrict__ dy,
                                    T* __restrict__ dx) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < count;
       t += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t key = keys[t];
    if (key >= dx_size || (t > 0 && keys[t - 1] == key)) continue;
    T s = T(0);
    for (int64_t u = t; u < count && keys[u] == key; ++u) s += dy[values[u]];
    dx[key] = s;
  }
}

// ---------------------------------------------------------------------------------------
// Launch plans. status: two int64 words, the first bad roi row and (pool backward) the
// first bad index position, g.rois and the index count when none.
// ---------------------------------------------------------------------------------------

template <class Launch>
void roi_status_init(const RoiGeom& g, long long* status, Launch&& launch) {
  launch(&roi_fill_kernel, 1u, status, int64_t(2),
         static_cast<long long>(g.rois * g.channels * g.bins() + g.rois));
}

template <typename T, class Workspace, class Launch>
void roi_align_forward_run(const RoiGeom& g, const T* x, const T* rois, T scale, bool aligned,
                           int64_t sampling_ratio, T* y, long long* status, Workspace& ws,
                           Launch&& launch) {
  roi_status_init(g, status, launch);
  if (g.rois == 0) return;
  AlignRoi<T>* table = ws.template get<AlignRoi<T>>(g.rois);
  launch(&roi_align_prepare_kernel<T>, blocks_for(g.rois), rois, g, scale, aligned,
         sampling_ratio, table, status);
  launch(&roi_align_forward_kernel<T>, blocks_for(g.rois * g.channels * g.bins()), x, g,
         static_cast<const AlignRoi<T>*>(table), y);
}

template <typename T, class Workspace, class Launch>
void roi_align_backward_run(const RoiGeom& g, const T* dy, const T* rois, T scale,
                            bool aligned, int64_t sampling_ratio, T* dx, long long* status,
                            Workspace& ws, Launch&& launch) {
  roi_status_init(g, status, launch);
  AlignRoi<T>* table = ws.template get<AlignRoi<T>>(g.rois);
  if (g.rois > 0) {
    launch(&roi_align_prepare_kernel<T>, blocks_for(g.rois), rois, g, scale, aligned,
           sampling_ratio, table, status);
  }
  launch(&roi_align_backward_kernel<T>, blocks_for(g.batch * g.channels * g.plane()), dy, g,
         static_cast<const AlignRoi<T>*>(table), dx);
}

template <typename T, class Workspace, class Launch>
void roi_pool_forward_run(const RoiGeom& g, const T* x, const T* rois, T scale, T* y,
                          int64_t* indices, long long* status, Workspace& ws, Launch&& launch) {
  roi_status_init(g, status, launch);
  if (g.rois == 0) return;
  PoolRoi* table = ws.template get<PoolRoi>(g.rois);
  launch(&roi_pool_prepare_kernel<T>, blocks_for(g.rois), rois, g, scale, int(kRoiPoolMode),
         table, status);
  launch(&roi_pool_forward_kernel<T>, blocks_for(g.rois * g.channels * g.bins()), x, g,
         static_cast<const PoolRoi*>(table), y, indices);
}

// roi_pool backward up to the sort: the row checks and the (key, position) pairs of every
// recorded index (count = R * C * bins of them). Returns the table for nothing else needs.
template <typename T, class Workspace, class Launch>
void roi_pool_backward_keys_run(const RoiGeom& g, const T* rois, const int64_t* indices,
                                uint64_t* keys, int64_t* values, long long* status,
                                Workspace& ws, Launch&& launch) {
  roi_status_init(g, status, launch);
  if (g.rois == 0) return;
  PoolRoi* table = ws.template get<PoolRoi>(g.rois);
  launch(&roi_pool_prepare_kernel<T>, blocks_for(g.rois), rois, g, T(1), int(kRoiRowsOnly),
         table, status);
  launch(&roi_pool_keys_kernel, blocks_for(g.rois * g.channels * g.bins()), indices, g,
         static_cast<const PoolRoi*>(table), keys, values, status);
}

}  // namespace fastconv::cuda
