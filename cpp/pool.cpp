// Max and average pooling, forward and backward, for any number of spatial dims.
//
// A window is a box, so its intersection with the input (and with the padded extent) is a
// box whose bounds follow per dim in closed form; they are tabulated once per call, and no
// per-element bounds test is needed. Work is cut into rows (all positions of one (n, c)
// plane sharing every coordinate but the last); each row is computed on its own from
// read-only data, so results are bitwise identical for any thread count. Within a row the
// kernels are output-chunk-major (see simd/pool_rows.inl): a vector of outputs keeps its
// running max and winner, or its sums, in registers over every tap of the window, visited
// in row-major scan order (so the first maximum wins). The average-pool adjoint runs per
// input row over the outputs covering it, so it needs no atomics either.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/geometry.hpp"
#include "fastconv/pool_rows.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

Dims pitches(const Dims& extent) {
  Dims p(extent.size(), 1);
  for (int64_t d = static_cast<int64_t>(extent.size()) - 2; d >= 0; --d) {
    p[d] = p[d + 1] * extent[d + 1];
  }
  return p;
}

PoolPlan make_plan(const char* op, const Dims& x_shape, const Dims& kernel, const Dims& stride,
                   const Dims& pad_before, const Dims& pad_after, bool ceil_mode,
                   const char* x_name) {
  FC_CHECK(x_shape.size() >= 3, op, ": ", x_name,
           " must be (N, C, *spatial) with at least one spatial dim, got shape ",
           tuple_str(x_shape));
  PoolPlan p;
  const Dims in(x_shape.begin() + 2, x_shape.end());
  p.g = make_window_geom(op, x_shape[0], x_shape[1], in, kernel, stride, pad_before, pad_after,
                         Dims(in.size(), 1), ceil_mode, PadLimit::kPool);
  const WindowGeom& g = p.g;
  p.in_plane = g.in_plane();
  p.out_plane = g.out_plane();
  p.in_last = g.in.back();
  p.out_last = g.out.back();
  p.in_pitch = pitches(g.in);
  p.out_pitch = pitches(g.out);
  p.out_tab.resize(g.dims());
  for (int64_t d = 0; d < g.dims(); ++d) {
    OutTable& t = p.out_tab[d];
    const int64_t n = g.in[d], k = g.kernel[d], s = g.stride[d];
    t.lo.resize(g.out[d]);
    t.hi.resize(g.out[d]);
    t.padded.resize(g.out[d]);
    for (int64_t o = 0; o < g.out[d]; ++o) {
      // make_window_geom bounds (out-1)*stride by n + pad_before, so this cannot wrap.
      const int64_t start = o * s - g.pad_before[d];
      t.lo[o] = std::max<int64_t>(start, 0);
      t.hi[o] = std::min(start + k, n);
      // start >= -pad_before always, so only the end can leave the padded extent.
      t.padded[o] = std::min(start + k, n + g.pad_after[d]) - start;
    }
  }
  // Only taps that some window places on an input cell get an entry: j in [j0, j1), where
  // j - pad_before spans [-(out-1)*stride, n). That range is at most 2n long (pooling pads
  // are at most kernel/2 per side), so a kernel of 2^40 cells costs nothing here.
  const int64_t d = g.dims() - 1, s = g.stride[d], n = g.in[d], pb = g.pad_before[d];
  const int64_t j0 = std::max<int64_t>(0, pb - (p.out_last - 1) * s);
  const int64_t j1 = std::max(j0, std::min(g.kernel[d], pb + n));
  p.tap_lo.resize(j1 - j0);
  p.tap_hi.resize(j1 - j0);
  p.tap_shift.resize(j1 - j0);
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t shift = j - pb;
    // Valid o satisfy 0 <= o*s + shift <= n - 1.
    const int64_t lo = shift >= 0 ? 0 : (-shift + s - 1) / s;
    const int64_t hi = n - 1 - shift < 0 ? 0 : std::min(p.out_last, (n - 1 - shift) / s + 1);
    p.tap_lo[j - j0] = std::min(lo, p.out_last);
    p.tap_hi[j - j0] = std::max(p.tap_lo[j - j0], hi);
    p.tap_shift[j - j0] = shift;
  }
  return p;
}

std::vector<InTable> make_in_tables(const PoolPlan& p) {
  const WindowGeom& g = p.g;
  std::vector<InTable> tabs(g.dims());
  for (int64_t d = 0; d < g.dims(); ++d) {
    InTable& t = tabs[d];
    const int64_t k = g.kernel[d], s = g.stride[d], pb = g.pad_before[d];
    t.first.resize(g.in[d]);
    t.last.resize(g.in[d]);
    for (int64_t i = 0; i < g.in[d]; ++i) {
      // o covers i when o*s <= i + pb < o*s + k.
      const int64_t lo_num = i + pb - k + 1;
      const int64_t first = lo_num <= 0 ? 0 : (lo_num + s - 1) / s;
      const int64_t last = std::min(g.out[d], (i + pb) / s + 1);
      t.first[i] = first;
      t.last[i] = std::max(first, last);
    }
  }
  return tabs;
}




// Runs fn(args..., begin, end) on every OpenMP thread over its static share of `jobs`;
// every job is computed on its own, so the split never changes a result.
template <typename Fn, typename... Args>
void run_jobs(int64_t jobs, Fn fn, Args... args) {
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t share = jobs / threads, extra = jobs % threads;
    const int64_t begin = t * share + std::min(t, extra);
    const int64_t end = begin + share + (t < extra ? 1 : 0);
    if (begin < end) fn(args..., begin, end);
  }
}

// The row kernels of dtype T from the instruction-set build cpu_isa() chose.
template <typename T>
const PoolRowKernels<T>& row_kernels() {
  static const PoolRows& rows = for_cpu_path(avx512::pool_rows, avx2::pool_rows,
                                             baseline::pool_rows)();
  return of_dtype<T>(rows);
}

// Index of the row kernel for the last dim's stride: 1 and 2 have vector paths, 0 stands
// for any other.
int stride_kind(const PoolPlan& p) {
  const int64_t s = p.g.stride.back();
  return s == 1 || s == 2 ? static_cast<int>(s) : 0;
}

template <typename T>
void max_pool_impl(const PoolPlan& p, const T* x, T* y, int64_t* indices) {
  const int64_t jobs = p.planes() * (p.out_plane / p.out_last);
  const bool narrow = sizeof(T) == 4 && p.in_plane <= std::numeric_limits<int32_t>::max();
  const PoolRowKernels<T>& k = row_kernels<T>();
  const int s = stride_kind(p);
  const MaxRowsFn<T> fn = !indices ? k.max[s] : narrow ? k.max_indices_narrow[s]
                                                       : k.max_indices[s];
  run_jobs(jobs, fn, &p, x, y, indices);
}

AvgPlan make_avg_plan(const PoolPlan& p, bool count_include_pad, bool with_in_tables) {
  AvgPlan a{&p, with_in_tables ? make_in_tables(p) : std::vector<InTable>{},
            std::vector<double>(p.out_last), count_include_pad};
  const OutTable& last = p.out_tab.back();
  for (int64_t o = 0; o < p.out_last; ++o) {
    a.last_count[o] =
        static_cast<double>(count_include_pad ? last.padded[o] : last.hi[o] - last.lo[o]);
  }
  return a;
}

template <typename T>
void avg_pool_impl(const PoolPlan& p, const T* x, T* y, bool count_include_pad) {
  const AvgPlan a = make_avg_plan(p, count_include_pad, false);
  const int64_t jobs = p.planes() * (p.out_plane / p.out_last);
  run_jobs(jobs, row_kernels<T>().avg[stride_kind(p)], &a, x, y);
}

template <typename T>
void avg_pool_backward_impl(const PoolPlan& p, const T* dy, T* dx, bool count_include_pad) {
  const AvgPlan a = make_avg_plan(p, count_include_pad, true);
  const int64_t jobs = p.planes() * (p.in_plane / p.in_last);
  run_jobs(jobs, row_kernels<T>().avg_backward[stride_kind(p)], &a, dy, dx);
}

Dims out_shape(const PoolPlan& p) {
  Dims s{p.g.batch, p.g.channels};
  s.insert(s.end(), p.g.out.begin(), p.g.out.end());
  return s;
}

void max_pool_forward_py(const py::array& x, py::array& out,
                         std::optional<py::array> indices, const Dims& kernel,
                         const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                         bool ceil_mode) {
  const PoolPlan p = make_plan("max_pool", shape_of(x), kernel, stride, pad_before, pad_after,
                               ceil_mode, "x");
  check_shape(out, out_shape(p), "out");
  if (indices) check_shape(*indices, out_shape(p), "indices");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    T* yp = output_ptr<T>(out, "out");
    int64_t* ip = indices ? index_output(*indices, "indices") : nullptr;
    py::gil_scoped_release release;
    max_pool_impl(p, xp, yp, ip);
  });
}

void avg_pool_forward_py(const py::array& x, py::array& out, const Dims& kernel,
                         const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                         bool ceil_mode, bool count_include_pad) {
  const PoolPlan p = make_plan("avg_pool", shape_of(x), kernel, stride, pad_before, pad_after,
                               ceil_mode, "x");
  check_shape(out, out_shape(p), "out");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    T* yp = output_ptr<T>(out, "out");
    py::gil_scoped_release release;
    avg_pool_impl(p, xp, yp, count_include_pad);
  });
}

void avg_pool_backward_py(const py::array& dy, py::array& dx, const Dims& kernel,
                          const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                          bool ceil_mode, bool count_include_pad) {
  const PoolPlan p = make_plan("avg_pool_backward", shape_of(dx), kernel, stride, pad_before,
                               pad_after, ceil_mode, "dx");
  check_shape(dy, out_shape(p), "dy");
  dispatch_float(float_dtype(dy, "dy"), [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dy, "dy");
    T* dxp = output_ptr<T>(dx, "dx");
    py::gil_scoped_release release;
    avg_pool_backward_impl(p, dyp, dxp, count_include_pad);
  });
}

void max_pool_backward_py(const py::array& dy, const py::array& indices, py::array& dx) {
  const Dims dy_shape = shape_of(dy), dx_shape = shape_of(dx);
  const ScatterPlanes s = make_scatter_planes("max_pool_backward", dy_shape, dx_shape);
  check_shape(indices, dy_shape, "indices");
  const int64_t planes = s.planes, in_plane = s.in_plane, out_plane = s.out_plane;
  const int64_t* ip = index_input(indices, "indices");
  const int64_t count = planes * out_plane;
  int64_t bad = count;
  dispatch_float(float_dtype(dy, "dy"), [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dy, "dy");
    T* dxp = output_ptr<T>(dx, "dx");
    py::gil_scoped_release release;
    // Scatters stay inside one plane, so planes are independent and each sums in order.
    // Each index is checked as it is used (one pass over the indices, not two): a bad one
    // is skipped, so memory outside its plane is never touched, and reported below.
#pragma omp parallel for schedule(static) reduction(min : bad)
    for (int64_t plane = 0; plane < planes; ++plane) {
      T* dst = dxp + plane * in_plane;
      std::fill(dst, dst + in_plane, T(0));
      const T* src = dyp + plane * out_plane;
      const int64_t* at = ip + plane * out_plane;
      for (int64_t j = 0; j < out_plane; ++j) {
        if (static_cast<uint64_t>(at[j]) < static_cast<uint64_t>(in_plane)) {
          dst[at[j]] += src[j];
        } else if (plane * out_plane + j < bad) {
          bad = plane * out_plane + j;
        }
      }
    }
  });
  FC_CHECK(bad == count, "max_pool_backward: indices must lie in [0, ", in_plane,
           ") (the spatial size of one plane of dx shape ", tuple_str(dx_shape),
           "), got ", ip[bad == count ? 0 : bad], " at flat position ", bad, " of indices shape ",
           tuple_str(dy_shape));
}

}  // namespace

void bind_pool(py::module_& m) {
  m.def("max_pool_forward", &max_pool_forward_py, py::arg("x"), py::arg("out"),
        py::arg("indices").none(true), py::arg("kernel_size"), py::arg("stride"),
        py::arg("pad_before"), py::arg("pad_after"), py::arg("ceil_mode"),
        "out (N, C, *out_spatial) <- window maxima of x (N, C, *spatial); indices (int64, same "
        "shape, or None) <- their flat offsets within each (n, c) plane.");
  m.def("avg_pool_forward", &avg_pool_forward_py, py::arg("x"), py::arg("out"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("ceil_mode"), py::arg("count_include_pad"),
        "out (N, C, *out_spatial) <- window means of x (N, C, *spatial).");
  m.def("max_pool_backward", &max_pool_backward_py, py::arg("dy"), py::arg("indices"),
        py::arg("dx"),
        "dx (N, C, *spatial) <- dy (N, C, *out_spatial) scattered-added at indices per plane.");
  m.def("avg_pool_backward", &avg_pool_backward_py, py::arg("dy"), py::arg("dx"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("ceil_mode"), py::arg("count_include_pad"),
        "dx (N, C, *spatial) <- gradient of avg_pool_forward (its exact adjoint).");
}

}  // namespace fastconv
