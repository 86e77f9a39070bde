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
#include <immintrin.h>
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
#include "fastconv/gemm.hpp"
#include "fastconv/geometry.hpp"
#include "fastconv/lanes.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

using Dims = std::vector<int64_t>;

// Per spatial dim, for every output coordinate o (window start o*stride - pad_before):
// the input cells [lo, hi) it covers, and how many cells it covers inside the padded
// extent [-pad_before, n + pad_after) (the count_include_pad divisor).
struct OutTable {
  Dims lo, hi, padded;
};

// Per spatial dim, for every input coordinate i: the outputs [first, last) whose window
// covers it. Used by the gather form of the average-pool adjoint.
struct InTable {
  Dims first, last;
};

struct PoolPlan {
  WindowGeom g;
  std::vector<OutTable> out_tab;
  int64_t in_plane = 0, out_plane = 0;
  int64_t in_last = 0, out_last = 0;  // extents of the last spatial dim
  Dims in_pitch, out_pitch;           // element step of each spatial dim within a plane
  // Per last-dim tap that can reach the input (in tap order): the outputs [tap_lo, tap_hi)
  // for which that tap is an input cell, and the input coordinate of output 0 under it
  // (o * stride + tap_shift).
  Dims tap_lo, tap_hi, tap_shift;

  int64_t lead_dims() const { return g.dims() - 1; }
  int64_t taps() const { return static_cast<int64_t>(tap_shift.size()); }
  int64_t planes() const { return g.batch * g.channels; }
};

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

#define FC_INLINE inline __attribute__((always_inline))

// Walks the points of the box [lo, hi) over `dims` dims in row-major order, with
// offset() = sum(coord[d] * pitch[d]); a box with no leading dims has one point. A plain
// loop rather than a visitor, so it inlines into the per-instruction-set kernel copies.
struct BoxCursor {
  int64_t dims;
  const int64_t *lo, *hi, *pitch;
  int64_t* cur;
  bool valid = true;

  FC_INLINE BoxCursor(int64_t dims_, const int64_t* lo_, const int64_t* hi_,
                      const int64_t* pitch_, int64_t* cur_)
      : dims(dims_), lo(lo_), hi(hi_), pitch(pitch_), cur(cur_) {
    for (int64_t d = 0; d < dims; ++d) {
      valid = valid && lo[d] < hi[d];
      cur[d] = lo[d];
    }
  }
  FC_INLINE int64_t offset() const {
    int64_t off = 0;
    for (int64_t d = 0; d < dims; ++d) off += cur[d] * pitch[d];
    return off;
  }
  FC_INLINE void advance() {
    int64_t d = dims - 1;
    while (d >= 0 && ++cur[d] == hi[d]) {
      cur[d] = lo[d];
      --d;
    }
    valid = d >= 0;
  }
};

// Leading output coordinates of output row `row` of a plane.
void row_coords(const Dims& extent, int64_t row, int64_t* coord) {
  for (int64_t d = static_cast<int64_t>(extent.size()) - 2; d > 0; --d) {
    const int64_t rest = row / extent[d];  // one division: % would be a second one
    coord[d] = row - rest * extent[d];
    row = rest;
  }
  // What is left is below extent[0]: 2-D rows need no division at all.
  if (extent.size() > 1) coord[0] = row;
}

// Leading coordinates of `row` and the input box [lo, hi) they select, per leading dim.
FC_INLINE void row_box(const PoolPlan& p, int64_t row, int64_t* coord, int64_t* lo,
                       int64_t* hi) {
  row_coords(p.g.out, row, coord);
  for (int64_t d = 0; d < p.lead_dims(); ++d) {
    lo[d] = p.out_tab[d].lo[coord[d]];
    hi[d] = p.out_tab[d].hi[coord[d]];
  }
}

// The input rows of one output row's windows: plane offsets of the box points in row-major
// order (at least one, since a window always holds an input cell).
struct RowBox {
  Dims coord, lo, hi, cur, offsets;
  explicit RowBox(int64_t lead) : coord(lead), lo(lead), hi(lead), cur(lead) {}

  // Fills offsets for output row `row` of a plane and returns how many there are.
  int64_t gather(const PoolPlan& p, int64_t row) {
    row_box(p, row, coord.data(), lo.data(), hi.data());
    offsets.clear();
    for (BoxCursor box(p.lead_dims(), lo.data(), hi.data(), p.in_pitch.data(), cur.data());
         box.valid; box.advance()) {
      offsets.push_back(box.offset());
    }
    return static_cast<int64_t>(offsets.size());
  }
};

// Jobs of a row kernel from `begin` on, each one row of a plane of `rows_per_plane` rows,
// stepped without a division per job.
struct RowJobs {
  int64_t job, rows_per_plane, plane, row;
  RowJobs(int64_t begin, int64_t rows)
      : job(begin), rows_per_plane(rows), plane(begin / rows), row(begin % rows) {}
  FC_INLINE void next() {
    ++job;
    if (++row == rows_per_plane) {
      row = 0;
      ++plane;
    }
  }
};

// The part [lo, hi) of a row that vector chunks may compute: outputs (forward) or input
// cells (average adjoint).
struct Interior {
  int64_t lo, hi;
};

// The forward interior: outputs whose windows hold every last-dim tap as an input cell,
// o*s + first_shift + [0, taps) inside [0, n).
FC_INLINE Interior output_interior(const PoolPlan& p, int64_t s) {
  const int64_t shift = p.tap_shift[0], taps = p.taps(), n = p.in_last;
  const int64_t lo = std::min(p.out_last, shift >= 0 ? 0 : (-shift + s - 1) / s);
  const int64_t room = n - taps - shift;  // the last window start that fits, from shift
  const int64_t hi = room < 0 ? 0 : std::min(p.out_last, room / s + 1);
  return {lo, std::max(lo, hi)};
}

// How the G vectors of a chunk (W outputs each, `step` apart, from the cell `first_cell`)
// may read a row of n cells with stride-2 pair loads, which read one cell past the last
// even one, or with kBack one cell before the first: all forward, the first forward and
// the rest backward (both ends of a short row are tight), all backward, or none (the row
// is too short; a narrower chunk takes over).
enum class Reach { kForward, kMixed, kBackward, kNone };

FC_INLINE Reach chunk_reach(int64_t stride, int64_t first_cell, int64_t taps, int64_t width,
                            int64_t step, int64_t vectors, int64_t n) {
  if (stride == 1) return Reach::kForward;
  const int64_t span = (vectors - 1) * step + width;
  if (first_cell + taps - 1 + 2 * span - 1 < n) return Reach::kForward;
  if (first_cell >= 1) return Reach::kBackward;
  if (vectors > 1 && step > 0 && first_cell + taps - 1 + 2 * width - 1 < n) return Reach::kMixed;
  return Reach::kNone;
}

// Runs chunk(start, step, back_first, back_rest) over the interior outputs [o, hi) of a
// row: G vectors of W outputs each, at start + g * step, the first vector loading backward
// when back_first and the rest when back_rest (std::bool_constant, from chunk_reach, so the
// kernels pick their loads at compile time). Chunks go W apart; where fewer than G x W outputs are
// left, the last chunk moves back to overlap the previous one, or, in a row too short for
// that, its vectors move closer together (step < W). Returns the first output it did not
// cover.
template <int W, int G, typename Chunk>
FC_INLINE int64_t run_chunks(int64_t o, Interior in, int64_t stride, int64_t first_shift,
                             int64_t taps, int64_t n, Chunk chunk) {
  while (o < in.hi) {
    int64_t start = o, step = W;
    if (in.hi - o < G * W) {
      if (in.hi - in.lo >= G * W) {
        start = in.hi - G * W;
      } else if (in.hi - o >= W) {
        step = G > 1 ? (in.hi - W - o) / (G - 1) : 0;
      } else if (in.hi - in.lo >= W) {
        start = in.hi - W;
        step = 0;
      } else {
        break;
      }
    }
    const int64_t span = (G - 1) * step + W;
    const Reach reach = chunk_reach(stride, start * stride + first_shift, taps, W, step, G, n);
    if (reach == Reach::kNone) break;
    if (reach == Reach::kBackward) {
      chunk(start, step, std::true_type{}, std::true_type{});
    } else if (reach == Reach::kMixed) {
      chunk(start, step, std::false_type{}, std::true_type{});
    } else {
      chunk(start, step, std::false_type{}, std::false_type{});
    }
    o = start + span;
  }
  return o;
}

// Inputs of the average-pool kernels beyond the pool plan: the count divisors.
struct AvgPlan {
  const PoolPlan* pool;
  std::vector<InTable> in_tab;     // per dim: the outputs covering each input coordinate
  std::vector<double> last_count;  // divisor share of the last dim, per output coordinate
  bool count_include_pad;

  // The divisor share of the leading dims for leading output coordinates `coord`.
  FC_INLINE double lead_count(const int64_t* coord) const {
    double count = 1;
    for (int64_t d = 0; d < pool->lead_dims(); ++d) {
      const OutTable& t = pool->out_tab[d];
      // Counts are far below 2^53, so the products stay exact.
      count *= static_cast<double>(count_include_pad ? t.padded[coord[d]]
                                                     : t.hi[coord[d]] - t.lo[coord[d]]);
    }
    return count;
  }
};

// The row kernels, once per instruction set (see simd/pool_rows.inl). The dispatch picks the
// copy for the path the GEMM dispatch selected at import, so FASTCONV_DISABLE_CPU_FEATURES
// lowers pooling too.
enum class Isa { kBaseline, kAvx2, kAvx512 };

Isa selected_isa() {
  static const Isa isa = [] {
    const std::string name = gemm_kernels().isa;
    return name == "avx512" ? Isa::kAvx512 : name == "avx2" ? Isa::kAvx2 : Isa::kBaseline;
  }();
  return isa;
}

// The kernels have internal linkage, so the vector-argument ABI notes do not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,prefer-vector-width=512")
namespace avx512 {
#define FC_POOL_VEC_BYTES 64
#include "simd/pool_rows.inl"
#undef FC_POOL_VEC_BYTES
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define FC_POOL_VEC_BYTES 32
#include "simd/pool_rows.inl"
#undef FC_POOL_VEC_BYTES
}  // namespace avx2
#pragma GCC pop_options

namespace baseline {
#define FC_POOL_VEC_BYTES 16
#include "simd/pool_rows.inl"
#undef FC_POOL_VEC_BYTES
}  // namespace baseline
#pragma GCC diagnostic pop

// The three copies of one kernel's entry point, for run_jobs.
#define FC_PER_ISA(...) &avx512::__VA_ARGS__::run, &avx2::__VA_ARGS__::run, &baseline::__VA_ARGS__::run

// Runs the selected copy of a kernel, fn(args..., begin, end), on every OpenMP thread over
// its static share of `jobs`; every job is computed on its own, so the split never changes
// a result.
template <typename Fn, typename... Args>
void run_jobs(int64_t jobs, Fn avx512_fn, Fn avx2_fn, Fn baseline_fn, Args... args) {
  const Isa isa = selected_isa();
  const Fn fn = isa == Isa::kAvx512 ? avx512_fn : isa == Isa::kAvx2 ? avx2_fn : baseline_fn;
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t share = jobs / threads, extra = jobs % threads;
    const int64_t begin = t * share + std::min(t, extra);
    const int64_t end = begin + share + (t < extra ? 1 : 0);
    if (begin < end) fn(args..., begin, end);
  }
}

// Calls launch(std::integral_constant<int, S>{}) with S the compile-time last-dim stride of
// the row kernels: 1 and 2 have vector paths, 0 stands for any other.
template <typename Launch>
void with_stride(const PoolPlan& p, Launch launch) {
  const int64_t s = p.g.stride.back();
  if (s == 1) return launch(std::integral_constant<int, 1>{});
  if (s == 2) return launch(std::integral_constant<int, 2>{});
  launch(std::integral_constant<int, 0>{});
}

template <typename T>
void max_pool_impl(const PoolPlan& p, const T* x, T* y, int64_t* indices) {
  const int64_t jobs = p.planes() * (p.out_plane / p.out_last);
  const bool narrow = sizeof(T) == 4 && p.in_plane <= std::numeric_limits<int32_t>::max();
  with_stride(p, [&](auto stride) {
    constexpr int S = decltype(stride)::value;
    if (!indices) {
      return run_jobs(jobs, FC_PER_ISA(MaxPoolRows<T, false, false, S>), &p, x, y, indices);
    }
    if (narrow) {
      return run_jobs(jobs, FC_PER_ISA(MaxPoolRows<T, true, true, S>), &p, x, y, indices);
    }
    run_jobs(jobs, FC_PER_ISA(MaxPoolRows<T, true, false, S>), &p, x, y, indices);
  });
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
  with_stride(p, [&](auto stride) {
    constexpr int S = decltype(stride)::value;
    run_jobs(jobs, FC_PER_ISA(AvgPoolRows<T, S>), &a, x, y);
  });
}

template <typename T>
void avg_pool_backward_impl(const PoolPlan& p, const T* dy, T* dx, bool count_include_pad) {
  const AvgPlan a = make_avg_plan(p, count_include_pad, true);
  const int64_t jobs = p.planes() * (p.in_plane / p.in_last);
  with_stride(p, [&](auto stride) {
    constexpr int S = decltype(stride)::value;
    run_jobs(jobs, FC_PER_ISA(AvgPoolBackwardRows<T, S>), &a, dy, dx);
  });
}

const int64_t* index_input(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<int64_t>())) {
    throw py::type_error(concat(name, " must have dtype int64, got ", dtype_name(a)));
  }
  FC_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous (shape ",
           tuple_str(shape_of(a)), ")");
  return static_cast<const int64_t*>(a.data());
}

int64_t* index_output(py::array& a, const char* name) {
  index_input(a, name);
  FC_CHECK(a.writeable(), name, " must be writeable");
  return static_cast<int64_t*>(a.mutable_data());
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
  // Every index is checked before anything is written: a bad one must not corrupt memory.
  int64_t bad = count;
  {
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) reduction(min : bad)
    for (int64_t j = 0; j < count; ++j) {
      if ((ip[j] < 0 || ip[j] >= in_plane) && j < bad) bad = j;
    }
  }
  FC_CHECK(bad == count, "max_pool_backward: indices must lie in [0, ", in_plane,
           ") (the spatial size of one plane of dx shape ", tuple_str(dx_shape),
           "), got ", ip[bad == count ? 0 : bad], " at flat position ", bad, " of indices shape ",
           tuple_str(dy_shape));
  dispatch_float(float_dtype(dy, "dy"), [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dy, "dy");
    T* dxp = output_ptr<T>(dx, "dx");
    py::gil_scoped_release release;
    // Scatters stay inside one plane, so planes are independent and each sums in order.
#pragma omp parallel for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      T* dst = dxp + plane * in_plane;
      std::fill(dst, dst + in_plane, T(0));
      const T* src = dyp + plane * out_plane;
      const int64_t* at = ip + plane * out_plane;
      for (int64_t j = 0; j < out_plane; ++j) dst[at[j]] += src[j];
    }
  });
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
