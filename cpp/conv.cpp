// Convolution forward and both backward passes as im2col + GEMM on bounded tiles.
//
// Per group g (Cg = C/groups input channels, Kg = K/groups output channels, R = Cg*prod(kernel)
// rows of the column matrix, L output positions):
//   forward          y[n, g]  (Kg x L)  = W_g (Kg x R) * cols(x[n, g]) (R x L)
//   backward input   dx[n, g]           = col2im(W_g^T (R x Kg) * dy[n, g] (Kg x L))
//   backward weight  dW_g    (Kg x R)   = sum_n dy[n, g] (Kg x L) * cols(x[n, g])^T (L x R)
// The column matrix is only ever built for a tile of at most kTileBytes per thread, so
// memory stays bounded for any batch and image size. Parallel jobs own disjoint outputs
// and every sum runs in a fixed order, so results do not depend on the thread count.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/conv_direct.hpp"
#include "fastconv/gemm.hpp"
#include "fastconv/geometry.hpp"
#include "fastconv/im2col.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

using Dims = std::vector<int64_t>;

// Upper bound on one thread's column tile: wide enough that the GEMM runs on long panels,
// small enough that memory stays bounded for any batch and image size.
constexpr int64_t kTileBytes = int64_t(1) << 22;

// Images with fewer output positions than this are multiplied several at a time.
constexpr int64_t kFoldedColumns = 256;

struct ConvGeom {
  WindowGeom win;          // input (N, C, *in) against kernel (*kernel)
  int64_t out_channels;    // K
  int64_t groups;          // G
  int64_t group_in;        // Cg = C / G
  int64_t group_out;       // Kg = K / G
  int64_t rows;            // R = Cg * prod(kernel)
  int64_t positions;       // L = prod(out)
  int64_t in_plane;        // prod(in)
  // A 1x1 kernel with unit stride and no padding reads the input as its own column matrix.
  bool pointwise;

  Dims out_shape() const {
    Dims s{win.batch, out_channels};
    s.insert(s.end(), win.out.begin(), win.out.end());
    return s;
  }
};

ConvGeom make_conv_geom(const char* op, const Dims& x_shape, const Dims& w_shape,
                        const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                        const Dims& dilation, int64_t groups) {
  FC_CHECK(w_shape.size() >= 3, op, ": weight must be (K, C/groups, *kernel) with at least one "
           "spatial dim, got shape ", tuple_str(w_shape));
  FC_CHECK(x_shape.size() == w_shape.size(), op, ": input shape ", tuple_str(x_shape),
           " must have ", w_shape.size(), " dims to match weight shape ", tuple_str(w_shape));
  FC_CHECK(groups >= 1, op, ": groups must be positive, got ", groups);
  const int64_t C = x_shape[1], K = w_shape[0];
  FC_CHECK(C % groups == 0 && K % groups == 0 && K >= 1, op, ": groups=", groups,
           " must divide the input channels (input shape ", tuple_str(x_shape),
           ") and the output channels (weight shape ", tuple_str(w_shape), ")");
  FC_CHECK(w_shape[1] == C / groups, op, ": weight shape ", tuple_str(w_shape), " needs C/groups = ",
           C / groups, " in dim 1 for input shape ", tuple_str(x_shape), " and groups=", groups);
  ConvGeom g;
  g.win = make_window_geom(op, x_shape[0], C, Dims(x_shape.begin() + 2, x_shape.end()),
                           Dims(w_shape.begin() + 2, w_shape.end()), stride, pad_before,
                           pad_after, dilation, false, PadLimit::kConv);
  g.out_channels = K;
  g.groups = groups;
  g.group_in = C / groups;
  g.group_out = K / groups;
  g.rows = checked_mul(g.group_in, g.win.kernel_volume(), "weight size");
  checked_mul(K, g.rows, "weight size");
  g.positions = g.win.out_plane();
  g.in_plane = g.win.in_plane();
  checked_mul(checked_mul(g.win.batch, K, "output size"), g.positions, "output size");
  g.pointwise = true;
  for (int64_t d = 0; d < g.win.dims(); ++d) {
    g.pointwise = g.pointwise && g.win.kernel[d] == 1 && g.win.stride[d] == 1 &&
                  g.win.pad_before[d] == 0 && g.win.pad_after[d] == 0;
  }
  return g;
}

// Output positions per tile: the column tile (rows x width) stays within kTileBytes, the
// tiles of one image have equal widths, and when (jobs x tiles) would leave threads idle
// or unevenly loaded the positions are cut further.
int64_t tile_width(int64_t rows, int64_t positions, int64_t jobs, int64_t elem_size) {
  const int64_t threads = omp_get_max_threads();
  const int64_t max_width = std::max<int64_t>(64, kTileBytes / std::max<int64_t>(1, rows * elem_size));
  int64_t tiles = (positions + max_width - 1) / max_width;
  if (jobs * tiles < threads) {
    tiles = (threads + jobs - 1) / jobs;
  } else if (jobs * tiles < 4 * threads) {
    const int64_t total = (jobs * tiles + threads - 1) / threads * threads;
    tiles = (total + jobs - 1) / jobs;
  }
  const int64_t width = ((positions + tiles - 1) / tiles + 15) / 16 * 16;
  return std::min(width, positions);
}

// Reused per thread across calls: no per-call allocation or page faults.
template <typename T>
T* scratch(int64_t count) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

// Adds bias[k] to row k of a (rows x width) block with leading dimension ld.
template <typename T>
void add_bias(const T* bias, int64_t rows, int64_t width, T* out, int64_t ld) {
  for (int64_t k = 0; k < rows; ++k) {
    const T b = bias[k];
    T* row = out + k * ld;
    for (int64_t j = 0; j < width; ++j) row[j] += b;
  }
}

template <typename T>
void conv_forward_impl(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
  if (conv_direct_applies(g.win, g.out_channels, g.groups)) {
    return conv_direct_forward(g.win, g.out_channels, g.groups, x, w, bias, y);
  }
  const int64_t L = g.positions, R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch;
  // Weights are packed once per call into the GEMM's panel layout and shared by all jobs.
  const int64_t padded = round_up_rows(Kg);
  // (Held by the calling thread and reused across calls; the jobs see it through a plain
  // pointer, since naming a thread_local inside the parallel region would give each
  // worker its own empty copy.)
  thread_local std::vector<T> packed_storage;
  packed_storage.resize(G * padded * R);
  T* const packed = packed_storage.data();
#pragma omp parallel for schedule(static)
  for (int64_t grp = 0; grp < G; ++grp) {
    pack_a(Kg, R, MatrixView<T>{w + grp * Kg * R, R, 1}, packed + grp * padded * R);
  }
  const int64_t image_size = g.win.channels * g.in_plane;

  // Few output positions per image (late ResNet stages, LeNet's C3/C5): a GEMM per image
  // would be a sliver a few columns wide, so the columns of several images are placed side
  // by side and multiplied at once.
  const int64_t threads = omp_get_max_threads();
  const int64_t batch_block =
      std::min({N, std::max<int64_t>(1, kFoldedColumns / L),
                std::max<int64_t>(1, (N * G + threads - 1) / threads)});
  if (batch_block > 1) {
    const int64_t blocks = (N + batch_block - 1) / batch_block;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < blocks * G; ++job) {
      const int64_t grp = job % G, n0 = job / G * batch_block;
      const int64_t count = std::min(batch_block, N - n0), width = count * L;
      T* cols = scratch<T>(R * width + Kg * width);
      T* result = cols + R * width;
      for (int64_t i = 0; i < count; ++i) {
        im2col_block(g.win, x + (n0 + i) * image_size, grp * g.group_in, (grp + 1) * g.group_in,
                     0, L, cols + i * L, width);
      }
      gemm(Kg, width, R, PackedA<T>{packed + grp * padded * R, padded},
           MatrixView<T>{cols, width, 1}, result, width, false);
      for (int64_t i = 0; i < count; ++i) {
        T* out = y + ((n0 + i) * g.out_channels + grp * Kg) * L;
        for (int64_t k = 0; k < Kg; ++k) {
          std::copy(result + k * width + i * L, result + k * width + (i + 1) * L, out + k * L);
        }
        if (bias) add_bias(bias + grp * Kg, Kg, L, out, L);
      }
    }
    return;
  }

  const int64_t images = N * G;
  const int64_t tile = tile_width(R, L, images, sizeof(T));
  const int64_t tiles = (L + tile - 1) / tile;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < images * tiles; ++job) {
    const int64_t n = job / (G * tiles), grp = job / tiles % G, t = job % tiles;
    const int64_t l0 = t * tile, l1 = std::min(L, l0 + tile), width = l1 - l0;
    const T* input = x + n * image_size;
    MatrixView<T> cols;
    if (g.pointwise) {
      cols = {input + grp * g.group_in * g.in_plane + l0, L, 1};
    } else {
      T* buf = scratch<T>(R * width);
      im2col_block(g.win, input, grp * g.group_in, (grp + 1) * g.group_in, l0, l1, buf, width);
      cols = {buf, width, 1};
    }
    T* out = y + (n * g.out_channels + grp * Kg) * L + l0;
    gemm(Kg, width, R, PackedA<T>{packed + grp * padded * R, padded}, cols, out, L, false);
    if (bias) add_bias(bias + grp * Kg, Kg, width, out, L);
  }
}

// Channels per job so that (N * G * blocks) jobs keep every thread busy.
int64_t channel_block(int64_t channels, int64_t jobs) {
  const int64_t threads = omp_get_max_threads();
  const int64_t blocks = std::min(channels, std::max<int64_t>(1, (2 * threads + jobs - 1) / jobs));
  return (channels + blocks - 1) / blocks;
}

template <typename T>
void conv_backward_input_impl(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  if (conv_direct_backward_input_applies(g.win, g.out_channels, g.groups)) {
    return conv_direct_backward_input(g.win, g.out_channels, g.groups, dy, w, dx);
  }
  const int64_t L = g.positions, R = g.rows, Kg = g.group_out, G = g.groups, Cg = g.group_in;
  const int64_t kvol = g.win.kernel_volume();
  const int64_t cblock = channel_block(Cg, g.win.batch * G);
  const int64_t cblocks = (Cg + cblock - 1) / cblock;
  const int64_t tile = tile_width(cblock * kvol, L, g.win.batch * G * cblocks, sizeof(T));
  std::fill(dx, dx + g.win.batch * g.win.channels * g.in_plane, T(0));
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < g.win.batch * G * cblocks; ++job) {
    const int64_t n = job / (G * cblocks), grp = job / cblocks % G, cb = job % cblocks;
    const int64_t c0 = cb * cblock, c1 = std::min(Cg, c0 + cblock);
    const int64_t rows = (c1 - c0) * kvol;
    T* buf = scratch<T>(rows * tile);
    T* image = dx + n * g.win.channels * g.in_plane;
    // W_g^T restricted to this block's rows: element (r, k) = W_g[k, c0*kvol + r].
    const MatrixView<T> wt{w + grp * Kg * R + c0 * kvol, 1, R};
    for (int64_t l0 = 0; l0 < L; l0 += tile) {
      const int64_t l1 = std::min(L, l0 + tile), width = l1 - l0;
      const MatrixView<T> grad{dy + (n * g.out_channels + grp * Kg) * L + l0, L, 1};
      gemm(rows, width, Kg, wt, grad, buf, width, false);
      col2im_block(g.win, buf, width, grp * Cg + c0, grp * Cg + c1, l0, l1, image);
    }
  }
}

template <typename T>
void conv_backward_weight_impl(const ConvGeom& g, const T* x, const T* dy, T* dw) {
  if (conv_direct_backward_weight_applies(g.win, g.out_channels, g.groups)) {
    return conv_direct_backward_weight(g.win, g.out_channels, g.groups, x, dy, dw);
  }
  const int64_t L = g.positions, R = g.rows, Kg = g.group_out, G = g.groups, Cg = g.group_in;
  const int64_t N = g.win.batch;
  const int64_t kvol = g.win.kernel_volume();
  const int64_t cblock = channel_block(Cg, G);
  const int64_t cblocks = (Cg + cblock - 1) / cblock;
  // With few (group, channel block) jobs, the batch is split into chunks as well; each
  // chunk sums into its own copy of dW, and the copies are added in chunk order, so the
  // result depends on the chunk count (fixed by the thread count) but not on scheduling.
  const int64_t threads = omp_get_max_threads();
  const int64_t chunks = std::min(N, std::max<int64_t>(1, (2 * threads) / (G * cblocks)));
  const int64_t per_chunk = (N + chunks - 1) / chunks;
  const int64_t tile = tile_width(cblock * kvol, L, G * cblocks * chunks, sizeof(T));
  const int64_t dw_size = g.out_channels * R;
  std::vector<T> partial(chunks > 1 ? (chunks - 1) * dw_size : 0);
  std::fill(dw, dw + dw_size, T(0));
  std::fill(partial.begin(), partial.end(), T(0));
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < G * cblocks * chunks; ++job) {
    const int64_t chunk = job / (G * cblocks), grp = job / cblocks % G, cb = job % cblocks;
    const int64_t c0 = cb * cblock, c1 = std::min(Cg, c0 + cblock);
    const int64_t rows = (c1 - c0) * kvol;
    T* buf = scratch<T>(rows * tile);
    T* target = chunk == 0 ? dw : partial.data() + (chunk - 1) * dw_size;
    T* out = target + grp * Kg * R + c0 * kvol;
    for (int64_t n = chunk * per_chunk; n < std::min(N, (chunk + 1) * per_chunk); ++n) {
      const T* image = x + n * g.win.channels * g.in_plane;
      for (int64_t l0 = 0; l0 < L; l0 += tile) {
        const int64_t l1 = std::min(L, l0 + tile), width = l1 - l0;
        im2col_block(g.win, image, grp * Cg + c0, grp * Cg + c1, l0, l1, buf, width);
        const T* grad = dy + (n * g.out_channels + grp * Kg) * L + l0;
        if (Kg < kGemmRows) {
          // Depthwise-like groups: a handful of dot products, which a GEMM register tile
          // built for kGemmRows rows would mostly waste.
          for (int64_t k = 0; k < Kg; ++k) {
            for (int64_t r = 0; r < rows; ++r) {
              const T* a = grad + k * L;
              const T* b = buf + r * width;
              T sum = 0;
#pragma omp simd reduction(+ : sum)
              for (int64_t p = 0; p < width; ++p) sum += a[p] * b[p];
              out[k * R + r] += sum;
            }
          }
        } else {
          // cols^T: element (p, r) = buf[r * width + p].
          gemm(Kg, rows, width, MatrixView<T>{grad, L, 1}, MatrixView<T>{buf, 1, width}, out, R,
               true);
        }
      }
    }
  }
  for (int64_t chunk = 1; chunk < chunks; ++chunk) {
    const T* src = partial.data() + (chunk - 1) * dw_size;
    for (int64_t i = 0; i < dw_size; ++i) dw[i] += src[i];
  }
}

void conv_forward_py(const py::array& x, const py::array& w, const std::optional<py::array>& bias,
                     py::array& out, const Dims& stride, const Dims& pad_before,
                     const Dims& pad_after, const Dims& dilation, int64_t groups) {
  const ConvGeom g = make_conv_geom("conv", shape_of(x), shape_of(w), stride, pad_before,
                                    pad_after, dilation, groups);
  if (bias) check_shape(*bias, {g.out_channels}, "bias");
  check_shape(out, g.out_shape(), "out");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    const T* wp = input_ptr<T>(w, "w");
    const T* bp = bias ? input_ptr<T>(*bias, "bias") : nullptr;
    T* yp = output_ptr<T>(out, "out");
    py::gil_scoped_release release;
    conv_forward_impl(g, xp, wp, bp, yp);
  });
}

void conv_backward_input_py(const py::array& dy, const py::array& w, py::array& dx,
                            const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                            const Dims& dilation, int64_t groups) {
  const ConvGeom g = make_conv_geom("conv_backward_input", shape_of(dx), shape_of(w), stride,
                                    pad_before, pad_after, dilation, groups);
  check_shape(dy, g.out_shape(), "dy");
  dispatch_float(float_dtype(dy, "dy"), [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dy, "dy");
    const T* wp = input_ptr<T>(w, "w");
    T* dxp = output_ptr<T>(dx, "out");
    py::gil_scoped_release release;
    conv_backward_input_impl(g, dyp, wp, dxp);
  });
}

void conv_backward_weight_py(const py::array& x, const py::array& dy, py::array& dw,
                             const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                             const Dims& dilation, int64_t groups) {
  const ConvGeom g = make_conv_geom("conv_backward_weight", shape_of(x), shape_of(dw), stride,
                                    pad_before, pad_after, dilation, groups);
  check_shape(dy, g.out_shape(), "dy");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    const T* dyp = input_ptr<T>(dy, "dy");
    T* dwp = output_ptr<T>(dw, "out");
    py::gil_scoped_release release;
    conv_backward_weight_impl(g, xp, dyp, dwp);
  });
}

}  // namespace

void bind_conv(py::module_& m) {
  m.def("conv_forward", &conv_forward_py, py::arg("x"), py::arg("w"), py::arg("bias").none(true),
        py::arg("out"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("dilation"), py::arg("groups"),
        "out (N, K, *out_spatial) <- cross-correlation of x (N, C, *spatial) with w "
        "(K, C/groups, *kernel), plus bias (K,) when given.");
  m.def("conv_backward_input", &conv_backward_input_py, py::arg("dy"), py::arg("w"),
        py::arg("out"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("dilation"), py::arg("groups"),
        "out (N, C, *spatial) <- gradient of conv with respect to its input.");
  m.def("conv_backward_weight", &conv_backward_weight_py, py::arg("x"), py::arg("dy"),
        py::arg("out"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("dilation"), py::arg("groups"),
        "out (K, C/groups, *kernel) <- gradient of conv with respect to its weight.");
}

}  // namespace fastconv
