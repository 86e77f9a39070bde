// im2col / col2im for any number of spatial dims.
//
// Output positions of a block are cut into runs along the last spatial dim. For one tap
// (kernel offset) and one run, the leading input coordinates are fixed, so the run is a
// zero prefix, a strided copy of the input row and a zero suffix; the valid middle is found
// in closed form, so no per-element bounds test is needed. The same runs drive the
// forward copy and the adjoint accumulation.
#include "fastconv/im2col.hpp"

#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

// A run of consecutive output positions sharing every coordinate but the last.
struct Run {
  int64_t col;         // first column of the run in the block (l - l0)
  int64_t len;         // positions in the run
  int64_t last_start;  // last-dim output coordinate of the first position
  int64_t lead;        // index into Runs::lead_coords of its leading coordinates
};

struct Runs {
  std::vector<Run> runs;
  std::vector<int64_t> lead_coords;  // dims-1 output coordinates per run
};

Runs split_runs(const WindowGeom& g, int64_t l0, int64_t l1) {
  const int64_t dims = g.dims();
  const int64_t last = g.out[dims - 1];
  Runs r;
  std::vector<int64_t> coord(dims);
  for (int64_t l = l0; l < l1;) {
    int64_t rest = l;
    for (int64_t d = dims - 1; d >= 0; --d) {
      coord[d] = rest % g.out[d];
      rest /= g.out[d];
    }
    const int64_t len = std::min(last - coord[dims - 1], l1 - l);
    r.runs.push_back({l - l0, len, coord[dims - 1], static_cast<int64_t>(r.lead_coords.size())});
    r.lead_coords.insert(r.lead_coords.end(), coord.begin(), coord.end() - 1);
    l += len;
  }
  return r;
}

// Calls visit(col, len, src, step) for every piece of every run under tap `tap` (kernel
// offset per dim): src is the input offset of the first element (or -1 for padding) and
// step the input stride between consecutive positions.
template <typename Visit>
void for_each_piece(const WindowGeom& g, const Runs& runs, const int64_t* tap, Visit&& visit) {
  const int64_t dims = g.dims();
  const int64_t d_last = dims - 1;
  const int64_t n_last = g.in[d_last];
  const int64_t s_last = g.stride[d_last];
  // Input coordinate along the last dim is o * s + shift.
  const int64_t shift = tap[d_last] * g.dilation[d_last] - g.pad_before[d_last];
  // Valid o satisfy 0 <= o*s + shift <= n_last - 1.
  const int64_t lo = shift >= 0 ? 0 : (-shift + s_last - 1) / s_last;
  const int64_t hi = (n_last - 1 - shift) < 0 ? 0 : (n_last - 1 - shift) / s_last + 1;
  for (const Run& run : runs.runs) {
    const int64_t* lead = runs.lead_coords.data() + run.lead;
    int64_t base = 0;
    bool inside = true;
    for (int64_t d = 0; d < d_last; ++d) {
      const int64_t i = lead[d] * g.stride[d] + tap[d] * g.dilation[d] - g.pad_before[d];
      if (i < 0 || i >= g.in[d]) {
        inside = false;
        break;
      }
      base = base * g.in[d] + i;
    }
    const int64_t o0 = run.last_start, o1 = run.last_start + run.len;
    if (!inside) {
      visit(run.col, run.len, int64_t(-1), int64_t(0));
      continue;
    }
    const int64_t a = std::clamp(lo, o0, o1), b = std::clamp(hi, a, o1);
    if (a > o0) visit(run.col, a - o0, int64_t(-1), int64_t(0));
    if (b > a) visit(run.col + (a - o0), b - a, base * n_last + a * s_last + shift, s_last);
    if (o1 > b) visit(run.col + (b - o0), o1 - b, int64_t(-1), int64_t(0));
  }
}

// Steps `tap` through the kernel in row-major order.
void next_tap(const WindowGeom& g, std::vector<int64_t>& tap) {
  for (int64_t d = g.dims() - 1; d >= 0; --d) {
    if (++tap[d] < g.kernel[d]) return;
    tap[d] = 0;
  }
}

}  // namespace

namespace {

// One row of the column matrix: the input plane `src_plane` under kernel offset `tap`.
template <typename T>
void im2col_row(const WindowGeom& g, const Runs& runs, const T* src_plane, const int64_t* tap,
                T* row) {
  for_each_piece(g, runs, tap, [&](int64_t col, int64_t len, int64_t src, int64_t step) {
    T* __restrict dst = row + col;
    if (src < 0) {
      for (int64_t j = 0; j < len; ++j) dst[j] = T(0);
    } else if (step == 1) {
      // Pieces are as short as one output row; an inline loop beats a memcpy call here.
      const T* __restrict s = src_plane + src;
      for (int64_t j = 0; j < len; ++j) dst[j] = s[j];
    } else {
      const T* s = src_plane + src;
      for (int64_t j = 0; j < len; ++j) dst[j] = s[j * step];
    }
  });
}

template <typename T>
void im2col_runs(const WindowGeom& g, const Runs& runs, const T* image, int64_t c0, int64_t c1,
                 T* cols, int64_t ld) {
  const int64_t plane = g.in_plane();
  const int64_t kvol = g.kernel_volume();
  std::vector<int64_t> tap(g.dims());
  for (int64_t c = c0; c < c1; ++c) {
    std::fill(tap.begin(), tap.end(), 0);
    for (int64_t k = 0; k < kvol; ++k, next_tap(g, tap)) {
      im2col_row(g, runs, image + c * plane, tap.data(), cols + ((c - c0) * kvol + k) * ld);
    }
  }
}

template <typename T>
void col2im_runs(const WindowGeom& g, const Runs& runs, const T* cols, int64_t ld, int64_t c0,
                 int64_t c1, T* image) {
  const int64_t plane = g.in_plane();
  const int64_t kvol = g.kernel_volume();
  std::vector<int64_t> tap(g.dims());
  for (int64_t c = c0; c < c1; ++c) {
    T* dst_plane = image + c * plane;
    std::fill(tap.begin(), tap.end(), 0);
    for (int64_t k = 0; k < kvol; ++k, next_tap(g, tap)) {
      const T* row = cols + ((c - c0) * kvol + k) * ld;
      for_each_piece(g, runs, tap.data(), [&](int64_t col, int64_t len, int64_t src, int64_t step) {
        if (src < 0) return;
        T* __restrict d = dst_plane + src;
        const T* __restrict s = row + col;
        if (step == 1) {
          // The unit-stride case is the common one; a loop of its own vectorizes.
          for (int64_t j = 0; j < len; ++j) d[j] += s[j];
        } else {
          for (int64_t j = 0; j < len; ++j) d[j * step] += s[j];
        }
      });
    }
  }
}

}  // namespace

template <typename T>
void im2col_block(const WindowGeom& g, const T* image, int64_t c0, int64_t c1, int64_t l0,
                  int64_t l1, T* cols, int64_t ld) {
  im2col_runs(g, split_runs(g, l0, l1), image, c0, c1, cols, ld);
}

template <typename T>
void col2im_block(const WindowGeom& g, const T* cols, int64_t ld, int64_t c0, int64_t c1,
                  int64_t l0, int64_t l1, T* image) {
  col2im_runs(g, split_runs(g, l0, l1), cols, ld, c0, c1, image);
}

template void im2col_block<float>(const WindowGeom&, const float*, int64_t, int64_t, int64_t,
                                  int64_t, float*, int64_t);
template void im2col_block<double>(const WindowGeom&, const double*, int64_t, int64_t, int64_t,
                                   int64_t, double*, int64_t);
template void col2im_block<float>(const WindowGeom&, const float*, int64_t, int64_t, int64_t,
                                  int64_t, int64_t, float*);
template void col2im_block<double>(const WindowGeom&, const double*, int64_t, int64_t, int64_t,
                                   int64_t, int64_t, double*);

namespace {

using Dims = std::vector<int64_t>;

void im2col_py(const py::array& x, py::array& cols, const Dims& kernel, const Dims& stride,
               const Dims& pad_before, const Dims& pad_after, const Dims& dilation) {
  const WindowGeom g =
      make_image_geom("im2col", shape_of(x), kernel, stride, pad_before, pad_after, dilation);
  const int64_t rows = g.channels * g.kernel_volume(), L = g.out_plane();
  check_shape(cols, {g.batch, rows, L}, "cols");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* src = input_ptr<T>(x, "x");
    T* dst = output_ptr<T>(cols, "cols");
    const int64_t plane = g.in_plane();
    py::gil_scoped_release release;
    const Runs runs = split_runs(g, 0, L);
    // One job per output row, so that few channels with large kernels still use every
    // thread.
#pragma omp parallel
    {
      std::vector<int64_t> tap(g.dims());
#pragma omp for schedule(static)
      for (int64_t job = 0; job < g.batch * rows; ++job) {
        const int64_t n = job / rows, r = job % rows;
        const int64_t c = r / g.kernel_volume();
        for (int64_t d = g.dims() - 1, k = r % g.kernel_volume(); d >= 0; --d) {
          tap[d] = k % g.kernel[d];
          k /= g.kernel[d];
        }
        im2col_row(g, runs, src + (n * g.channels + c) * plane, tap.data(), dst + job * L);
      }
    }
  });
}

void col2im_py(const py::array& cols, py::array& x, const Dims& kernel, const Dims& stride,
               const Dims& pad_before, const Dims& pad_after, const Dims& dilation) {
  const WindowGeom g =
      make_image_geom("col2im", shape_of(x), kernel, stride, pad_before, pad_after, dilation);
  const int64_t rows = g.channels * g.kernel_volume(), L = g.out_plane();
  check_shape(cols, {g.batch, rows, L}, "cols");
  dispatch_float(float_dtype(cols, "cols"), [&](auto zero) {
    using T = decltype(zero);
    const T* src = input_ptr<T>(cols, "cols");
    T* dst = output_ptr<T>(x, "output");
    const int64_t plane = g.in_plane();
    py::gil_scoped_release release;
    const Runs runs = split_runs(g, 0, L);
    // Rows of channel c only touch channel c, so (image, channel) jobs never collide.
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < g.batch * g.channels; ++job) {
      const int64_t n = job / g.channels, c = job % g.channels;
      T* image = dst + n * g.channels * plane;
      std::fill(image + c * plane, image + (c + 1) * plane, T(0));
      col2im_runs(g, runs, src + (n * rows + c * g.kernel_volume()) * L, L, c, c + 1, image);
    }
  });
}

}  // namespace

void bind_im2col(py::module_& m) {
  m.def("im2col", &im2col_py, py::arg("x"), py::arg("cols"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"), py::arg("dilation"),
        "cols (N, C*prod(kernel), L) <- windows of x (N, C, *spatial).");
  m.def("col2im", &col2im_py, py::arg("cols"), py::arg("output"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"), py::arg("dilation"),
        "output (N, C, *spatial) <- sum of overlapping columns (adjoint of im2col).");
}

}  // namespace fastconv
