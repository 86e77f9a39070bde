// RoI align and RoI pool, forward and backward, on 2-D and 3-D inputs (semantics in
// fastconv/roi.hpp: torchvision's kernels, written per axis).
//
// Layout: the channel loops are the vector loops. Channels are cut into blocks of at most
// kRoiMaxVecs vectors (fewer for large planes, so that a block of one image fits in about
// 1 MiB, i.e. in L2); a task copies its block of its image channels-last, (D, H, W, block
// width) with the padding lanes zero, so a bilinear tap is a scalar weight times a few
// contiguous vectors, and results go back channels-first through vector tile transposes.
//
// RoI align builds, per roi and axis, the (cell, weight) taps of every bin: the sum of the
// weights its samples give each cell (sample_taps), so a bin reads each cell once and the
// weights are shared by every channel. Samples outside [-1, n] are never visited
// (sample_span), so a roi far larger than the input costs what its visible part costs.
//
// Determinism: every output and every input-gradient cell is computed by one task from
// read-only data, in an order fixed by the call alone, so results are bitwise identical for
// any thread count (and no float atomics are needed):
//   forward: tasks (image, channel block, share of the image's rois); a roi's outputs for
//     a block are computed by one task;
//   align backward, a gather by owner: tasks (image, channel block, band of rows) hold a
//     private accumulator of their band, zeroed, and add the rois of their image in
//     increasing roi order, bins in row-major order, taps in cell order; the band split
//     (which depends on the thread count) changes which task owns a cell, never the order of
//     its terms. Memory per thread: one band (at most about 1 MiB) and one roi's gradient
//     block, no per-roi partial planes;
//   pool backward: tasks (image, channel block) own those planes and add dy at the recorded
//     indices in increasing roi, then bin order.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/pyarray.hpp"
#include "fastconv/roi.hpp"

namespace fastconv {

namespace {

template <typename T>
const RoiKernelFns<T>& roi_fns() {
  static const RoiKernels& k =
      for_cpu_path(avx512::roi_kernels, avx2::roi_kernels, baseline::roi_kernels)();
  return of_dtype<T>(k);
}

// Channel blocks of at most kRoiMaxVecs vectors (fewer for large planes, so that one block
// of one image stays within kBlockBytes); the last may be narrower (whole vectors, padded).
constexpr int64_t kBlockBytes = int64_t(1) << 20;

struct ChannelBlocks {
  int64_t channels, lanes, block, count;

  ChannelBlocks(int64_t c, int64_t l, int64_t plane, int64_t item)
      : channels(c), lanes(l),
        block(l * std::clamp<int64_t>(kBlockBytes / std::max<int64_t>(1, plane * l * item), 1,
                                      kRoiMaxVecs)),
        count((c + block - 1) / block) {}
  int64_t first(int64_t b) const { return b * block; }
  int64_t real(int64_t b) const { return std::min(block, channels - first(b)); }
  int64_t vecs(int64_t b) const { return (real(b) + lanes - 1) / lanes; }
  int64_t width(int64_t b) const { return vecs(b) * lanes; }
};

// Calls with less work than this many elements (inputs plus outputs) run on the calling
// thread: waking the pool would cost more than it saves.
constexpr int64_t kParallelWork = int64_t(1) << 16;

bool worth_threads(const RoiGeom& g) {
  return g.batch * g.channels * g.plane() + g.rois * g.channels * g.bins() > kParallelWork;
}

// Per-thread scratch reused across calls (no per-call allocation or page faults); each
// Slot is a separate buffer.
template <typename T, int Slot>
T* scratch(int64_t count) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(static_cast<size_t>(count));
  return buffer.data();
}

// Rows of rois checked before anything runs: the first bad row raises ValueError.
template <typename T, typename Check>
void check_rows(const char* op, const RoiGeom& g, const T* rois, Check problem_of) {
  const int64_t w = g.row_width();
  for (int64_t r = 0; r < g.rois; ++r) {
    const int problem = problem_of(rois + r * w);
    if (problem != kRoiOk) raise_roi_problem(op, problem, r, rois + r * w, g);
  }
}

// Roi indices grouped by image, in increasing roi order within each image.
struct ImageRois {
  std::vector<int64_t> order, begin;

  template <typename T>
  ImageRois(const RoiGeom& g, const T* rois) : order(g.rois), begin(g.batch + 1, 0) {
    const int64_t w = g.row_width();
    for (int64_t r = 0; r < g.rois; ++r) ++begin[static_cast<int64_t>(rois[r * w]) + 1];
    for (int64_t n = 0; n < g.batch; ++n) begin[n + 1] += begin[n];
    std::vector<int64_t> next(begin.begin(), begin.end() - 1);
    for (int64_t r = 0; r < g.rois; ++r) order[next[static_cast<int64_t>(rois[r * w])]++] = r;
  }
};

// The RoI-align taps of one roi (see the file comment), rebuilt in place for each roi a
// task visits, with its sample count and, per axis, the lowest and highest cell it reads.
template <typename T>
struct RoiTaps {
  std::vector<int64_t> begin[kRoiAxes], cell[kRoiAxes];
  std::vector<T> weight[kRoiAxes];
  int64_t lo[kRoiAxes], hi[kRoiAxes];
  T count;

  void build(const RoiGeom& g, const T* row, T scale, bool aligned, int64_t sampling_ratio) {
    RoiAxis<T> axes[kRoiAxes];
    for (int a = 0; a < kRoiAxes; ++a) {
      axes[a] = roi_align_axis(row, g, a, scale, aligned, sampling_ratio);
      // At most two taps per sample and one per cell in a bin.
      const int64_t cap = axes[a].bins * std::min(2 * axes[a].grid, axes[a].size);
      if (static_cast<int64_t>(cell[a].size()) < cap) {
        cell[a].resize(cap);
        weight[a].resize(cap);
      }
      begin[a].resize(axes[a].bins + 1);
      fill_axis(axes[a], begin[a].data(), cell[a].data(), weight[a].data(), lo[a], hi[a]);
    }
    count = sample_count(axes);
  }

  static void fill_axis(const RoiAxis<T>& a, int64_t* first, int64_t* cells, T* weights,
                        int64_t& lo, int64_t& hi) {
    int64_t k0 = 0, k1 = 0, pos = 0;
    sample_span(a, -1.0, static_cast<double>(a.size), k0, k1);
    lo = a.size;
    hi = -1;
    for (int64_t p = 0; p < a.bins; ++p) {
      first[p] = pos;
      const int64_t start = p * a.grid;
      const int64_t from = std::max(k0, start), to = std::min(k1, start + a.grid);
      for (int64_t k = from; k < to; ++k) {
        int64_t c[2];
        T wt[2];
        if (!sample_taps(sample_position(a, p, k - start), a.size, c[0], c[1], wt[0], wt[1]))
          continue;
        // Cells never decrease along a bin, so a repeated cell is one of the last two taps.
        for (int j = 0; j < 2; ++j) {
          if (pos > first[p] && cells[pos - 1] == c[j]) {
            weights[pos - 1] += wt[j];
          } else if (pos - 1 > first[p] && cells[pos - 2] == c[j]) {
            weights[pos - 2] += wt[j];
          } else {
            cells[pos] = c[j];
            weights[pos] = wt[j];
            ++pos;
          }
        }
      }
      if (pos > first[p]) {
        lo = std::min(lo, cells[first[p]]);
        hi = std::max(hi, cells[pos - 1]);
      }
    }
    first[a.bins] = pos;
  }

  // Flat rows (z * H + y) the taps reach: [row_lo, row_hi], empty when row_hi < row_lo.
  bool reaches(const RoiGeom& g, int64_t row0, int64_t row1) const {
    if (lo[0] > hi[0] || lo[1] > hi[1] || lo[2] > hi[2]) return false;
    return lo[0] * g.in[1] + lo[1] < row1 && hi[0] * g.in[1] + hi[1] >= row0;
  }

  AlignTaps<T> view(const RoiGeom& g) const {
    AlignTaps<T> t;
    for (int a = 0; a < kRoiAxes; ++a) {
      t.axis[a] = AxisTaps<T>{begin[a].data(), cell[a].data(), weight[a].data()};
    }
    t.out = g.out;
    return t;
  }
};

// The forward passes: one parallel region of tasks (image, channel block, share of that
// image's rois). A task copies its block of its image channels-last into a per-thread
// buffer (a block fits L2), then runs `per_roi(r, block, buffer, thread slot)` for its rois
// in increasing order. Images with more rois than tasks get shares so that every thread
// has work; an output belongs to one task, so the split never changes a bit.
template <typename T, typename PerRoi>
void forward_by_block(const RoiGeom& g, const T* x, const T* rois, const ChannelBlocks& cb,
                      const RoiKernelFns<T>& k, PerRoi per_roi) {
  if (g.rois == 0) return;
  const ImageRois images(g, rois);
  const int64_t plane = g.plane(), owners = g.batch * cb.count;
  const int64_t want = 2 * static_cast<int64_t>(omp_get_max_threads());
  const int64_t shares = std::min(g.rois, owners >= want ? 1 : (want + owners - 1) / owners);
  const int64_t tasks = owners * shares;
#pragma omp parallel if (worth_threads(g))
  {
    T* buf = scratch<T, 0>(plane * cb.block);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t n = t / (cb.count * shares), b = (t / shares) % cb.count, s = t % shares;
      const int64_t first = images.begin[n], len = images.begin[n + 1] - first;
      const int64_t i0 = first + len * s / shares, i1 = first + len * (s + 1) / shares;
      if (i0 == i1) continue;
      const int64_t w = cb.width(b), real = cb.real(b);
      k.transpose(x + (n * g.channels + cb.first(b)) * plane, plane, real, plane, buf, w);
      for (int64_t p = 0; p < plane && real < w; ++p) {
        std::fill(buf + p * w + real, buf + (p + 1) * w, T(0));
      }
      for (int64_t i = i0; i < i1; ++i) per_roi(images.order[i], b, buf);
    }
  }
}

template <typename T>
void align_forward_impl(const RoiGeom& g, const T* x, const T* rois, T* y, T scale, bool aligned,
                        int64_t sampling_ratio) {
  const RoiKernelFns<T>& k = roi_fns<T>();
  const ChannelBlocks cb(g.channels, k.lanes, g.plane(), sizeof(T));
  const int64_t bins = g.bins(), w_row = g.row_width();
  forward_by_block(g, x, rois, cb, k, [&](int64_t r, int64_t b, const T* buf) {
    thread_local RoiTaps<T> taps;
    taps.build(g, rois + r * w_row, scale, aligned, sampling_ratio);
    const int64_t w = cb.width(b);
    T* local = scratch<T, 1>(bins * w);
    const int64_t pitch[kRoiAxes] = {g.in[1] * g.in[2] * w, g.in[2] * w, w};
    k.align_forward(taps.view(g), buf, pitch, cb.vecs(b), taps.count, local);
    k.transpose(local, w, bins, cb.real(b), y + (r * g.channels + cb.first(b)) * bins, bins);
  });
}

template <typename T>
void pool_forward_impl(const RoiGeom& g, const T* x, const T* rois, T* y, int64_t* indices,
                       T scale) {
  const RoiKernelFns<T>& k = roi_fns<T>();
  const ChannelBlocks cb(g.channels, k.lanes, g.plane(), sizeof(T));
  const int64_t bins = g.bins(), w_row = g.row_width();
  forward_by_block(g, x, rois, cb, k, [&](int64_t r, int64_t b, const T* buf) {
    thread_local std::vector<int64_t> edges[kRoiAxes][2];
    const T* row = rois + r * w_row;
    PoolBins bb;
    for (int a = 0; a < kRoiAxes; ++a) {
      const PoolAxis ax = roi_pool_axis(row, g, a, scale);
      edges[a][0].resize(g.out[a]);
      edges[a][1].resize(g.out[a]);
      for (int64_t p = 0; p < g.out[a]; ++p) pool_bin<T>(ax, p, edges[a][0][p], edges[a][1][p]);
      bb.start[a] = edges[a][0].data();
      bb.end[a] = edges[a][1].data();
    }
    bb.out = g.out;
    const int64_t w = cb.width(b), real = cb.real(b);
    T* local = scratch<T, 1>(bins * w);
    int64_t* at = scratch<int64_t, 2>(bins * w);
    const int64_t pitch[kRoiAxes] = {g.in[1] * g.in[2] * w, g.in[2] * w, w};
    k.pool_forward(bb, buf, pitch, cb.vecs(b), g.in[1], g.in[2], local, at);
    k.transpose(local, w, bins, real, y + (r * g.channels + cb.first(b)) * bins, bins);
    if (!indices) return;
    int64_t* idx = indices + (r * g.channels + cb.first(b)) * bins;
    for (int64_t j = 0; j < real; ++j) {
      for (int64_t i = 0; i < bins; ++i) idx[j * bins + i] = at[i * w + j];
    }
  });
}

template <typename T>
void align_backward_impl(const RoiGeom& g, const T* dy, const T* rois, T* dx, T scale,
                         bool aligned, int64_t sampling_ratio) {
  const RoiKernelFns<T>& k = roi_fns<T>();
  const ChannelBlocks cb(g.channels, k.lanes, g.plane(), sizeof(T));
  const ImageRois images(g, rois);
  const int64_t plane = g.plane(), bins = g.bins(), width = g.in[2], w_row = g.row_width();
  const int64_t rows = g.in[0] * g.in[1];
  // Bands of rows: an accumulator of at most kBlockBytes, and enough tasks for every thread.
  int64_t band = std::max<int64_t>(
      1, kBlockBytes / (width * cb.block * static_cast<int64_t>(sizeof(T))));
  const int64_t want = 2 * static_cast<int64_t>(omp_get_max_threads());
  const int64_t owners = g.batch * cb.count;
  if (owners * ((rows + band - 1) / band) < want) {
    band = std::max<int64_t>(1, rows / ((want + owners - 1) / owners));
  }
  band = std::min(band, rows);
  const int64_t bands = (rows + band - 1) / band, tasks = owners * bands;
#pragma omp parallel if (worth_threads(g))
  {
    T* acc = scratch<T, 0>(band * width * cb.block);
    T* grad = scratch<T, 1>(bins * cb.block);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      thread_local RoiTaps<T> taps;
      const int64_t n = t / (cb.count * bands), b = (t / bands) % cb.count, s = t % bands;
      const int64_t w = cb.width(b), real = cb.real(b), c0 = cb.first(b);
      const int64_t row0 = s * band, row1 = std::min(rows, row0 + band);
      std::fill(acc, acc + (row1 - row0) * width * w, T(0));
      std::fill(grad, grad + bins * w, T(0));
      const int64_t pitch[2] = {width * w, w};
      for (int64_t i = images.begin[n]; i < images.begin[n + 1]; ++i) {
        const int64_t r = images.order[i];
        taps.build(g, rois + r * w_row, scale, aligned, sampling_ratio);
        if (!taps.reaches(g, row0, row1)) continue;
        k.transpose(dy + (r * g.channels + c0) * bins, bins, real, bins, grad, w);
        for (int64_t q = 0; q < bins * w; ++q) grad[q] /= taps.count;
        k.align_backward(taps.view(g), grad, cb.vecs(b), g.in[1], row0, row1, pitch, acc);
      }
      k.transpose(acc, w, (row1 - row0) * width, real,
                  dx + (n * g.channels + c0) * plane + row0 * width, plane);
    }
  }
}

template <typename T>
void pool_backward_impl(const RoiGeom& g, const T* dy, const int64_t* indices, const T* rois,
                        T* dx) {
  const ImageRois images(g, rois);
  const int64_t plane = g.plane(), bins = g.bins();
  // Tasks own the planes of a block of channels of one image (at most kBlockBytes of dx),
  // so each roi's dy and indices for the block are one contiguous read.
  const int64_t block = std::clamp<int64_t>(
      kBlockBytes / (2 * plane * static_cast<int64_t>(sizeof(T))), 1, g.channels);
  const int64_t blocks = (g.channels + block - 1) / block, tasks = g.batch * blocks;
#pragma omp parallel for schedule(dynamic, 1) if (worth_threads(g))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t n = t / blocks, c0 = (t % blocks) * block;
    const int64_t c1 = std::min(g.channels, c0 + block);
    T* planes = dx + (n * g.channels + c0) * plane;
    std::fill(planes, planes + (c1 - c0) * plane, T(0));
    for (int64_t i = images.begin[n]; i < images.begin[n + 1]; ++i) {
      const int64_t r = images.order[i];
      const T* src = dy + (r * g.channels + c0) * bins;
      const int64_t* at = indices + (r * g.channels + c0) * bins;
      for (int64_t c = 0; c < c1 - c0; ++c) {
        T* dst = planes + c * plane;
        for (int64_t q = 0; q < bins; ++q) {
          if (at[c * bins + q] >= 0) dst[at[c * bins + q]] += src[c * bins + q];
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Bindings
// ---------------------------------------------------------------------------------------

// The geometry of a backward call: dx (N, C, *in), dy (R, C, *out).
RoiGeom backward_geom(const char* op, const py::array& dy, const py::array& rois,
                      const py::array& dx) {
  const RoiDims dy_shape = shape_of(dy), dx_shape = shape_of(dx);
  FC_CHECK(dy_shape.size() == dx_shape.size() && dy_shape.size() >= 2, op, ": dy shape ",
           tuple_str(dy_shape), " must be (R, C, *output_size) for dx shape ",
           tuple_str(dx_shape));
  const RoiGeom g = make_roi_geom(op, dx_shape, "dx", shape_of(rois),
                                  RoiDims(dy_shape.begin() + 2, dy_shape.end()));
  check_shape(dy, roi_out_shape(g), "dy");
  return g;
}

void roi_align_forward_py(const py::array& x, const py::array& rois, py::array& out,
                          const RoiDims& output_size, double spatial_scale,
                          int64_t sampling_ratio, bool aligned) {
  const char* op = "roi_align";
  check_roi_scale(op, spatial_scale);
  check_sampling_ratio(op, sampling_ratio);
  const RoiGeom g = make_roi_geom(op, shape_of(x), "x", shape_of(rois), output_size);
  check_shape(out, roi_out_shape(g), "out");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    const T* rp = input_ptr<T>(rois, "rois");
    T* yp = output_ptr<T>(out, "out");
    const T scale = static_cast<T>(spatial_scale);
    check_rows(op, g, rp, [&](const T* row) {
      return align_row_problem(row, g, scale, aligned, sampling_ratio);
    });
    py::gil_scoped_release release;
    align_forward_impl(g, xp, rp, yp, scale, aligned, sampling_ratio);
  });
}

void roi_align_backward_py(const py::array& dy, const py::array& rois, py::array& dx,
                           double spatial_scale, int64_t sampling_ratio, bool aligned) {
  const char* op = "roi_align_backward";
  check_roi_scale(op, spatial_scale);
  check_sampling_ratio(op, sampling_ratio);
  const RoiGeom g = backward_geom(op, dy, rois, dx);
  dispatch_float(float_dtype(dy, "dy"), [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dy, "dy");
    const T* rp = input_ptr<T>(rois, "rois");
    T* dxp = output_ptr<T>(dx, "dx");
    const T scale = static_cast<T>(spatial_scale);
    check_rows(op, g, rp, [&](const T* row) {
      return align_row_problem(row, g, scale, aligned, sampling_ratio);
    });
    py::gil_scoped_release release;
    align_backward_impl(g, dyp, rp, dxp, scale, aligned, sampling_ratio);
  });
}

void roi_pool_forward_py(const py::array& x, const py::array& rois, py::array& out,
                         std::optional<py::array> indices, const RoiDims& output_size,
                         double spatial_scale) {
  const char* op = "roi_pool";
  check_roi_scale(op, spatial_scale);
  const RoiGeom g = make_roi_geom(op, shape_of(x), "x", shape_of(rois), output_size);
  check_shape(out, roi_out_shape(g), "out");
  if (indices) check_shape(*indices, roi_out_shape(g), "indices");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    FC_CHECK(sizeof(T) == 8 || g.plane() < (int64_t(1) << 31), op, ": float32 planes of 2^31 "
             "cells or more are not supported on the CPU (x shape ", tuple_str(shape_of(x)),
             "); use float64");
    const T* xp = input_ptr<T>(x, "x");
    const T* rp = input_ptr<T>(rois, "rois");
    T* yp = output_ptr<T>(out, "out");
    int64_t* ip = nullptr;
    if (indices) {
      index_input(*indices, "indices");
      FC_CHECK(indices->writeable(), "indices must be writeable");
      ip = static_cast<int64_t*>(indices->mutable_data());
    }
    const T scale = static_cast<T>(spatial_scale);
    check_rows(op, g, rp, [&](const T* row) { return pool_row_problem(row, g, scale); });
    py::gil_scoped_release release;
    pool_forward_impl(g, xp, rp, yp, ip, scale);
  });
}

void roi_pool_backward_py(const py::array& dy, const py::array& indices, const py::array& rois,
                          py::array& dx) {
  const char* op = "roi_pool_backward";
  const RoiGeom g = backward_geom(op, dy, rois, dx);
  check_shape(indices, roi_out_shape(g), "indices");
  const int64_t* ip = index_input(indices, "indices");
  const int64_t count = g.rois * g.channels * g.bins(), plane = g.plane();
  int64_t bad = count;
  {
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) reduction(min : bad) if (count > kParallelWork)
    for (int64_t j = 0; j < count; ++j) {
      if ((ip[j] < -1 || ip[j] >= plane) && j < bad) bad = j;
    }
  }
  FC_CHECK(bad == count, op, ": indices must lie in [-1, ", plane, ") (-1: an empty bin; else a "
           "cell of one plane of dx shape ", tuple_str(shape_of(dx)), "), got ",
           ip[bad == count ? 0 : bad], " at flat position ", bad, " of indices shape ",
           tuple_str(shape_of(indices)));
  dispatch_float(float_dtype(dy, "dy"), [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dy, "dy");
    const T* rp = input_ptr<T>(rois, "rois");
    T* dxp = output_ptr<T>(dx, "dx");
    check_rows(op, g, rp, [&](const T* row) { return roi_row_problem(row, g); });
    py::gil_scoped_release release;
    pool_backward_impl(g, dyp, ip, rp, dxp);
  });
}

}  // namespace

void bind_roi(py::module_& m) {
  m.def("roi_align_forward", &roi_align_forward_py, py::arg("x"), py::arg("rois"),
        py::arg("out"), py::arg("output_size"), py::arg("spatial_scale"),
        py::arg("sampling_ratio"), py::arg("aligned"),
        "out (R, C, *output_size) <- RoI align of x (N, C, *spatial) over rois (R, 1 + 2 dims).");
  m.def("roi_align_backward", &roi_align_backward_py, py::arg("dy"), py::arg("rois"),
        py::arg("dx"), py::arg("spatial_scale"), py::arg("sampling_ratio"), py::arg("aligned"),
        "dx (N, C, *spatial) <- the adjoint of roi_align_forward applied to dy (R, C, *out).");
  m.def("roi_pool_forward", &roi_pool_forward_py, py::arg("x"), py::arg("rois"), py::arg("out"),
        py::arg("indices").none(true), py::arg("output_size"), py::arg("spatial_scale"),
        "out (R, C, *output_size) <- RoI max pooling of x; indices (int64, or None) <- the flat "
        "cells of the maxima in their (batch index, c) planes, -1 for empty bins.");
  m.def("roi_pool_backward", &roi_pool_backward_py, py::arg("dy"), py::arg("indices"),
        py::arg("rois"), py::arg("dx"),
        "dx (N, C, *spatial) <- dy (R, C, *out) added at indices in the planes of each roi's "
        "image, in increasing roi order.");
}

}  // namespace fastconv
