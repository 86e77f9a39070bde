// Convolution forward and both backward passes as GEMMs against the column matrix.
//
// Per group g (Cg = C/groups input channels, Kg = K/groups output channels, R = Cg*prod(kernel)
// rows of the column matrix, L output positions):
//   forward          y[n, g]  (Kg x L)  = W_g (Kg x R) * cols(x[n, g]) (R x L)
//   backward input   dx[n, g]           = col2im(W_g^T (R x Kg) * dy[n, g] (Kg x L))
//   backward weight  dW_g    (Kg x R)   = sum_n dy[n, g] (Kg x L) * cols(x[n, g])^T (L x R)
// The column matrix is never stored whole. Most layers never build it at all: its rows are
// shifted runs of the padded input (split into stride phases), which the GEMM reads in
// place ("shifted windows" below), and with unit strides the input gradient is itself a
// forward convolution. The other layers build it in tiles of bounded size (kTileBytes,
// kChunkBytes). 1x1 layers with unit stride and no padding multiply the input directly.
// Workspaces are per thread and reused across calls. Parallel jobs own disjoint outputs
// and every sum runs in a fixed order, so results are bitwise deterministic for a given
// thread count (the forward pass even across thread counts).
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <optional>
#include <stdexcept>
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

// Bytes of B panels built per GEMM call in the forward pass: about half of a 1 MB L2, so
// the panels are read back from L2 while the packed weights stay there too.
constexpr int64_t kChunkBytes = int64_t(1) << 19;
// At least this many panels per GEMM call, so that each pass over the weights does
// enough work when the weights do not fit in L2.
constexpr int64_t kMinChunkPanels = 3;
// Position tiles narrower than this are not worth it when the output channels can be
// split across threads instead.
constexpr int64_t kMinTileColumns = 192;

// Images with at most this many output positions are multiplied several at a time.
constexpr int64_t kFoldedColumns = 128;
// Below this many output positions per image (LeNet's C5: 1), folding images into one
// GEMM beats the shifted-window path even though it copies columns. At 7x7 outputs (49
// positions, ResNet-18's 256ch stage at batch 16, 2 threads) the two forwards are even
// (4.1 vs 4.2 ms) and the folded weight gradient is slower (6.4 vs 4.8 ms).
constexpr int64_t kFoldBeforeShifted = 32;

// The shifted-window weight gradient multiplies two operands that both run along the
// positions. The GEMM must transpose the input's windows while packing them, a cost
// spread over the group's output channels; dot products read both in place but end every
// register tile with lane sums. Measured on ResNet/VGG/Inception layers at batch 8 (one
// thread): dot products win up to 128 output channels (64ch 56x56: 23.8 -> 18.3 ms, 5x5
// 192->32: 31.7 -> 21.3 ms, 128ch 28x28 even), the GEMM from 256 (256ch 14x14: 21.4 vs
// 24.2 ms, 512ch: 82.9 vs 94.3 ms). At ResNet-18's training batch of 16 (112x112 input)
// the GEMM wins from 128 channels (128ch 14x14: 13.7 -> 8.4 ms; 64 -> 128 stride 2:
// 10.0 -> 5.4 ms) and dot products keep 64 (64ch 28x28: 8.9 vs 10.5 ms with the GEMM).
constexpr int64_t kDotMaxOutputs = 64;
// Output positions (summed over images) per register tile in the weight gradient.
constexpr int64_t kDotDepth = 2048;

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

// Reused per thread across calls: no per-call allocation or page faults. Each `Slot` is
// a separate buffer, for jobs that need two at once.
template <typename T, int Slot = 0>
T* scratch(int64_t count) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

// Buffers held by the calling thread across calls, which the parallel jobs share through a
// plain pointer (naming a thread_local inside the parallel region would give each worker
// its own empty copy). Each slot is a separate buffer.
// kTransposedWeights: the input gradient's rearranged weights (either way of computing it).
// kGatheredInput / kGatheredPanels: the padded images and the B panels of the gathered
// passes; kGatheredSums: their product before it is transposed into place.
// kLaneInput: the padded images of a batch-lanes pass, interleaved.
enum CallerSlot {
  kTransposedWeights,
  kFoldedPanels,
  kPackedWeights,
  kPartialSums,
  kGatheredInput,
  kGatheredPanels,
  kGatheredSums,
  kLaneInput
};
template <typename T, CallerSlot Slot>
T* caller_buffer(int64_t count) {
  thread_local std::vector<T> storage;
  if (static_cast<int64_t>(storage.size()) < count) storage.resize(count);
  return storage.data();
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

// Packs the weights of every group (Kg x R each) for the GEMM, one depth block per job so
// that large layers (VGG's 512 x 4608) do not pack on one thread while the other waits.
template <typename T>
void pack_weights(const ConvGeom& g, const T* w, T* packed) {
  const int64_t R = g.rows, Kg = g.group_out, padded = round_up_rows(Kg);
  const int64_t depth_blocks = (R + kGemmDepth - 1) / kGemmDepth;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < g.groups * depth_blocks; ++job) {
    const int64_t grp = job / depth_blocks, p0 = job % depth_blocks * kGemmDepth;
    pack_a(Kg, std::min(kGemmDepth, R - p0), MatrixView<T>{w + grp * Kg * R + p0, R, 1},
           packed + grp * padded * R + p0 * padded);
  }
}

// Weights of at least this many bytes are read in place by the forward GEMM instead of
// being packed each call: packing is a memory-bound copy, and for VGG's 512 x 4608 layer
// (9.4 MB) it took 10% of the layer's time; a GEMM reads large weights from L3 either way.
constexpr int64_t kInPlaceWeightBytes = int64_t(1) << 21;

// The forward's weights as every group's left GEMM operand: packed into panels, or read in
// place (PackedA::row_stride).
template <typename T>
struct ForwardWeights {
  const T* data;
  int64_t group_step;   // values from one group's weights to the next
  int64_t padded_rows;  // PackedA::padded_rows when packed
  int64_t row_stride;   // PackedA::row_stride: 0 when packed

  PackedA<T> group(int64_t grp, int64_t first_row = 0) const {
    return PackedA<T>{data + grp * group_step, padded_rows, first_row, row_stride};
  }
};

template <typename T>
ForwardWeights<T> forward_weights(const ConvGeom& g, const T* w) {
  const int64_t R = g.rows, Kg = g.group_out;
  if (g.out_channels * R * int64_t(sizeof(T)) >= kInPlaceWeightBytes) {
    return ForwardWeights<T>{w, Kg * R, Kg, R};
  }
  const int64_t padded = round_up_rows(Kg);
  T* const packed = caller_buffer<T, kPackedWeights>(g.groups * padded * R);
  pack_weights(g, w, packed);
  return ForwardWeights<T>{packed, padded * R, padded, 0};
}

// Forward for output positions [l0, l1) and output channels [k0, k1) of one (image, group):
// the column matrix is built straight into the GEMM's B-panel layout a few panels at a
// time, so each chunk is written and read back while it is still in L2 and the GEMM skips
// its own packing pass.
template <typename T>
void forward_tile(const ConvGeom& g, const T* image, int64_t grp, const PackedA<T>& a,
                  int64_t k0, int64_t k1, int64_t l0, int64_t l1, T* out) {
  const int64_t R = g.rows, L = g.positions, nr = panel_cols<T>();
  const int64_t c0 = grp * g.group_in, c1 = c0 + g.group_in;
  const int64_t panel_bytes = R * nr * int64_t(sizeof(T));
  const int64_t chunk = std::max<int64_t>(kMinChunkPanels, kChunkBytes / panel_bytes) * nr;
  T* const panels = scratch<T>(R * std::min(chunk, (l1 - l0 + nr - 1) / nr * nr));
  for (int64_t j0 = l0; j0 < l1; j0 += chunk) {
    const int64_t j1 = std::min(l1, j0 + chunk);
    for (int64_t p0 = j0; p0 < j1; p0 += nr) {
      const int64_t p1 = std::min(j1, p0 + nr);
      T* const panel = panels + (p0 - j0) * R;
      const int64_t width = panel_width<T>(p1 - p0);
      // Lanes past the last column are never stored, but keep them finite and defined.
      if (p1 - p0 < width) std::fill(panel, panel + R * width, T(0));
      im2col_block(g.win, image, c0, c1, p0, p1, panel, width);
    }
    gemm(k1 - k0, j1 - j0, R, a, panels, out + k0 * L + j0, L, false);
  }
}

// Convolution as a GEMM over shifted windows of the zero-padded input. The padded input
// (extent P_d) is split into stride phases: phase r holds the cells whose padded
// coordinate is q = s*i + r, at position i < Q_d = ceil(P_d / s_d). Tap u = t*dilation
// then reads phase u % s shifted by u / s, so with output positions numbered in phase
// coordinates (j = sum o_d * S_d, S_d = prod(Q_{d+1..})) the column matrix entry for
// tap (c, t) at position j is phases[offset(c, t) + j]: every row is a shifted run of one
// phase, the GEMM reads it in place, and no column matrix exists. Positions with o_d past
// the output in a non-leading dim are computed and dropped. With unit strides there is one
// phase, the padded input itself. With a unit stride along the last dim, consecutive rows
// share their padding: a row's right padding is the next row's left padding, so a row is
// in + max(pad_before, pad_after) cells long instead of in + pad_before + pad_after, and
// fewer computed columns are dropped (VGG's 3x3 at 14x14: 15 per 14 outputs, not 16).
struct ShiftedGeom {
  Dims extent;        // Q_d = ceil((in_d + pad_before_d + pad_after_d) / stride_d), or for
                      // a shared-padding last dim in_d + max(pad_before_d, pad_after_d)
  Dims step;          // S_d = prod(Q_{d+1..})
  int64_t plane;      // prod(Q): one channel of one phase
  int64_t phases;     // prod(stride)
  int64_t columns;    // out_0 * S_0: phase-coordinate positions computed
  int64_t footprint;  // values read from the start of one group's phase buffer
};

ShiftedGeom make_shifted_geom(const ConvGeom& g) {
  const WindowGeom& w = g.win;
  const int64_t dims = w.dims();
  ShiftedGeom s;
  s.extent.resize(dims);
  s.step.resize(dims);
  int64_t plane = 1, phases = 1;
  for (int64_t d = dims - 1; d >= 0; --d) {
    const int64_t padded = w.in[d] + w.pad_before[d] + w.pad_after[d];
    s.extent[d] = (padded + w.stride[d] - 1) / w.stride[d];
    // Cell i of a row sits at pad_before + i, so the window of output o, cells
    // [o, o + reach], lands on zeros of this row or on the next row's leading zeros
    // wherever it leaves the row; sharing needs the output row to still fit.
    const int64_t shared = w.in[d] + std::max(w.pad_before[d], w.pad_after[d]);
    if (d == dims - 1 && w.stride[d] == 1 && shared >= w.out[d]) s.extent[d] = shared;
    s.step[d] = plane;
    plane *= s.extent[d];
    phases *= w.stride[d];
  }
  s.plane = plane;
  s.phases = phases;
  s.columns = w.out[0] * s.step[0];
  int64_t reach = 0;
  for (int64_t d = 0; d < dims; ++d) {
    reach += (w.kernel[d] - 1) * w.dilation[d] / w.stride[d] * s.step[d];
  }
  // The GEMM reads whole register-tile rows in place, up to one tile past the last column.
  s.footprint = phases * g.group_in * plane + reach + s.columns + 64;
  return s;
}

// Strided layers whose phases would hold many more cells than the input (a stride far
// above the kernel reach) keep the im2col path.
bool shifted_applies(const ConvGeom& g) {
  if (g.pointwise) return false;
  const int64_t limit = 2 * g.in_plane + 4096;
  int64_t cells = 1;
  for (int64_t d = 0; d < g.win.dims(); ++d) {
    const int64_t padded = g.win.in[d] + g.win.pad_before[d] + g.win.pad_after[d];
    const int64_t stride = g.win.stride[d];
    if (stride > g.win.dilation[d] * (g.win.kernel[d] - 1) + 1) return false;
    const int64_t extent = (padded + stride - 1) / stride * stride;
    if (extent > limit / cells) return false;
    cells *= extent;
  }
  return true;
}

// Offsets of the R rows of the shifted-window B for one group: row c * kvol + t.
Dims shifted_offsets(const ConvGeom& g, const ShiftedGeom& s) {
  const WindowGeom& w = g.win;
  const int64_t dims = w.dims(), kvol = w.kernel_volume();
  Dims offsets(g.rows);
  Dims tap(dims, 0);
  for (int64_t t = 0; t < kvol; ++t) {
    int64_t phase = 0, shift = 0;
    for (int64_t d = 0; d < dims; ++d) {
      const int64_t u = tap[d] * w.dilation[d];
      phase = phase * w.stride[d] + u % w.stride[d];
      shift += u / w.stride[d] * s.step[d];
    }
    for (int64_t c = 0; c < g.group_in; ++c) {
      offsets[c * kvol + t] = (phase * g.group_in + c) * s.plane + shift;
    }
    for (int64_t d = dims - 1; d >= 0; --d) {
      if (++tap[d] < w.kernel[d]) break;
      tap[d] = 0;
    }
  }
  return offsets;
}

// Splits channels [c0, c0 + Cg) of one image into zero-padded stride phases in `dst`
// (layout [phase][channel][Q grid]), zeroing the tail the last windows overhang.
template <typename T>
void pad_group(const ConvGeom& g, const ShiftedGeom& s, const T* image, int64_t c0, T* dst) {
  const WindowGeom& w = g.win;
  const int64_t dims = w.dims(), last = dims - 1;
  std::fill(dst, dst + s.footprint, T(0));
  const int64_t n_last = w.in[last], s_last = w.stride[last], pb_last = w.pad_before[last];
  const int64_t rows = g.in_plane / n_last;  // input rows along the last dim
  const int64_t channel_step = s.plane, phase_step = g.group_in * s.plane;
  for (int64_t c = 0; c < g.group_in; ++c) {
    const T* src = image + (c0 + c) * g.in_plane;
    for (int64_t row = 0; row < rows; ++row) {
      // Phase and position of the row's leading coordinates.
      int64_t rest = row, phase = 0, at = 0, radix = s_last;
      for (int64_t d = last - 1; d >= 0; --d) {
        const int64_t q = rest % w.in[d] + w.pad_before[d];
        rest /= w.in[d];
        phase += q % w.stride[d] * radix;
        radix *= w.stride[d];
        at += q / w.stride[d] * s.step[d];
      }
      const T* in_row = src + row * n_last;
      if (s_last == 1) {
        std::copy(in_row, in_row + n_last,
                  dst + phase * phase_step + c * channel_step + at + pb_last);
        continue;
      }
      // Phase p of the last dim takes every s_last-th cell from the first one whose padded
      // coordinate i + pb_last is p modulo s_last: strided reads, consecutive writes.
      for (int64_t p = 0; p < s_last; ++p) {
        const int64_t first = ((p - pb_last) % s_last + s_last) % s_last;
        T* const out =
            dst + (phase + p) * phase_step + c * channel_step + at + (first + pb_last) / s_last;
        for (int64_t i = first, o = 0; i < n_last; i += s_last, ++o) out[o] = in_row[i];
      }
    }
  }
}

// Copies the valid padded-coordinate columns [j0, j1) of a (rows x (j1 - j0)) GEMM result
// into the output rows (stride L), adding the bias.
template <typename T>
void scatter_columns(const ConvGeom& g, const ShiftedGeom& s, const T* result, int64_t rows,
                     int64_t j0, int64_t j1, const T* bias, T* out) {
  const WindowGeom& w = g.win;
  const int64_t dims = w.dims(), L = g.positions, width = j1 - j0;
  for (int64_t j = j0; j < j1;) {
    // Decode j; skip to the next slice of dim d-1 when o_d is past the output.
    int64_t l = 0, rest = j, o = 0, skip_to = -1;
    for (int64_t d = 0; d < dims; ++d) {
      o = rest / s.step[d];
      rest %= s.step[d];
      if (o >= w.out[d]) {  // never for d = 0, since j < out_0 * S_0
        skip_to = (j / s.step[d - 1] + 1) * s.step[d - 1];
        break;
      }
      l = l * w.out[d] + o;
    }
    if (skip_to >= 0) {
      j = skip_to;
      continue;
    }
    const int64_t len = std::min(w.out[dims - 1] - o, j1 - j);
    for (int64_t k = 0; k < rows; ++k) {
      const T* src = result + k * width + (j - j0);
      T* dst = out + k * L + l;
      const T b = bias ? bias[k] : T(0);
      for (int64_t i = 0; i < len; ++i) dst[i] = src[i] + b;
    }
    j += len;
  }
}

// Forward of output channels [k0, k1) over padded-coordinate columns [j0, j1) of one
// (image, group), given that group's padded input.
template <typename T>
void forward_shifted_tile(const ConvGeom& g, const ShiftedGeom& s, const int64_t* offsets,
                          const T* padded_input, const PackedA<T>& weights, int64_t k0,
                          int64_t k1, int64_t j0, int64_t j1, const T* bias, T* out) {
  const int64_t rows = k1 - k0, nr = panel_cols<T>();
  const int64_t chunk =
      std::max<int64_t>(1, kChunkBytes / (rows * nr * int64_t(sizeof(T)))) * nr;
  T* const result = scratch<T, 1>(rows * std::min(chunk, j1 - j0));
  PackedA<T> a = weights;
  a.first_row = k0;
  for (int64_t c0 = j0; c0 < j1; c0 += chunk) {
    const int64_t c1 = std::min(j1, c0 + chunk);
    gemm(rows, c1 - c0, g.rows, MatrixView<T>{}, &a,
         ShiftedRows<T>{padded_input + c0, offsets, false}, result, c1 - c0, false);
    scatter_columns(g, s, result, rows, c0, c1, bias ? bias + k0 : nullptr, out + k0 * g.positions);
  }
}

// Bytes of one group's weights above which (more than one core's L2 on the machines
// measured) the forward splits them by output channels across threads, so that each
// thread's share stays in its L2 rather than being re-read from L3 for every image or
// column tile. Smaller weights are not worth it: ResNet-18's 128 -> 256 stride-2 layer
// (1.2 MB) was 8-17% slower split, since every thread then splits every image into phases.
constexpr int64_t kSharedWeightBytes = int64_t(2) << 20;

// Output-channel blocks and padded-coordinate column tiles so that (images x tiles x
// blocks) jobs keep every thread busy. Whichever split leaves the busiest thread fewer
// register tiles wins, counting a partly used tile as whole; columns win near-ties, since
// a channel split makes every thread pad the whole image and read all of it. (128ch
// 28x28 at batch 1: 812 columns are 17 tiles wide, so two column tiles cost 16 x 9 tiles
// and two channel blocks 8 x 17.)
struct JobGrid {
  int64_t tile;        // columns per tile
  int64_t tiles;
  int64_t row_step;    // output channels per block, a multiple of the register tile
  int64_t row_blocks;
};

JobGrid job_grid(int64_t images, int64_t columns, int64_t rows, int64_t nr) {
  const int64_t threads = omp_get_max_threads();
  const int64_t panel = gemm_kernels().panel_rows;
  const int64_t jobs = (images + threads - 1) / threads * threads;
  JobGrid grid{columns, 1, rows, 1};
  const int64_t split = (jobs + images - 1) / images;
  if (split == 1) return grid;
  const int64_t col_tiles = (columns + nr - 1) / nr, row_tiles = (rows + panel - 1) / panel;
  const int64_t by_columns = row_tiles * ((col_tiles + split - 1) / split);
  const int64_t by_rows = (row_tiles + split - 1) / split * col_tiles;
  if (row_tiles >= 2 * split && 100 * by_rows < 97 * by_columns) {
    grid.row_blocks = split;
    grid.row_step = (row_tiles + split - 1) / split * panel;
  } else {
    grid.tile = std::min(columns, (col_tiles + split - 1) / split * nr);
    grid.tiles = (columns + grid.tile - 1) / grid.tile;
  }
  return grid;
}

template <typename T>
void forward_shifted(const ConvGeom& g, const T* x, const ForwardWeights<T>& weights,
                     const T* bias, T* y) {
  const ShiftedGeom s = make_shifted_geom(g);
  const Dims offsets = shifted_offsets(g, s);
  const int64_t images = g.win.batch * g.groups, Kg = g.group_out, G = g.groups;
  JobGrid grid = job_grid(images, s.columns, Kg, panel_cols<T>());
  // Weights larger than L2 with at least as many images as threads: each thread takes one
  // block of output channels for every image, so its share of the weights stays in L2
  // across the images instead of streaming from L3 once per image (ResNet-18's 256ch 7x7,
  // 2.4 MB of weights, at batch 16). Every thread then pads every image, which is cheap
  // next to the GEMM at these sizes.
  const int64_t threads = omp_get_max_threads(), panel_rows = gemm_kernels().panel_rows;
  const bool rows_outer = G == 1 && threads > 1 && images >= threads && grid.tiles == 1 &&
                          grid.row_blocks == 1 && Kg >= 2 * threads * panel_rows &&
                          Kg * g.rows * int64_t(sizeof(T)) > kSharedWeightBytes;
  if (rows_outer) {
    grid.row_blocks = threads;
    grid.row_step = ((Kg + threads - 1) / threads + panel_rows - 1) / panel_rows * panel_rows;
  }
  // The padded input of an (image, group) is built once per thread and call: a thread's
  // jobs are consecutive under the static schedule, so it keeps the last one it built.
  static std::atomic<int64_t> calls{0};
  const int64_t call = calls.fetch_add(1);
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < images * grid.tiles * grid.row_blocks; ++job) {
    const int64_t image =
        rows_outer ? job % images : job / (grid.tiles * grid.row_blocks);
    const int64_t t = rows_outer ? 0 : job / grid.row_blocks % grid.tiles;
    const int64_t rb = rows_outer ? job / images : job % grid.row_blocks;
    const int64_t n = image / G, grp = image % G;
    const int64_t k0 = std::min(Kg, rb * grid.row_step), k1 = std::min(Kg, k0 + grid.row_step);
    const int64_t j0 = t * grid.tile, j1 = std::min(s.columns, j0 + grid.tile);
    if (k0 >= k1 || j0 >= j1) continue;
    T* const padded_input = scratch<T, 2>(s.footprint);
    thread_local int64_t built_call = -1, built_image = -1;
    if (built_call != call || built_image != image) {
      pad_group(g, s, x + n * g.win.channels * g.in_plane, grp * g.group_in, padded_input);
      built_call = call;
      built_image = image;
    }
    forward_shifted_tile(g, s, offsets.data(), padded_input, weights.group(grp), k0, k1, j0, j1,
                         bias ? bias + grp * Kg : nullptr,
                         y + (n * g.out_channels + grp * Kg) * g.positions);
  }
}

// Input offset within one channel plane of the cell under tap t at output position l,
// at [l * kvol + t], or -1 where the tap lands in the padding.
Dims fold_offsets(const ConvGeom& g) {
  const WindowGeom& w = g.win;
  const int64_t dims = w.dims(), kvol = w.kernel_volume(), L = g.positions;
  Dims offsets(L * kvol);
  Dims pos(dims), tap(dims);
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t d = dims - 1, rest = l; d >= 0; --d) {
      pos[d] = rest % w.out[d];
      rest /= w.out[d];
    }
    for (int64_t t = 0; t < kvol; ++t) {
      for (int64_t d = dims - 1, rest = t; d >= 0; --d) {
        tap[d] = rest % w.kernel[d];
        rest /= w.kernel[d];
      }
      int64_t offset = 0;
      for (int64_t d = 0; d < dims && offset >= 0; ++d) {
        const int64_t i = pos[d] * w.stride[d] + tap[d] * w.dilation[d] - w.pad_before[d];
        offset = (i < 0 || i >= w.in[d]) ? -1 : offset * w.in[d] + i;
      }
      offsets[l * kvol + t] = offset;
    }
  }
  return offsets;
}

// One B panel of one group's folded column matrix (column j: image j / L, position j % L):
// columns [j0, j1), at most a panel's width, the rest of the panel zero. Rows are written
// one after another while the reads stay within a few images' channel planes; filling the
// panel a column at a time instead touched every one of its R cache-line rows per column.
constexpr int64_t kMaxPanelCols = 64;  // wider than any build's register tile (48 at most)

template <typename T>
void gather_folded_panel(const ConvGeom& g, const int64_t* offsets, const T* x, int64_t grp,
                         int64_t j0, int64_t j1, T* panel) {
  const int64_t L = g.positions, kvol = g.win.kernel_volume();
  const int64_t width = j1 - j0, image_size = g.win.channels * g.in_plane;
  const int64_t row_width = panel_width<T>(width);
  std::array<const T*, kMaxPanelCols> channels;  // column jj's image, channel 0 of the group
  std::array<const int64_t*, kMaxPanelCols> taps;  // column jj's row of the offset table
  for (int64_t jj = 0; jj < width; ++jj) {
    const int64_t j = j0 + jj;
    channels[jj] = x + j / L * image_size + grp * g.group_in * g.in_plane;
    taps[jj] = offsets + j % L * kvol;
  }
  for (int64_t c = 0; c < g.group_in; ++c) {
    for (int64_t t = 0; t < kvol; ++t) {
      T* const row = panel + (c * kvol + t) * row_width;
      for (int64_t jj = 0; jj < width; ++jj) {
        const int64_t at = taps[jj][t];
        row[jj] = at >= 0 ? channels[jj][c * g.in_plane + at] : T(0);
      }
      std::fill(row + width, row + row_width, T(0));
    }
  }
}

// Bytes of gathered B panels (all groups) per pass of the folded forward: the panels of a
// pass are shared by every thread from L3, and memory stays bounded for any batch.
constexpr int64_t kFoldedPassBytes = int64_t(1) << 23;

// Few output positions per image and a batch (LeNet's C5 has one position, late ResNet
// stages a few): a GEMM per image would be a sliver a few columns wide, so the columns of
// all images are placed side by side, one GEMM per job. Each value is gathered once
// through a per-(position, tap) offset table into shared B panels (splitting runs per image
// and row, as im2col_block does, cost more than the multiply here); then the jobs split the
// output channels when the weights are large (ResNet's 512 x 4608 at 4x4: every column
// tile re-reading 9.4 MB of weights was the layer's cost) and the columns otherwise.
template <typename T>
void forward_folded(const ConvGeom& g, const T* x, const ForwardWeights<T>& weights,
                    const T* bias, T* y) {
  const int64_t L = g.positions, R = g.rows, Kg = g.group_out, G = g.groups;
  const int64_t columns = g.win.batch * L, nr = panel_cols<T>();
  const int64_t threads = omp_get_max_threads(), panel_rows = gemm_kernels().panel_rows;
  if (nr > kMaxPanelCols) throw std::logic_error("conv: GEMM panels wider than kMaxPanelCols");
  const Dims offsets = fold_offsets(g);
  const int64_t pass = std::min(
      (columns + nr - 1) / nr * nr,
      std::max<int64_t>(nr, kFoldedPassBytes / (G * R * int64_t(sizeof(T))) / nr * nr));
  T* const panels = caller_buffer<T, kFoldedPanels>(G * R * pass);
  const bool split_rows = Kg * R * int64_t(sizeof(T)) > kSharedWeightBytes &&
                          Kg >= 2 * threads * panel_rows;
  for (int64_t c0 = 0; c0 < columns; c0 += pass) {
    const int64_t width = std::min(pass, columns - c0), panel_count = (width + nr - 1) / nr;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * panel_count; ++job) {
      const int64_t grp = job / panel_count, p = job % panel_count;
      const int64_t j0 = c0 + p * nr, j1 = std::min(c0 + width, j0 + nr);
      gather_folded_panel(g, offsets.data(), x, grp, j0, j1, panels + (grp * pass + p * nr) * R);
    }
    // Jobs: (group, output-channel block, column tile), tiles in whole panels.
    int64_t row_blocks = 1, tiles = 1;
    const int64_t wanted = std::max<int64_t>(1, (threads + G - 1) / G);
    if (split_rows) {
      row_blocks = wanted;
    } else {
      tiles = std::min(panel_count, std::max(wanted, (4 * threads + G - 1) / G));
    }
    const int64_t row_step = ((Kg + row_blocks - 1) / row_blocks + panel_rows - 1) /
                             panel_rows * panel_rows;
    const int64_t tile = (panel_count + tiles - 1) / tiles * nr;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * row_blocks * tiles; ++job) {
      const int64_t grp = job / (row_blocks * tiles), rb = job / tiles % row_blocks;
      const int64_t t0 = job % tiles * tile, t1 = std::min(width, t0 + tile);
      const int64_t k0 = std::min(Kg, rb * row_step), k1 = std::min(Kg, k0 + row_step);
      if (k0 >= k1 || t0 >= t1) continue;
      const int64_t n = t1 - t0;
      T* const result = scratch<T, 1>((k1 - k0) * n);
      gemm(k1 - k0, n, R, weights.group(grp, k0), panels + (grp * pass + t0) * R, result, n,
           false);
      const T* const group_bias = bias ? bias + grp * Kg : nullptr;
      for (int64_t j = c0 + t0; j < c0 + t1; ++j) {
        T* out = y + (j / L * g.out_channels + grp * Kg) * L + j % L;
        const T* src = result + (j - c0 - t0);
        for (int64_t k = k0; k < k1; ++k) {
          out[k * L] = group_bias ? src[(k - k0) * n] + group_bias[k] : src[(k - k0) * n];
        }
      }
    }
  }
}

// Whether images can share GEMMs: few output positions per image, more images than threads.
bool images_foldable(const ConvGeom& g) {
  return g.win.batch > 1 && g.positions <= kFoldedColumns &&
         g.win.batch * g.groups > omp_get_max_threads();
}

// Whether the forward folds images into shared GEMMs (forward_folded). The weight gradient
// folds exactly where the forward does, the input gradient wherever images are foldable (see
// conv_backward_input_impl).
bool folds_images(const ConvGeom& g) {
  return images_foldable(g) && (g.positions < kFoldBeforeShifted || !shifted_applies(g));
}

// dy of images [n0, n1) and one group as a (Kg x (n1 - n0) * L) matrix, images side by side.
template <typename T>
void gather_folded_grad(const ConvGeom& g, const T* dy, int64_t grp, int64_t n0, int64_t n1,
                        T* grad) {
  const int64_t L = g.positions, Kg = g.group_out, width = (n1 - n0) * L;
  for (int64_t n = n0; n < n1; ++n) {
    const T* src = dy + (n * g.out_channels + grp * Kg) * L;
    for (int64_t k = 0; k < Kg; ++k) {
      std::copy(src + k * L, src + (k + 1) * L, grad + k * width + (n - n0) * L);
    }
  }
}

// ---- Gathered windows: the shifted-window layout read through offset tables
//
// In the padded stride phases of an (image, group) (pad_group), the value under tap row r
// (shifted_offsets) at output position l is at taps[r] + positions[l], positions[l] =
// sum_d o_d * S_d. With the padded images of a pass `footprint` apart, every window of the
// pass is one GatheredRows operand: the GEMM broadcasts its values straight from the padded
// images, so its register tiles run across images and are full however small the maps
// (49 positions of a 7x7 map fill 64 lanes of the per-image shifted GEMM).

// Bytes of padded images and B panels one gathered pass holds, so memory stays bounded
// for any batch.
constexpr int64_t kGatheredPassBytes = int64_t(1) << 24;

// Each gathered pass transposes one operand into B panels (the forward: the weights; the
// weight gradient: dy), a cost per value of the product's other side, and reads the output
// channels a vector of lanes at a time; so it needs enough positions, rows and channels.
// Measured on ResNet-18's layers at batch 16 (2 threads, the AVX-512 build): the forward
// gains at 7x7 and 14x14 maps (256ch 7x7: 4.22 -> 3.44 ms, its input gradient 4.39 ->
// 3.55; 128 -> 256 stride 2: 2.56 -> 2.05) and loses at 4x4 (256 positions in the batch:
// 512 -> 512 even, 256 -> 512 stride 2 2.50 -> 2.84, the weights' transpose) and at 28x28
// (784 positions per image already fill the per-image tiles: 3.23 -> 3.66). The weight
// gradient gains on every 3x3 layer (256ch 7x7: 4.80 -> 3.35 ms, 512ch 4x4: 6.28 -> 4.83,
// 128ch 14x14: 4.28 -> 3.32). With fewer rows it gains only where strides make the shifted
// path compute and drop phase columns: the 3-channel 7x7 stride-2 stem (147 rows) at batch
// 16, 112x112, 5.84-6.44 -> 4.83-5.67 ms (batch 1 and 8 at 224x224: 0.82x, 0.96x; it lost,
// 6.10 -> 6.43, before the GEMM's narrow panels), 1x1 stride-2 layers even (64 and 128
// rows: 0.97x, 1.01x); unit strides lose below 256 rows (144 rows 1.07x, 27 rows 2.1x).
constexpr int64_t kGatheredMinPositions = 512;    // output positions of the batch (forward)
constexpr int64_t kGatheredMaxMapPositions = 256;  // per image (forward)
constexpr int64_t kGatheredMinRows = 256;          // (channel, tap) rows (weight gradient)
constexpr int64_t kGatheredMinStridedRows = 128;   // the same with a stride above 1
constexpr int64_t kGatheredMinOutputs = 32;        // output channels per group

bool forward_gathers(const ConvGeom& g) {
  return shifted_applies(g) && g.group_out >= kGatheredMinOutputs &&
         g.positions <= kGatheredMaxMapPositions &&
         g.win.batch * g.positions >= kGatheredMinPositions;
}

bool weight_gradient_gathers(const ConvGeom& g) {
  const int64_t min_rows = g.win.unit_strides() ? kGatheredMinRows : kGatheredMinStridedRows;
  return shifted_applies(g) && g.group_out >= kGatheredMinOutputs && g.rows >= min_rows;
}

Dims position_offsets(const ConvGeom& g, const ShiftedGeom& s) {
  const WindowGeom& w = g.win;
  Dims offsets(g.positions);
  for (int64_t l = 0; l < g.positions; ++l) {
    int64_t at = 0;
    for (int64_t d = w.dims() - 1, rest = l; d >= 0; --d) {
      at += rest % w.out[d] * s.step[d];
      rest /= w.out[d];
    }
    offsets[l] = at;
  }
  return offsets;
}

// Writes the (rows x cols) row-major block `src` (leading dimension lds) transposed into
// dst (leading dimension ldd), adding bias[j] to row j of dst when given, in square blocks
// so both sides stay cached.
template <typename T>
void transpose_block(const T* src, int64_t lds, int64_t rows, int64_t cols, T* dst, int64_t ldd,
                     const T* bias = nullptr) {
  constexpr int64_t kBlock = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kBlock) {
    const int64_t i1 = std::min(rows, i0 + kBlock);
    for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
      const int64_t j1 = std::min(cols, j0 + kBlock);
      for (int64_t j = j0; j < j1; ++j) {
        const T b = bias ? bias[j] : T(0);
        for (int64_t i = i0; i < i1; ++i) dst[j * ldd + i] = src[i * lds + j] + b;
      }
    }
  }
}

// A (rows x cols) row-major matrix (leading dimension lds) as rows [first, first + cols) of
// the B panels of a gathered product, whose columns are its rows (GemmPanelsFn layout with
// gathered_panel_cols, `depth` rows per panel, the last zero-padded to whole vectors): dy
// (Kg x L) for the weight gradient, W_g (Kg x R) for the forward.
template <typename T>
void rows_as_panel_columns(const T* src, int64_t lds, int64_t rows, int64_t cols,
                           int64_t first, int64_t depth, T* panels) {
  const int64_t nr = gathered_panel_cols<T>();
  for (int64_t k0 = 0; k0 < rows; k0 += nr) {
    const int64_t width = std::min(nr, rows - k0);
    const int64_t ld = panel_width(width, nr, vector_lanes<T>());
    T* const panel = panels + (k0 / nr) * depth * nr + first * ld;
    transpose_block(src + k0 * lds, lds, width, cols, panel, ld);
    if (width < ld) {
      for (int64_t l = 0; l < cols; ++l) {
        std::fill(panel + l * ld + width, panel + (l + 1) * ld, T(0));
      }
    }
  }
}

// Forward over gathered windows: per group, y^T (N * L x Kg) = windows (N * L x R) * W_g^T
// (R x Kg), the windows read in place from the padded images of a pass and W_g transposed
// into B panels once per call. Jobs own blocks of output positions (across images), so
// each output is one micro-kernel's sum in a fixed order; each block is transposed into y
// while it is still cached.
//
// With `flipped`, g is a layer's input gradient (input_gradient_geom) and w that layer's
// weights, whose per-group transpose, flipped, is g's weights (backward_input_by_forward):
// the panels are built from w in one pass instead of a copy and then a transpose (ResNet's
// 256ch 7x7 input gradient at batch 16: 3.23 -> 3.06 ms, 128ch 14x14 3.13 -> 3.08).
template <typename T>
void forward_gathered(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y,
                      bool flipped = false) {
  const ShiftedGeom s = make_shifted_geom(g);
  const Dims taps = shifted_offsets(g, s), positions = position_offsets(g, s);
  const int64_t R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch, L = g.positions;
  // Each group's panels are spaced as whole panels of Kg columns (the last may use fewer).
  const int64_t nr = gathered_panel_cols<T>(), group_cols = (Kg + nr - 1) / nr * nr;
  T* const weights = caller_buffer<T, kGatheredPanels>(G * R * group_cols);
  if (flipped) {
    // Depth row k * kvol + tap, column c of group grp: w[grp * Kf + k][c][kvol - 1 - tap],
    // Kf = g.group_in the layer's output channels per group.
    const int64_t kvol = g.win.kernel_volume(), Kf = g.group_in, W = vector_lanes<T>();
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * Kf; ++job) {
      const int64_t grp = job / Kf, k = job % Kf;
      const T* const src = w + (grp * Kf + k) * Kg * kvol;
      for (int64_t c0 = 0; c0 < Kg; c0 += nr) {
        const int64_t width = std::min(nr, Kg - c0), ld = panel_width(width, nr, W);
        T* const panel = weights + grp * R * group_cols + (c0 / nr) * R * nr;
        for (int64_t tap = 0; tap < kvol; ++tap) {
          T* const row = panel + (k * kvol + kvol - 1 - tap) * ld;
          for (int64_t c = 0; c < width; ++c) row[c] = src[(c0 + c) * kvol + tap];
          std::fill(row + width, row + ld, T(0));
        }
      }
    }
  } else {
    constexpr int64_t kRowBlock = 64;
    const int64_t row_blocks = (R + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * row_blocks; ++job) {
      const int64_t grp = job / row_blocks, r0 = job % row_blocks * kRowBlock;
      rows_as_panel_columns(w + grp * Kg * R + r0, R, Kg, std::min(R, r0 + kRowBlock) - r0,
                            r0, R, weights + grp * R * group_cols);
    }
  }
  const int64_t image_values = s.footprint + L * Kg;
  const int64_t per_pass = std::clamp<int64_t>(
      kGatheredPassBytes / (G * image_values * int64_t(sizeof(T))), 1, N);
  T* const padded = caller_buffer<T, kGatheredInput>(G * per_pass * s.footprint);
  T* const sums = caller_buffer<T, kGatheredSums>(G * per_pass * L * Kg);
  Dims row_offsets(per_pass * L);
  for (int64_t i = 0; i < per_pass; ++i) {
    for (int64_t l = 0; l < L; ++l) row_offsets[i * L + l] = i * s.footprint + positions[l];
  }
  const int64_t threads = omp_get_max_threads(), panel_rows = gemm_kernels().panel_rows;
  for (int64_t n0 = 0; n0 < N; n0 += per_pass) {
    const int64_t count = std::min(per_pass, N - n0), rows = count * L;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * count; ++job) {
      const int64_t grp = job / count, i = job % count;
      pad_group(g, s, x + (n0 + i) * g.win.channels * g.in_plane, grp * g.group_in,
                padded + (grp * per_pass + i) * s.footprint);
    }
    const int64_t blocks = std::min((rows + panel_rows - 1) / panel_rows,
                                    std::max<int64_t>(1, (threads + G - 1) / G));
    const int64_t step = ((rows + blocks - 1) / blocks + panel_rows - 1) / panel_rows * panel_rows;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * blocks; ++job) {
      const int64_t grp = job / blocks;
      const int64_t p0 = std::min(rows, job % blocks * step), p1 = std::min(rows, p0 + step);
      if (p0 >= p1) continue;
      T* const block = sums + (grp * per_pass * L + p0) * Kg;
      gemm(p1 - p0, Kg, R,
           GatheredRows<T>{padded + grp * per_pass * s.footprint, row_offsets.data() + p0,
                           taps.data()},
           weights + grp * R * group_cols, block, Kg, false);
      for (int64_t p = p0; p < p1;) {
        const int64_t i = p / L, l = p % L, len = std::min(p1 - p, L - l);
        transpose_block(block + (p - p0) * Kg, Kg, len, Kg,
                        y + ((n0 + i) * g.out_channels + grp * Kg) * L + l, L,
                        bias ? bias + grp * Kg : nullptr);
        p += len;
      }
    }
  }
}

// ---- Batch lanes: the images of the batch side by side in the vector lanes
//
// The padded images of a pass of `lanes` images (a multiple of the vector width W) are
// interleaved, cell-major: cell q of image i at q * lanes + i. For tap row r and output
// position l the `lanes` window values of the pass are then one contiguous run at
// (taps[r] + positions[l]) * lanes, so the GEMM reads B in place (LaneRuns), one output
// position of W images per vector: every lane works however small the maps, and the
// weights are read as the other forward paths read them, with no transpose.

// Bytes of padded and interleaved images one pass holds.
constexpr int64_t kLanePassBytes = int64_t(1) << 24;

// Where the forward would fold images (under 32 positions per image), batch lanes skip the
// folded forward's gather of every window value (positions x taps values per image) at the
// cost of padding and interleaving the input (about two copies of it): worth it from 4
// window values per input value, as long as the batch fills whole vectors (at most 1/8 of
// the lanes idle). Measured at batch 16, 2 threads, both builds in one process: ResNet-18's
// 512ch 4x4 (9 values per input value) forward 5.9-6.2 -> 4.5-4.7 ms, its input gradient
// (now a forward in lanes) 7.2-7.9 -> 6.3; its 256 -> 512 stride-2 layer (2.9; 2.61 ->
// 2.91 ms, the padding into stride phases 0.53 of it) and LeNet's C5 at batch 64 (1: 0.08
// -> 0.10 ms) keep the folded forward.
constexpr int64_t kLaneMinWindowValues = 4;

template <typename T>
bool forward_in_lanes(const ConvGeom& g) {
  const int64_t W = vector_lanes<T>(), N = g.win.batch;
  const int64_t window_values = g.positions * g.win.kernel_volume();
  return folds_images(g) && shifted_applies(g) && g.group_out >= kGatheredMinOutputs &&
         N >= W && (N + W - 1) / W * W * 8 <= 9 * N &&
         window_values >= kLaneMinWindowValues * g.in_plane;
}

// ---- Skipping the taps that read padding
//
// Where a window overhangs the input, its taps over the padding multiply zeros: 31% of the
// products of a 3x3 layer with padding 1 at 4x4 maps (ResNet-18's 512ch stage). Along the
// leading dims a window overhangs alike for a whole row of outputs (a row of the last dim),
// and the batch-lanes forward's register tiles hold consecutive positions, so a tile within
// one row sums over the taps that row reads (DepthSets) in the order it sums them all: the
// same bits, with 1/3 fewer products on a 4x4 map's first and last rows. Measured at batch
// 16 (2 threads): 512ch 4x4 forward 3.99 -> 3.52 ms, its input gradient (a forward in
// lanes) 4.17 -> 3.53; batch 32 9.01 -> 7.92 and 9.50 -> 8.27. Skipping per position
// (the last dim's padding too) or on the gathered paths' tiles of positions from several
// rows and images was tried and lost: reordering positions by the taps they read scatters
// the A operand's loads over more cache lines than the products saved (256ch 7x7 forward
// even to 3% slower, the weight gradient with tap-major rows 10-20% slower).

// Depth sets over a product's (channel, tap) rows c * kvol + t that leave out the taps a
// row of outputs (along the last dim) reads only as padding, and each output position's set
// (-1: its row reads every tap).
struct PaddingSets {
  Dims of_position, starts{0}, entries;
};

PaddingSets padding_sets(const ConvGeom& g) {
  const int64_t kvol = g.win.kernel_volume(), row = g.win.out.back();
  const Dims offsets = fold_offsets(g);
  PaddingSets sets;
  std::map<std::vector<bool>, int64_t> index;
  std::vector<bool> inside(kvol);
  for (int64_t l0 = 0; l0 < g.positions; l0 += row) {
    for (int64_t t = 0; t < kvol; ++t) {
      inside[t] = false;
      for (int64_t l = l0; l < l0 + row && !inside[t]; ++l) {
        inside[t] = offsets[l * kvol + t] >= 0;
      }
    }
    int64_t set = -1;
    if (!std::all_of(inside.begin(), inside.end(), [](bool in) { return in; })) {
      const auto found = index.emplace(inside, int64_t(sets.starts.size()) - 1);
      set = found.first->second;
      if (found.second) {
        for (int64_t c = 0; c < g.group_in; ++c) {
          for (int64_t t = 0; t < kvol; ++t) {
            if (inside[t]) sets.entries.push_back(c * kvol + t);
          }
        }
        sets.starts.push_back(int64_t(sets.entries.size()));
      }
    }
    sets.of_position.insert(sets.of_position.end(), row, set);
  }
  return sets;
}

// `multiply(grp, k0, k1, b, result, cols)` writes rows [k0, k1) of group grp's weights
// times the lane runs b, (k1 - k0) x cols, into result, in register tiles `tile_cols` wide.
template <typename T, typename Multiply>
void forward_lanes(const ConvGeom& g, const T* x, const Multiply& multiply, int64_t tile_cols,
                   const T* bias, T* y) {
  const ShiftedGeom s = make_shifted_geom(g);
  const Dims taps = shifted_offsets(g, s), positions = position_offsets(g, s);
  const int64_t R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch, L = g.positions;
  const int64_t W = vector_lanes<T>(), nr = tile_cols;
  const int64_t threads = omp_get_max_threads(), panel_rows = gemm_kernels().panel_rows;
  const int64_t most = std::max<int64_t>(
      W, kLanePassBytes / (2 * G * s.footprint * int64_t(sizeof(T))) / W * W);
  const int64_t lanes = std::min((N + W - 1) / W * W, most);
  T* const padded = caller_buffer<T, kGatheredInput>(G * lanes * s.footprint);
  T* const interleaved = caller_buffer<T, kLaneInput>(G * lanes * s.footprint);
  Dims row_offsets(R), vector_offsets(L * (lanes / W)), vector_set(L * (lanes / W));
  const PaddingSets sets = padding_sets(g);
  for (int64_t r = 0; r < R; ++r) row_offsets[r] = taps[r] * lanes;
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t u = 0; u < lanes / W; ++u) {
      vector_offsets[l * (lanes / W) + u] = positions[l] * lanes + u * W;
      vector_set[l * (lanes / W) + u] = sets.of_position[l];
    }
  }
  const bool split_rows = Kg * R * int64_t(sizeof(T)) > kSharedWeightBytes &&
                          Kg >= 2 * threads * panel_rows;
  constexpr int64_t kCellBlock = 256;
  const int64_t cell_blocks = (s.footprint + kCellBlock - 1) / kCellBlock;
  for (int64_t n0 = 0; n0 < N; n0 += lanes) {
    const int64_t count = std::min(lanes, N - n0);
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * lanes; ++job) {
      const int64_t grp = job / lanes, i = job % lanes;
      T* const dst = padded + job * s.footprint;
      if (i < count) {
        pad_group(g, s, x + (n0 + i) * g.win.channels * g.in_plane, grp * g.group_in, dst);
      } else {
        std::fill(dst, dst + s.footprint, T(0));
      }
    }
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * cell_blocks; ++job) {
      const int64_t grp = job / cell_blocks, q0 = job % cell_blocks * kCellBlock;
      const int64_t q1 = std::min(s.footprint, q0 + kCellBlock);
      transpose_block(padded + grp * lanes * s.footprint + q0, s.footprint, lanes, q1 - q0,
                      interleaved + (grp * s.footprint + q0) * lanes, lanes);
    }
    // Jobs: (group, output-channel block, block of vectors), vectors in whole register tiles.
    const int64_t vectors = L * (lanes / W), tile_vectors = nr / W;
    int64_t row_blocks = 1, tiles = 1;
    const int64_t wanted = std::max<int64_t>(1, (threads + G - 1) / G);
    if (split_rows) {
      row_blocks = wanted;
    } else {
      tiles = std::min((vectors + tile_vectors - 1) / tile_vectors, wanted);
    }
    const int64_t row_step = ((Kg + row_blocks - 1) / row_blocks + panel_rows - 1) /
                             panel_rows * panel_rows;
    const int64_t tile =
        ((vectors + tiles - 1) / tiles + tile_vectors - 1) / tile_vectors * tile_vectors;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * row_blocks * tiles; ++job) {
      const int64_t grp = job / (row_blocks * tiles), rb = job / tiles % row_blocks;
      const int64_t v0 = std::min(vectors, job % tiles * tile), v1 = std::min(vectors, v0 + tile);
      const int64_t k0 = std::min(Kg, rb * row_step), k1 = std::min(Kg, k0 + row_step);
      if (k0 >= k1 || v0 >= v1) continue;
      const int64_t cols = (v1 - v0) * W;
      T* const result = scratch<T, 1>((k1 - k0) * cols);
      const DepthSets skips{vector_set.data() + v0, sets.starts.data(), sets.entries.data(),
                            int64_t(sets.starts.size()) - 1};
      multiply(grp, k0, k1,
               LaneRuns<T>{interleaved + grp * s.footprint * lanes, row_offsets.data(),
                           vector_offsets.data() + v0, &skips},
               result, cols);
      // Column (v - v0) * W + e holds image u * W + e of position l, v = l * lanes / W + u.
      for (int64_t k = k0; k < k1; ++k) {
        const T b = bias ? bias[grp * Kg + k] : T(0);
        const T* const src = result + (k - k0) * cols;
        for (int64_t v = v0; v < v1; ++v) {
          const int64_t l = v / (lanes / W), first = v % (lanes / W) * W;
          const T* const run = src + (v - v0) * W - first;
          for (int64_t i = first; i < std::min(count, first + W); ++i) {
            y[((n0 + i) * g.out_channels + grp * Kg + k) * L + l] = run[i] + b;
          }
        }
      }
    }
  }
}

template <typename T>
void conv_forward_impl(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
  if (conv_direct_applies(g.win, g.out_channels, g.groups)) {
    return conv_direct_forward(g.win, g.out_channels, g.groups, x, w, bias, y);
  }
  const int64_t L = g.positions, R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch;
  if (forward_in_lanes<T>(g)) {
    const ForwardWeights<T> weights = forward_weights(g, w);
    const auto multiply = [&](int64_t grp, int64_t k0, int64_t k1, const LaneRuns<T>& b,
                              T* result, int64_t cols) {
      gemm(k1 - k0, cols, g.rows, weights.group(grp, k0), b, result, cols, false);
    };
    // Weights read in place take the wide register tiles (gemm.inl's kWideMR).
    const int64_t tile_cols = weights.row_stride ? gathered_panel_cols<T>() : panel_cols<T>();
    forward_lanes(g, x, multiply, tile_cols, bias, y);
    return;
  }
  if (forward_gathers(g)) {
    forward_gathered(g, x, w, bias, y);
    return;
  }
  const ForwardWeights<T> weights = forward_weights(g, w);
  const int64_t image_size = g.win.channels * g.in_plane;
  // Images whose GEMMs would be narrow, with more images than threads, share their GEMMs.
  if (folds_images(g)) {
    forward_folded(g, x, weights, bias, y);
    return;
  }
  if (shifted_applies(g)) {
    forward_shifted(g, x, weights, bias, y);
    return;
  }
  const int64_t threads = omp_get_max_threads();

  const int64_t images = N * G;
  int64_t tile = tile_width(R, L, images, sizeof(T));
  int64_t row_blocks = 1;
  const int64_t rows_per_panel = gemm_kernels().panel_rows;
  if (tile < kMinTileColumns && images < threads && Kg >= 2 * threads * rows_per_panel) {
    // Cutting few positions further would leave narrow, wasteful B panels and make every
    // job stream all the weights (VGG's 14x14 layers): split the output channels instead.
    tile = L;
    row_blocks = (threads + images - 1) / images;
  }
  const int64_t tiles = (L + tile - 1) / tile;
  const int64_t rows_per_block = (Kg + row_blocks - 1) / row_blocks;
  const int64_t row_step = (rows_per_block + rows_per_panel - 1) / rows_per_panel * rows_per_panel;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < images * tiles * row_blocks; ++job) {
    const int64_t n = job / (G * tiles * row_blocks), grp = job / (tiles * row_blocks) % G;
    const int64_t t = job / row_blocks % tiles, rb = job % row_blocks;
    const int64_t l0 = t * tile, l1 = std::min(L, l0 + tile), width = l1 - l0;
    const int64_t k0 = std::min(Kg, rb * row_step), k1 = std::min(Kg, k0 + row_step);
    if (k0 >= k1) continue;
    const T* input = x + n * image_size;
    T* out = y + (n * g.out_channels + grp * Kg) * L;
    const PackedA<T> group_weights = weights.group(grp, k0);
    if (g.pointwise) {
      const MatrixView<T> cols{input + grp * g.group_in * g.in_plane + l0, L, 1};
      gemm(k1 - k0, width, R, group_weights, cols, out + k0 * L + l0, L, false);
    } else {
      forward_tile(g, input, grp, group_weights, k0, k1, l0, l1, out);
    }
    if (bias) add_bias(bias + grp * Kg + k0, k1 - k0, width, out + k0 * L + l0, L);
  }
}

// Channels per job so that (N * G * blocks) jobs keep every thread busy.
int64_t channel_block(int64_t channels, int64_t jobs) {
  const int64_t threads = omp_get_max_threads();
  const int64_t blocks = std::min(channels, std::max<int64_t>(1, (2 * threads + jobs - 1) / jobs));
  return (channels + blocks - 1) / blocks;
}

// With unit strides the input gradient is itself a stride-1 convolution: of dy with the
// weights transposed per group (K <-> C) and flipped, padded by dilation*(kernel-1) - pad
// on each side. It then runs on the forward's shifted-window GEMM, with no col2im.
bool backward_input_as_forward(const ConvGeom& g) { return g.win.unit_strides(); }

// The stride-1 convolution whose forward is g's input gradient (see above).
ConvGeom input_gradient_geom(const ConvGeom& g) {
  const WindowGeom& win = g.win;
  const int64_t dims = win.dims();
  Dims dy_shape{win.batch, g.out_channels}, wt_shape{win.channels, g.group_out};
  dy_shape.insert(dy_shape.end(), win.out.begin(), win.out.end());
  wt_shape.insert(wt_shape.end(), win.kernel.begin(), win.kernel.end());
  Dims before(dims), after(dims), unit(dims, 1);
  for (int64_t d = 0; d < dims; ++d) {
    before[d] = win.dilation[d] * (win.kernel[d] - 1) - win.pad_before[d];
    after[d] = win.dilation[d] * (win.kernel[d] - 1) - win.pad_after[d];
  }
  return make_conv_geom("conv_backward_input", dy_shape, wt_shape, unit, before, after,
                        win.dilation, g.groups);
}

// g's input gradient as the forward of t = input_gradient_geom(g).
template <typename T>
void backward_input_by_forward(const ConvGeom& g, const ConvGeom& t, const T* dy, const T* w,
                               T* dx) {
  const WindowGeom& win = g.win;
  const int64_t kvol = win.kernel_volume();
  const int64_t Kg = g.group_out, Cg = g.group_in, R = g.rows;
  if (forward_in_lanes<T>(t)) {
    // The flipped, transposed weights read in place: row c, depth (k, tap) of group grp at
    // w + (grp * Kg + k) * Cg * kvol + c * kvol + kvol - 1 - tap (ResNet-18's 512ch 4x4:
    // copying the 9.4 MB first took 0.66 ms of its 5.1).
    Dims rows(Cg), depth(t.rows);
    for (int64_t c = 0; c < Cg; ++c) rows[c] = c * kvol;
    for (int64_t k = 0; k < Kg; ++k) {
      for (int64_t tap = 0; tap < kvol; ++tap) {
        depth[k * kvol + tap] = k * Cg * kvol + kvol - 1 - tap;
      }
    }
    const auto multiply = [&](int64_t grp, int64_t c0, int64_t c1, const LaneRuns<T>& b,
                              T* result, int64_t cols) {
      gemm(c1 - c0, cols, t.rows,
           GatheredRows<T>{w + grp * Kg * Cg * kvol, rows.data() + c0, depth.data()}, b,
           result, cols, false);
    };
    forward_lanes(t, dy, multiply, gathered_panel_cols<T>(), static_cast<const T*>(nullptr),
                  dx);
    return;
  }
  if (!conv_direct_applies(t.win, t.out_channels, t.groups) && forward_gathers(t)) {
    forward_gathered(t, dy, w, static_cast<const T*>(nullptr), dx, true);
    return;
  }
  // wt[grp][c][k][tap] = w[grp * Kg + k][c][kvol - 1 - tap]
  T* const wt = caller_buffer<T, kTransposedWeights>(g.out_channels * R);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < win.channels; ++row) {
    const int64_t grp = row / Cg, c = row % Cg;
    for (int64_t k = 0; k < Kg; ++k) {
      const T* src = w + ((grp * Kg + k) * Cg + c) * kvol;
      T* dst = wt + (row * Kg + k) * kvol;
      for (int64_t tap = 0; tap < kvol; ++tap) dst[tap] = src[kvol - 1 - tap];
    }
  }
  conv_forward_impl(t, dy, wt, static_cast<const T*>(nullptr), dx);
}

// The input gradient where images fold: per group, the column gradient of
// all images at once, W_g^T (R x Kg) * dy (Kg x N * L), scattered back through the
// forward's (position, tap) offset table. Jobs own input channels of one group: each reads
// only its rows of W_g^T, and every input cell is summed by one job in a fixed order.
template <typename T>
void backward_input_folded(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  const int64_t L = g.positions, R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch;
  const int64_t Cg = g.group_in, kvol = g.win.kernel_volume();
  const Dims offsets = fold_offsets(g);
  // W_g^T with contiguous rows, so that each job packs its rows as a plain GEMM operand.
  T* const wt = caller_buffer<T, kTransposedWeights>(g.out_channels * R);
  constexpr int64_t kRowBlock = 32;
  const int64_t row_blocks = (R + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < G * row_blocks; ++job) {
    const int64_t grp = job / row_blocks, r0 = job % row_blocks * kRowBlock;
    transpose_block(w + grp * Kg * R + r0, R, Kg, std::min(R, r0 + kRowBlock) - r0,
                    wt + (grp * R + r0) * Kg, Kg);
  }
  const int64_t cblock = channel_block(Cg, G);
  const int64_t cblocks = (Cg + cblock - 1) / cblock;
  const int64_t per_pass =
      std::clamp<int64_t>(kTileBytes / (cblock * kvol * L * int64_t(sizeof(T))), 1, N);
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < G * cblocks; ++job) {
    const int64_t grp = job / cblocks, c0 = job % cblocks * cblock;
    const int64_t c1 = std::min(Cg, c0 + cblock), rows = (c1 - c0) * kvol;
    T* const grad = scratch<T, 1>(Kg * per_pass * L);
    T* const cols = scratch<T>(rows * per_pass * L);
    for (int64_t n0 = 0; n0 < N; n0 += per_pass) {
      const int64_t n1 = std::min(N, n0 + per_pass), width = (n1 - n0) * L;
      gather_folded_grad(g, dy, grp, n0, n1, grad);
      gemm(rows, width, Kg, MatrixView<T>{wt + (grp * R + c0 * kvol) * Kg, Kg, 1},
           MatrixView<T>{grad, width, 1}, cols, width, false);
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t c = c0; c < c1; ++c) {
          T* const channel = dx + (n * g.win.channels + grp * Cg + c) * g.in_plane;
          std::fill(channel, channel + g.in_plane, T(0));
          const T* const col_rows = cols + (c - c0) * kvol * width + (n - n0) * L;
          for (int64_t l = 0; l < L; ++l) {
            const int64_t* const tap_offsets = offsets.data() + l * kvol;
            for (int64_t t = 0; t < kvol; ++t) {
              if (tap_offsets[t] >= 0) channel[tap_offsets[t]] += col_rows[t * width + l];
            }
          }
        }
      }
    }
  }
}

template <typename T>
void conv_backward_input_impl(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  if (conv_direct_backward_input_applies(g.win, g.out_channels, g.groups)) {
    return conv_direct_backward_input(g.win, g.out_channels, g.groups, dy, w, dx);
  }
  if (backward_input_as_forward(g)) {
    // Folded images scatter their column gradients; a forward in batch lanes reads in place.
    const ConvGeom t = input_gradient_geom(g);
    if (!folds_images(g) || forward_in_lanes<T>(t)) {
      backward_input_by_forward(g, t, dy, w, dx);
      return;
    }
  }
  // Strided layers have no shifted-window input gradient: the per-image alternative below is
  // a GEMM L columns wide, whose last register tile is mostly idle at a few dozen positions.
  // Folded, the images share full tiles. Measured at batch 16 (2 threads, 3x3 stride 2,
  // 128 -> 256 channels): 6x6 outputs 2.47 -> 1.64 ms, 7x7 (ResNet-18's) 3.15 -> 2.21, 9x9
  // 4.25 -> 3.55, 10x10 4.98 -> 4.48, 11x11 5.94 -> 5.78; 8x8 (64 -> 128) even.
  if (images_foldable(g)) {
    backward_input_folded(g, dy, w, dx);
    return;
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

// Bytes of weight-gradient copies the batch chunks of one call may add (one per chunk
// after the first): enough for a chunk per thread on most layers.
constexpr int64_t kPartialBytes = int64_t(1) << 24;

// dw += each of the `count` partial sums (dw_size values each), in order per element.
template <typename T>
void add_partials(const T* partial, int64_t count, int64_t dw_size, T* dw) {
  if (count == 0) return;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < dw_size; ++i) {
    T sum = dw[i];
    for (int64_t chunk = 0; chunk < count; ++chunk) sum += partial[chunk * dw_size + i];
    dw[i] = sum;
  }
}

// Copies dy of one (image, group) (Kg x L) into padded coordinates (Kg x columns), zero at
// the positions the shifted-window GEMM computes but the output drops.
template <typename T>
void spread_columns(const ConvGeom& g, const ShiftedGeom& s, const T* dy, T* dst) {
  const WindowGeom& w = g.win;
  const int64_t dims = w.dims(), L = g.positions, last = w.out[dims - 1];
  const int64_t runs = L / last;
  for (int64_t k = 0; k < g.group_out; ++k) {
    T* row = dst + k * s.columns;
    std::fill(row, row + s.columns, T(0));
    for (int64_t run = 0; run < runs; ++run) {
      int64_t rest = run, at = 0;
      for (int64_t d = dims - 2; d >= 0; --d) {
        at += rest % w.out[d] * s.step[d];
        rest /= w.out[d];
      }
      std::copy(dy + k * L + run * last, dy + k * L + (run + 1) * last, row + at);
    }
  }
}

// Stride-1 weight gradient: dW_g (Kg x R) = sum_n dy'[n, g] (Kg x columns) * B^T, where
// dy' is dy in padded coordinates and B[r][j] = padded input[offset(r) + j]: both operands
// run along the positions, so the product is taken as dot products read in place, or for
// many output channels as a GEMM that gathers B^T while packing (kDotMaxOutputs). Jobs own
// column blocks of dW (and batch chunks, summed after in chunk order), so the result does
// not depend on scheduling.
template <typename T>
void backward_weight_shifted(const ConvGeom& g, const T* x, const T* dy, T* dw) {
  const ShiftedGeom s = make_shifted_geom(g);
  const Dims offsets = shifted_offsets(g, s);
  const int64_t R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch;
  const int64_t threads = omp_get_max_threads(), nr = panel_cols<T>();
  // Images are split across threads before the rows of dW: a row split makes every job
  // pad all images and spread all of dy again (ResNet-18's layers at batch 16 on 2 threads:
  // 7x7 stem 7.5 -> 5.9 ms, 64ch 28x28 5.3-6.6 -> 4.1-4.9 ms, 128ch 14x14 5.1-6.0 ->
  // 4.0-4.2 ms); the chunks' partial sums are added in chunk order after, so large dW
  // (VGG's 512 x 4608) keep the row split rather than a copy per thread.
  const int64_t dw_bytes = g.out_channels * R * int64_t(sizeof(T));
  const int64_t chunks = std::min({N, std::max<int64_t>(1, threads / G),
                                   std::max<int64_t>(1, kPartialBytes / dw_bytes)});
  const int64_t r_blocks = std::min((R + nr - 1) / nr,
                                    std::max<int64_t>(1, (threads + G * chunks - 1) / (G * chunks)));
  const int64_t r_step = ((R + r_blocks - 1) / r_blocks + nr - 1) / nr * nr;
  const int64_t per_chunk = (N + chunks - 1) / chunks;
  const bool dot_products = Kg <= kDotMaxOutputs;
  // Images per dot-product pass: enough positions that each register tile's closing lane
  // sums are a few percent of its work (14x14 maps: 8 images).
  const int64_t per_pass =
      dot_products ? std::clamp<int64_t>(kDotDepth / s.columns, 1, per_chunk) : 1;
  const int64_t dw_size = g.out_channels * R;
  T* const partial = caller_buffer<T, kPartialSums>((chunks - 1) * dw_size);
  std::fill(partial, partial + (chunks - 1) * dw_size, T(0));
  std::fill(dw, dw + dw_size, T(0));
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < G * r_blocks * chunks; ++job) {
    const int64_t chunk = job / (G * r_blocks), grp = job / r_blocks % G, rb = job % r_blocks;
    const int64_t r0 = std::min(R, rb * r_step), r1 = std::min(R, r0 + r_step);
    if (r0 >= r1) continue;
    T* const target = chunk == 0 ? dw : partial + (chunk - 1) * dw_size;
    T* const padded_input = scratch<T, 2>(per_pass * s.footprint);
    T* const grad = scratch<T, 1>(per_pass * Kg * s.columns);
    const int64_t n_end = std::min(N, (chunk + 1) * per_chunk);
    for (int64_t n0 = chunk * per_chunk; n0 < n_end; n0 += per_pass) {
      const int64_t count = std::min(per_pass, n_end - n0);
      for (int64_t i = 0; i < count; ++i) {
        const int64_t n = n0 + i;
        pad_group(g, s, x + n * g.win.channels * g.in_plane, grp * g.group_in,
                  padded_input + i * s.footprint);
        spread_columns(g, s, dy + (n * g.out_channels + grp * Kg) * g.positions,
                       grad + i * Kg * s.columns);
      }
      if (dot_products) {
        gemm_dot(Kg, r1 - r0, s.columns, MatrixView<T>{grad, s.columns, 1},
                 ShiftedRows<T>{padded_input, offsets.data() + r0, false},
                 target + grp * Kg * R + r0, R, true,
                 DotBatch{count, Kg * s.columns, s.footprint});
        continue;
      }
      for (int64_t i = 0; i < count; ++i) {
        gemm(Kg, r1 - r0, s.columns, MatrixView<T>{grad + i * Kg * s.columns, s.columns, 1},
             nullptr, ShiftedRows<T>{padded_input + i * s.footprint, offsets.data() + r0, true},
             target + grp * Kg * R + r0, R, true);
      }
    }
  }
  add_partials(partial, chunks - 1, dw_size, dw);
}

// The weight gradient where the forward folds images: per group, dW_g (Kg x R) =
// dy (Kg x N * L) * cols (N * L x R), the columns of several images gathered at a time
// through the forward's offset table. Jobs own column blocks of dW and walk the images in
// order, so the sums do not depend on scheduling.
template <typename T>
void backward_weight_folded(const ConvGeom& g, const T* x, const T* dy, T* dw) {
  const int64_t L = g.positions, R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch;
  const int64_t Cg = g.group_in, kvol = g.win.kernel_volume(), nr = panel_cols<T>();
  const int64_t image_size = g.win.channels * g.in_plane;
  const Dims offsets = fold_offsets(g);
  const int64_t threads = omp_get_max_threads();
  const int64_t r_blocks =
      std::min((R + nr - 1) / nr, std::max<int64_t>(1, (threads + G - 1) / G));
  const int64_t r_step = ((R + r_blocks - 1) / r_blocks + nr - 1) / nr * nr;
  const int64_t per_pass =
      std::clamp<int64_t>(kTileBytes / (r_step * L * int64_t(sizeof(T))), 1, N);
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < G * r_blocks; ++job) {
    const int64_t grp = job / r_blocks;
    const int64_t r0 = std::min(R, job % r_blocks * r_step), r1 = std::min(R, r0 + r_step);
    if (r0 >= r1) continue;
    const int64_t rows = r1 - r0;
    T* const grad = scratch<T, 1>(Kg * per_pass * L);
    T* const cols = scratch<T>(per_pass * L * rows);
    for (int64_t n0 = 0; n0 < N; n0 += per_pass) {
      const int64_t n1 = std::min(N, n0 + per_pass), width = (n1 - n0) * L;
      gather_folded_grad(g, dy, grp, n0, n1, grad);
      for (int64_t j = 0; j < width; ++j) {
        const T* const image = x + (n0 + j / L) * image_size + grp * Cg * g.in_plane;
        const int64_t* const tap_offsets = offsets.data() + j % L * kvol;
        T* const row = cols + j * rows - r0;
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t at = tap_offsets[r % kvol];
          row[r] = at >= 0 ? image[r / kvol * g.in_plane + at] : T(0);
        }
      }
      gemm(Kg, rows, width, MatrixView<T>{grad, width, 1}, MatrixView<T>{cols, rows, 1},
           dw + grp * Kg * R + r0, R, n0 > 0);
    }
  }
}

// Depth blocks of the gathered weight gradient: dW^T (2.4 MB for 256ch 3x3) outgrows L2, and
// with the usual 256-deep blocks went back to L3 after each (one thread, 2304 x 256 x 784:
// 156 GFLOP/s at 256, 163 at 392 and 784, 163 at 1152). A sum over images is not
// bitwise invariant to batching anyway (fastconv.dask adds its blocks' gradients).
constexpr int64_t kWeightGradientDepth = 768;

// Weight gradient over gathered windows: per group, dW_g^T (R x Kg) = windows (R x N * L) *
// dy^T (N * L x Kg), the windows read in place from the padded images and dy transposed
// into B panels, a pass of images at a time. Jobs own rows of dW_g^T and add the passes in
// order, so every sum runs over the images in one fixed order whatever the thread count.
template <typename T>
void backward_weight_gathered(const ConvGeom& g, const T* x, const T* dy, T* dw) {
  const ShiftedGeom s = make_shifted_geom(g);
  const Dims taps = shifted_offsets(g, s), positions = position_offsets(g, s);
  const int64_t R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch, L = g.positions;
  // Each group's panels are spaced as whole panels of Kg columns (the last may use fewer).
  const int64_t nr = gathered_panel_cols<T>(), group_cols = (Kg + nr - 1) / nr * nr;
  const int64_t image_values = s.footprint + L * group_cols;
  const int64_t per_pass = std::clamp<int64_t>(
      kGatheredPassBytes / (G * image_values * int64_t(sizeof(T))), 1, N);
  T* const padded = caller_buffer<T, kGatheredInput>(G * per_pass * s.footprint);
  T* const panels = caller_buffer<T, kGatheredPanels>(G * per_pass * L * group_cols);
  T* const sums = caller_buffer<T, kGatheredSums>(G * R * Kg);
  Dims depth_offsets(per_pass * L);
  for (int64_t i = 0; i < per_pass; ++i) {
    for (int64_t l = 0; l < L; ++l) depth_offsets[i * L + l] = i * s.footprint + positions[l];
  }
  const int64_t threads = omp_get_max_threads(), panel_rows = gemm_kernels().panel_rows;
  const int64_t r_blocks = std::min((R + panel_rows - 1) / panel_rows,
                                    std::max<int64_t>(1, (threads + G - 1) / G));
  const int64_t r_step = ((R + r_blocks - 1) / r_blocks + panel_rows - 1) / panel_rows * panel_rows;
  for (int64_t n0 = 0; n0 < N; n0 += per_pass) {
    const int64_t count = std::min(per_pass, N - n0), depth = count * L;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * count; ++job) {
      const int64_t grp = job / count, i = job % count, n = n0 + i;
      pad_group(g, s, x + n * g.win.channels * g.in_plane, grp * g.group_in,
                padded + (grp * per_pass + i) * s.footprint);
      rows_as_panel_columns(dy + (n * g.out_channels + grp * Kg) * L, L, Kg, L, i * L, depth,
                            panels + grp * per_pass * L * group_cols);
    }
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * r_blocks; ++job) {
      const int64_t grp = job / r_blocks;
      const int64_t r0 = std::min(R, job % r_blocks * r_step), r1 = std::min(R, r0 + r_step);
      if (r0 >= r1) continue;
      T* const block = sums + (grp * R + r0) * Kg;
      gemm(r1 - r0, Kg, depth,
           GatheredRows<T>{padded + grp * per_pass * s.footprint, taps.data() + r0,
                           depth_offsets.data(), kWeightGradientDepth},
           panels + grp * per_pass * L * group_cols, block, Kg, n0 > 0);
      // The last pass transposes its block into dW while the block is still cached.
      if (n0 + count == N) transpose_block(block, Kg, r1 - r0, Kg, dw + grp * Kg * R + r0, R);
    }
  }
}

// The gathered weight gradient one image at a time, where images have many output
// positions: each job pads one (image, group), transposes its dy into panels of its own and
// multiplies them while both are in its core's L2, into that image's partial dW_g^T; the
// partials are added in image order. The batch-wide passes above transpose dy for every
// image first and each thread then reads all of those panels back from L3 (ResNet's stem at
// batch 16: 12.8 MB of them). Measured at 2 threads: the stem (3 -> 64, 7x7 stride 2,
// 112x112) at batch 16 4.59 -> 3.42 ms and at batch 8 (224x224) 9.59 -> 8.01; 64ch 28x28
// at batch 16 3.11 -> 2.91, 56x56 12.38 -> 11.37; 128ch 56x56 at batch 8 22.90 -> 21.88.
// Below 512 positions the partials cost more than they save (128ch 14x14: 2.86 -> 3.17).
// Each image's sum and their order do not depend on the threads.
constexpr int64_t kByImageMinPositions = 512;

bool weight_gradient_by_image(const ConvGeom& g, int64_t elem_size) {
  const int64_t threads = omp_get_max_threads();
  return g.positions >= kByImageMinPositions && g.win.batch * g.groups >= 2 * threads &&
         2 * threads * g.groups * g.rows * g.group_out * elem_size <= kPartialBytes;
}

template <typename T>
void backward_weight_by_image(const ConvGeom& g, const T* x, const T* dy, T* dw) {
  const ShiftedGeom s = make_shifted_geom(g);
  const Dims taps = shifted_offsets(g, s), positions = position_offsets(g, s);
  const int64_t R = g.rows, Kg = g.group_out, G = g.groups, N = g.win.batch, L = g.positions;
  const int64_t nr = gathered_panel_cols<T>(), group_cols = (Kg + nr - 1) / nr * nr;
  const int64_t group_size = R * Kg;
  // Images per round: their partials stay within kPartialBytes.
  const int64_t per_round =
      std::clamp<int64_t>(kPartialBytes / (G * group_size * int64_t(sizeof(T))), 1, N);
  T* const partial = caller_buffer<T, kPartialSums>(per_round * G * group_size);
  T* const sums = caller_buffer<T, kGatheredSums>(G * group_size);
  constexpr int64_t kRowBlock = 32;
  const int64_t row_blocks = (R + kRowBlock - 1) / kRowBlock;
  for (int64_t n0 = 0; n0 < N; n0 += per_round) {
    const int64_t count = std::min(per_round, N - n0);
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < count * G; ++job) {
      const int64_t n = n0 + job / G, grp = job % G;
      T* const padded = scratch<T>(s.footprint);
      T* const panels = scratch<T, 1>(L * group_cols);
      pad_group(g, s, x + n * g.win.channels * g.in_plane, grp * g.group_in, padded);
      rows_as_panel_columns(dy + (n * g.out_channels + grp * Kg) * L, L, Kg, L, 0, L, panels);
      gemm(R, Kg, L,
           GatheredRows<T>{padded, taps.data(), positions.data(), kWeightGradientDepth},
           panels, partial + job * group_size, Kg, false);
    }
    // The round's partials added to dW_g^T in image order, a block of rows per job; the
    // last round transposes its block into dW.
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < G * row_blocks; ++job) {
      const int64_t grp = job / row_blocks, r0 = job % row_blocks * kRowBlock;
      const int64_t values = (std::min(R, r0 + kRowBlock) - r0) * Kg;
      T* const sum = sums + grp * group_size + r0 * Kg;
      for (int64_t i = 0; i < count; ++i) {
        const T* const image = partial + (i * G + grp) * group_size + r0 * Kg;
        if (n0 + i == 0) {
          std::copy(image, image + values, sum);
        } else {
          for (int64_t e = 0; e < values; ++e) sum[e] += image[e];
        }
      }
      if (n0 + count == N) {
        transpose_block(sum, Kg, values / Kg, Kg, dw + grp * Kg * R + r0, R);
      }
    }
  }
}

template <typename T>
void conv_backward_weight_impl(const ConvGeom& g, const T* x, const T* dy, T* dw) {
  if (conv_direct_backward_weight_applies(g.win, g.out_channels, g.groups)) {
    return conv_direct_backward_weight(g.win, g.out_channels, g.groups, x, dy, dw);
  }
  if (weight_gradient_gathers(g)) {
    if (weight_gradient_by_image(g, sizeof(T))) {
      backward_weight_by_image(g, x, dy, dw);
    } else {
      backward_weight_gathered(g, x, dy, dw);
    }
    return;
  }
  if (folds_images(g)) {
    backward_weight_folded(g, x, dy, dw);
    return;
  }
  if (shifted_applies(g) && g.group_out >= gemm_kernels().panel_rows) {
    backward_weight_shifted(g, x, dy, dw);
    return;
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
  T* const partial = caller_buffer<T, kPartialSums>((chunks - 1) * dw_size);
  std::fill(dw, dw + dw_size, T(0));
  std::fill(partial, partial + (chunks - 1) * dw_size, T(0));
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < G * cblocks * chunks; ++job) {
    const int64_t chunk = job / (G * cblocks), grp = job / cblocks % G, cb = job % cblocks;
    const int64_t c0 = cb * cblock, c1 = std::min(Cg, c0 + cblock);
    const int64_t rows = (c1 - c0) * kvol;
    T* buf = scratch<T>(rows * tile);
    T* target = chunk == 0 ? dw : partial + (chunk - 1) * dw_size;
    T* out = target + grp * Kg * R + c0 * kvol;
    for (int64_t n = chunk * per_chunk; n < std::min(N, (chunk + 1) * per_chunk); ++n) {
      const T* image = x + n * g.win.channels * g.in_plane;
      for (int64_t l0 = 0; l0 < L; l0 += tile) {
        const int64_t l1 = std::min(L, l0 + tile), width = l1 - l0;
        im2col_block(g.win, image, grp * Cg + c0, grp * Cg + c1, l0, l1, buf, width);
        const T* grad = dy + (n * g.out_channels + grp * Kg) * L + l0;
        if (Kg < gemm_kernels().panel_rows) {
          // Depthwise-like groups: a handful of dot products, which a GEMM register tile
          // built for several rows would mostly waste.
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
  add_partials(partial, chunks - 1, dw_size, dw);
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
