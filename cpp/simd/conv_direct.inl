// One job of the direct convolution (plan and layout in fastconv/conv_direct.hpp).
// The output's innermost dim is swept in chunks of up to kMaxVectors vectors held in
// registers; for every input channel, valid outer tap and innermost tap, the weight is
// broadcast and multiplied into the chunk with unit-stride loads from the prepared input.
// Padding never reaches the inner loop: outer taps that fall into it are dropped per output
// row, and the innermost dim reads the zeros written around the copied row.
// Compiled once per instruction set (see cpu_features.hpp): FC_ISA names the namespace,
// keeping each copy's templates apart at link time, and FC_VEC_BYTES is the vector width.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include <immintrin.h>

#include "fastconv/conv_direct.hpp"

namespace fastconv {
namespace FC_ISA {
namespace {

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(FC_VEC_BYTES)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(FC_VEC_BYTES)));
};

// A register block is up to kMaxLines lines of up to kMaxVectors vectors each, sized to about
// kAccumulators accumulators: 8 independent FMA chains cover the FMA latency, and with one
// broadcast weight and one loaded input they fit the 16 registers of the baseline and AVX2.
constexpr int kMaxVectors = 4;
constexpr int kMaxLines = 4;
constexpr int64_t kAccumulators = 8;

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// Rows are often a few dozen values: inline vector moves beat calls to memmove/memset, and
// a last vector that overlaps the previous one avoids a scalar tail.
template <typename T>
void copy_short(const T* src, int64_t count, T* dst) {
  using V = typename Vec<T>::type;
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  if (count < lanes) {
    for (int64_t i = 0; i < count; ++i) dst[i] = src[i];
    return;
  }
  V v;
  for (int64_t i = 0; i + lanes < count; i += lanes) {
    std::memcpy(&v, src + i, sizeof(V));
    std::memcpy(dst + i, &v, sizeof(V));
  }
  std::memcpy(&v, src + count - lanes, sizeof(V));
  std::memcpy(dst + count - lanes, &v, sizeof(V));
}

template <typename T>
void fill_zero(T* dst, int64_t count) {
  using V = typename Vec<T>::type;
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  if (count < lanes) {
    for (int64_t i = 0; i < count; ++i) dst[i] = T(0);
    return;
  }
  const V zero = {};
  for (int64_t i = 0; i + lanes < count; i += lanes) std::memcpy(dst + i, &zero, sizeof(V));
  std::memcpy(dst + count - lanes, &zero, sizeof(V));
}

// Where each phase of a prepared row comes from, the same for every row of a job: phase p,
// index i holds padded position (j0 + i) * stride + p; indices [lo[p], hi[p]) are inside
// the input, starting at input position first[p]; the rest are zeros.
struct RowLayout {
  int64_t phases, phase_len, stride;
  std::vector<int64_t> lo, hi, first;
};

void make_row_layout(const DirectConvPlan& p, int64_t j0, RowLayout& l) {
  const WindowGeom& g = *p.win;
  const int64_t last = g.dims() - 1;
  const int64_t in_len = g.in[last], pad = g.pad_before[last], stride = g.stride[last];
  l.phases = p.phases;
  l.phase_len = p.phase_len;
  l.stride = stride;
  l.lo.resize(p.phases);
  l.hi.resize(p.phases);
  l.first.resize(p.phases);
  for (int64_t ph = 0; ph < p.phases; ++ph) {
    // Divide before subtracting j0: (j0 + i) * stride may not fit in int64 for i past the row.
    l.lo[ph] = std::clamp(ceil_div(pad - ph, stride) - j0, int64_t(0), p.phase_len);
    l.hi[ph] = std::clamp(floor_div(in_len - 1 + pad - ph, stride) - j0 + 1, l.lo[ph], p.phase_len);
    l.first[ph] = l.hi[ph] > l.lo[ph] ? (j0 + l.lo[ph]) * stride + ph - pad : 0;
  }
}

template <typename T>
void prepare_row(const T* src, const RowLayout& l, T* dst) {
  for (int64_t ph = 0; ph < l.phases; ++ph) {
    T* row = dst + ph * l.phase_len;
    const int64_t lo = l.lo[ph], hi = l.hi[ph];
    fill_zero(row, lo);
    if (l.stride == 1) {
      copy_short(src + l.first[ph], hi - lo, row + lo);
    } else {
      const T* in = src + l.first[ph];
      for (int64_t i = 0; i < hi - lo; ++i) row[lo + i] = in[i * l.stride];
    }
    fill_zero(row + hi, l.phase_len - hi);
  }
}

// Index arrays of one job, kept across the jobs of one thread so that a job allocates
// nothing. Each thread's job range gets its own on the stack: a thread_local one would be
// reached through __tls_get_addr, which GCC re-derives after every call once it has
// propagated the object's address into the helpers.
struct Workspace {
  RowLayout layout;
  std::vector<int64_t> origin, extent, prepared_stride, weight_stride, pos, lo, hi, tap;
  std::vector<int64_t> outer_input, outer_weight;
};

// The outputs one register block computes at once: up to kMaxLines "lines" (output rows of
// one channel, or output channels of one row) that differ by fixed steps in the prepared
// input, the weights, the bias and the output.
struct Lines {
  int64_t input_step;
  int64_t weight_step;
  int64_t bias_step;
  int64_t out_step;
};

// Everything a sweep along one output row needs; the pointers are those of line 0.
template <typename T>
struct Sweep {
  const T* input;  // prepared input, channel 0, at the row's first output
  const T* w;      // weights of channel 0
  const T* bias;   // null for no bias
  T* out;
  int64_t channels, channel_stride, kernel_volume, kernel_last;
  const int64_t* tap_offset;    // innermost taps (DirectConvPlan::tap_offset)
  const int64_t* outer_input;   // outer taps: offset into one prepared channel
  const int64_t* outer_weight;  // outer taps: offset into one channel's weights
  int64_t outer_taps;
  Lines lines;
};

// Outputs [j, j + count) of RB lines, count <= NV * lanes.
template <typename T, int NV, int RB>
void chunk(const Sweep<T>& s, int64_t j, int64_t count) {
  using V = typename Vec<T>::type;
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  V acc[RB][NV];
  for (int r = 0; r < RB; ++r) {
    const T b = s.bias ? s.bias[r * s.lines.bias_step] : T(0);
    // x - 0 is exactly x for every x, -0 included: a plain broadcast.
    for (int v = 0; v < NV; ++v) acc[r][v] = b - V{};
  }
  for (int64_t c = 0; c < s.channels; ++c) {
    for (int64_t t = 0; t < s.outer_taps; ++t) {
      const T* row = s.input + c * s.channel_stride + s.outer_input[t] + j;
      const T* wt = s.w + c * s.kernel_volume + s.outer_weight[t];
      for (int64_t b = 0; b < s.kernel_last; ++b) {
        const T* src = row + s.tap_offset[b];
        for (int r = 0; r < RB; ++r) {
          const T wb = wt[r * s.lines.weight_step + b];
          for (int v = 0; v < NV; ++v) {
            V xv;
            std::memcpy(&xv, src + r * s.lines.input_step + v * lanes, sizeof(V));
            acc[r][v] += wb * xv;
          }
        }
      }
    }
  }
  for (int r = 0; r < RB; ++r) {
    T* out = s.out + r * s.lines.out_step + j;
    if (count == NV * lanes) {
      std::memcpy(out, acc[r], sizeof(acc[r]));
    } else {
      T tail[NV * lanes];
      std::memcpy(tail, acc[r], sizeof(acc[r]));
      for (int64_t i = 0; i < count; ++i) out[i] = tail[i];
    }
  }
}

// RB lines, outputs [0, width): whole chunks of kMaxVectors vectors, then one shorter
// chunk whose loads run up to a vector past the row (into prepare_row's slack zeros).
template <typename T, int RB>
void sweep(const Sweep<T>& s, int64_t width) {
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  constexpr int64_t full = kMaxVectors * lanes;
  int64_t j = 0;
  for (; j + full <= width; j += full) chunk<T, kMaxVectors, RB>(s, j, full);
  const int64_t rest = width - j;
  switch ((rest + lanes - 1) / lanes) {
    case 0: break;
    case 1: chunk<T, 1, RB>(s, j, rest); break;
    case 2: chunk<T, 2, RB>(s, j, rest); break;
    case 3: chunk<T, 3, RB>(s, j, rest); break;
    default: chunk<T, 4, RB>(s, j, rest); break;
  }
}

// `count` lines from s, in register blocks of `block` (<= kMaxLines) lines.
template <typename T>
void sweep_lines(Sweep<T> s, int64_t count, int64_t block, int64_t width) {
  for (int64_t l = 0; l < count; l += block) {
    switch (std::min(block, count - l)) {
      case 1: sweep<T, 1>(s, width); break;
      case 2: sweep<T, 2>(s, width); break;
      case 3: sweep<T, 3>(s, width); break;
      default: sweep<T, 4>(s, width); break;
    }
    s.input += block * s.lines.input_step;
    s.w += block * s.lines.weight_step;
    if (s.bias) s.bias += block * s.lines.bias_step;
    s.out += block * s.lines.out_step;
  }
}

// Lines per register block: about kAccumulators accumulator vectors in flight, enough
// independent FMA chains to cover the FMA latency.
template <typename T>
int64_t lines_per_block(int64_t width) {
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  const int64_t vectors = std::min<int64_t>(kMaxVectors, (width + lanes - 1) / lanes);
  return std::clamp<int64_t>(kAccumulators / std::max<int64_t>(1, vectors), 1, kMaxLines);
}

// 1-D: the job's input segment of each channel is one prepared row, and the lines are the
// group's output channels, which all read the same input.
template <typename T>
void forward_1d(const DirectConvPlan& p, int64_t n, int64_t grp, int64_t a0, int64_t a1,
                const T* x, const T* w, const T* bias, T* y, T* scratch, Workspace& ws) {
  const WindowGeom& g = *p.win;
  const int64_t row_elems = p.phases * p.phase_len;
  RowLayout& layout = ws.layout;
  make_row_layout(p, a0, layout);
  for (int64_t c = 0; c < p.group_in; ++c) {
    prepare_row(x + (n * g.channels + grp * p.group_in + c) * g.in[0], layout,
                scratch + c * row_elems);
  }
  const int64_t zero = 0;
  const int64_t first = grp * p.group_out;
  Sweep<T> s{scratch, w + first * p.group_in * g.kernel[0], bias ? bias + first : nullptr,
             y + (n * p.out_channels + first) * g.out[0] + a0, p.group_in, row_elems,
             g.kernel[0], g.kernel[0], p.tap_offset.data(), &zero, &zero, 1,
             Lines{0, p.group_in * g.kernel[0], 1, g.out[0]}};
  sweep_lines(s, p.group_out, lines_per_block<T>(a1 - a0), a1 - a0);
}

// N-D, N >= 2. Dim P = D-2 (the rows of each output plane) is prepared with its padding
// written out as zero rows, so all of its taps are valid for every row and a register block
// can hold several consecutive rows. The dims before P (3-D and up) keep only their real
// input rows; their taps are checked per output position.
// Copies the job's input into `scratch`, leaves its layout in ws (prepared index i of outer
// dim e holds padded coordinate origin[e] + i) and returns the stride between channels.
template <typename T>
int64_t prepare_nd(const DirectConvPlan& p, int64_t n, int64_t grp, int64_t a0, int64_t a1,
                   const T* x, T* scratch, Workspace& ws) {
  const WindowGeom& g = *p.win;
  const int64_t last = g.dims() - 1, rows_dim = last - 1;
  std::vector<int64_t>&origin = ws.origin, &extent = ws.extent, &stride = ws.prepared_stride;
  origin.resize(last);
  extent.resize(last);
  stride.resize(last);
  for (int64_t e = 0; e < last; ++e) {
    const int64_t reach = (g.kernel[e] - 1) * g.dilation[e];
    if (e == rows_dim) {
      const int64_t begin = e == 0 ? a0 : 0, end = e == 0 ? a1 : g.out[e];
      origin[e] = begin * g.stride[e];
      extent[e] = (end - 1 - begin) * g.stride[e] + reach + 1;
    } else if (e == 0) {
      const int64_t first = std::max<int64_t>(0, a0 * g.stride[0] - g.pad_before[0]);
      const int64_t end =
          std::min<int64_t>(g.in[0], (a1 - 1) * g.stride[0] - g.pad_before[0] + reach + 1);
      origin[e] = first + g.pad_before[0];
      extent[e] = std::max<int64_t>(0, end - first);
    } else {
      origin[e] = g.pad_before[e];
      extent[e] = g.in[e];
    }
  }
  const int64_t row_elems = p.phases * p.phase_len;
  stride[last - 1] = row_elems;
  for (int64_t e = last - 2; e >= 0; --e) stride[e] = stride[e + 1] * extent[e + 1];
  const int64_t channel_stride = stride[0] * extent[0];

  // Dims before the rows dim hold only real input, so they are walked as they are; along
  // the rows dim the rows outside the input become zero rows.
  make_row_layout(p, 0, ws.layout);
  const int64_t in_last = g.in[last], in_plane = g.in_plane();
  const int64_t rows = extent[rows_dim];
  const int64_t row_origin = origin[rows_dim] - g.pad_before[rows_dim];
  const int64_t rows_lo = std::clamp<int64_t>(-row_origin, 0, rows);
  const int64_t rows_hi = std::clamp<int64_t>(g.in[rows_dim] - row_origin, rows_lo, rows);
  const int64_t slices = channel_stride / (rows * row_elems);
  std::vector<int64_t>& idx = ws.pos;
  for (int64_t c = 0; c < p.group_in; ++c) {
    const T* plane = x + (n * g.channels + grp * p.group_in + c) * in_plane;
    idx.assign(rows_dim, 0);
    for (int64_t slice = 0; slice < slices; ++slice) {
      int64_t src = 0;
      for (int64_t e = 0; e < rows_dim; ++e) src = src * g.in[e] + origin[e] + idx[e] - g.pad_before[e];
      src = src * g.in[rows_dim] + row_origin;
      T* dst = scratch + c * channel_stride + slice * rows * row_elems;
      fill_zero(dst, rows_lo * row_elems);
      for (int64_t r = rows_lo; r < rows_hi; ++r) {
        prepare_row(plane + (src + r) * in_last, ws.layout, dst + r * row_elems);
      }
      fill_zero(dst + rows_hi * row_elems, (rows - rows_hi) * row_elems);
      for (int64_t e = rows_dim - 1; e >= 0 && ++idx[e] == extent[e]; --e) idx[e] = 0;
    }
  }
  return channel_stride;
}

// Calls visit(out_row, input_offset, rows) once per output position of dims [0, P) in the
// job, with ws.outer_input / ws.outer_weight holding the taps of dims [0, P] that land in
// the input (all taps of dim P). out_row is the flat index of the position's first output
// row, input_offset where its window starts in the prepared input, rows how many rows
// (consecutive along dim P) it has.
template <typename Visit>
void walk_nd(const DirectConvPlan& p, int64_t a0, int64_t a1, Workspace& ws, Visit&& visit) {
  const WindowGeom& g = *p.win;
  const int64_t dims = g.dims(), last = dims - 1, rows_dim = last - 1;
  const std::vector<int64_t>&origin = ws.origin, &stride = ws.prepared_stride;
  std::vector<int64_t>& weight_stride = ws.weight_stride;
  weight_stride.resize(dims);
  weight_stride[last] = 1;
  for (int64_t e = last - 1; e >= 0; --e) weight_stride[e] = weight_stride[e + 1] * g.kernel[e + 1];
  // The first dim runs over the job's block (when it is not the rows dim), the others in full.
  std::vector<int64_t>&pos = ws.pos, &lo = ws.lo, &hi = ws.hi, &tap = ws.tap;
  pos.assign(rows_dim, 0);
  lo.resize(rows_dim);
  hi.resize(rows_dim);
  tap.resize(last);
  if (rows_dim > 0) pos[0] = a0;
  const int64_t rows_begin = rows_dim == 0 ? a0 : 0;
  const int64_t rows_count = (rows_dim == 0 ? a1 : g.out[rows_dim]) - rows_begin;
  for (;;) {
    ws.outer_input.clear();
    ws.outer_weight.clear();
    bool any = true;
    for (int64_t e = 0; e < rows_dim; ++e) {
      const int64_t start = pos[e] * g.stride[e] - g.pad_before[e];
      lo[e] = std::max<int64_t>(0, ceil_div(-start, g.dilation[e]));
      hi[e] = std::min<int64_t>(g.kernel[e], floor_div(g.in[e] - 1 - start, g.dilation[e]) + 1);
      any = any && hi[e] > lo[e];
      tap[e] = lo[e];
    }
    tap[rows_dim] = 0;
    while (any) {
      int64_t in_off = 0, w_off = 0;
      for (int64_t e = 0; e < last; ++e) {
        const int64_t coord = e == rows_dim
                                  ? tap[e] * g.dilation[e]
                                  : pos[e] * g.stride[e] + tap[e] * g.dilation[e] - origin[e];
        in_off += coord * stride[e];
        w_off += tap[e] * weight_stride[e];
      }
      ws.outer_input.push_back(in_off);
      ws.outer_weight.push_back(w_off);
      int64_t e = last - 1;
      for (; e >= 0; --e) {
        const int64_t end = e == rows_dim ? g.kernel[e] : hi[e];
        if (++tap[e] < end) break;
        tap[e] = e == rows_dim ? 0 : lo[e];
      }
      if (e < 0) break;
    }

    int64_t out_row = 0;
    for (int64_t e = 0; e < rows_dim; ++e) out_row = out_row * g.out[e] + pos[e];
    visit(out_row * g.out[rows_dim] + rows_begin,
          (rows_begin * g.stride[rows_dim] - origin[rows_dim]) * stride[rows_dim], rows_count);

    int64_t e = rows_dim - 1;
    for (; e >= 0; --e) {
      if (++pos[e] < (e == 0 ? a1 : g.out[e])) break;
      pos[e] = e == 0 ? a0 : 0;
    }
    if (e < 0) return;
  }
}

template <typename T>
void forward_nd(const DirectConvPlan& p, int64_t n, int64_t grp, int64_t a0, int64_t a1,
                const T* x, const T* w, const T* bias, T* y, T* scratch, Workspace& ws) {
  const WindowGeom& g = *p.win;
  const int64_t last = g.dims() - 1, rows_dim = last - 1;
  const int64_t channel_stride = prepare_nd(p, n, grp, a0, a1, x, scratch, ws);
  const int64_t width = g.out[last], out_plane = g.out_plane();
  const int64_t block = lines_per_block<T>(width);
  const int64_t weights_per_output = p.group_in * g.kernel_volume();
  const Lines lines{g.stride[rows_dim] * ws.prepared_stride[rows_dim], 0, 0, width};
  walk_nd(p, a0, a1, ws, [&](int64_t out_row, int64_t input_offset, int64_t rows) {
    for (int64_t k = 0; k < p.group_out; ++k) {
      const int64_t channel = grp * p.group_out + k;
      Sweep<T> s{scratch + input_offset, w + channel * weights_per_output,
                 bias ? bias + channel : nullptr,
                 y + (n * p.out_channels + channel) * out_plane + out_row * width, p.group_in,
                 channel_stride, g.kernel_volume(), g.kernel[last], p.tap_offset.data(),
                 ws.outer_input.data(), ws.outer_weight.data(),
                 static_cast<int64_t>(ws.outer_input.size()), lines};
      sweep_lines(s, rows, block, width);
    }
  });
}

// ---- Plane kernels: one input plane per output plane (depthwise), 2-D, unit strides ----
//
// Columns go in chunks of up to two vectors. The forward pass streams down the input rows
// of a chunk with the K output rows an input row touches in registers, next to the K x K
// broadcast weights: each shifted input vector is loaded once and feeds K multiply-adds
// (instead of one load per multiply-add). The weight gradient keeps the K x K tap sums in
// registers and walks blocks of dy rows, each input vector again feeding up to K taps.
// Loads are masked to the input's columns, so the left and right padding read as zeros
// without a padded copy, and input rows in the top or bottom padding are skipped.

// Vector accesses limited to lanes [lo, hi): lanes outside read as zero and are never
// written, and their memory is never touched.
#if FC_VEC_BYTES == 64
template <typename T>
struct Masked;
template <>
struct Masked<float> {
  using Mask = __mmask16;
  static Mask make(int64_t lo, int64_t hi) {
    return hi <= lo ? Mask(0) : Mask(((uint32_t(1) << hi) - 1) & ~((uint32_t(1) << lo) - 1));
  }
  static Vec<float>::type load(const float* p, Mask m) {
    return (Vec<float>::type)_mm512_maskz_loadu_ps(m, p);
  }
  static void store(float* p, Mask m, Vec<float>::type v) { _mm512_mask_storeu_ps(p, m, (__m512)v); }
};
template <>
struct Masked<double> {
  using Mask = __mmask8;
  static Mask make(int64_t lo, int64_t hi) {
    return hi <= lo ? Mask(0) : Mask(((uint32_t(1) << hi) - 1) & ~((uint32_t(1) << lo) - 1));
  }
  static Vec<double>::type load(const double* p, Mask m) {
    return (Vec<double>::type)_mm512_maskz_loadu_pd(m, p);
  }
  static void store(double* p, Mask m, Vec<double>::type v) {
    _mm512_mask_storeu_pd(p, m, (__m512d)v);
  }
};
#elif FC_VEC_BYTES == 32
template <typename T>
struct Masked;
template <>
struct Masked<float> {
  using Mask = __m256i;
  static Mask make(int64_t lo, int64_t hi) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(int(lo) - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(int(hi)), lane));
  }
  static Vec<float>::type load(const float* p, Mask m) {
    return (Vec<float>::type)_mm256_maskload_ps(p, m);
  }
  static void store(float* p, Mask m, Vec<float>::type v) { _mm256_maskstore_ps(p, m, (__m256)v); }
};
template <>
struct Masked<double> {
  using Mask = __m256i;
  static Mask make(int64_t lo, int64_t hi) {
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_and_si256(_mm256_cmpgt_epi64(lane, _mm256_set1_epi64x(lo - 1)),
                            _mm256_cmpgt_epi64(_mm256_set1_epi64x(hi), lane));
  }
  static Vec<double>::type load(const double* p, Mask m) {
    return (Vec<double>::type)_mm256_maskload_pd(p, m);
  }
  static void store(double* p, Mask m, Vec<double>::type v) {
    _mm256_maskstore_pd(p, m, (__m256d)v);
  }
};
#else
// No masked loads before AVX: whole vectors are plain accesses, the rest go lane by lane.
template <typename T>
struct Masked {
  struct Mask {
    int64_t lo, hi;
  };
  static constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  static Mask make(int64_t lo, int64_t hi) { return {std::max<int64_t>(lo, 0), std::min(hi, lanes)}; }
  static typename Vec<T>::type load(const T* p, Mask m) {
    typename Vec<T>::type v = {};
    if (m.lo == 0 && m.hi == lanes) {
      std::memcpy(&v, p, sizeof(v));
    } else {
      for (int64_t i = m.lo; i < m.hi; ++i) v[i] = p[i];
    }
    return v;
  }
  static void store(T* p, Mask m, typename Vec<T>::type v) {
    for (int64_t i = m.lo; i < m.hi; ++i) p[i] = v[i];
  }
};
#endif

// A column chunk is up to kPlaneVectors vectors wide.
constexpr int kPlaneVectors = 2;

// One plane of the input and its output, with the geometry the plane kernels need.
template <typename T>
struct PlaneRef {
  const T* x;  // input plane, height x width
  int64_t height, width, pad_top, pad_left;
  int64_t out_width;
};

// Masks of one column chunk [j, j + NV * lanes): input[b][v] for the vector v of tap b,
// output[v] for the outputs that exist.
template <typename T, int K>
struct ChunkMasks {
  typename Masked<T>::Mask input[K][kPlaneVectors];
  typename Masked<T>::Mask output[kPlaneVectors];
};

template <typename T, int K>
__attribute__((always_inline)) inline void make_chunk_masks(const PlaneRef<T>& pl, int64_t j,
                                                            ChunkMasks<T, K>& m) {
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  for (int v = 0; v < kPlaneVectors; ++v) {
    const int64_t out_col = j + v * lanes;
    m.output[v] = Masked<T>::make(0, std::clamp<int64_t>(pl.out_width - out_col, 0, lanes));
    for (int b = 0; b < K; ++b) {
      const int64_t col = out_col + b - pl.pad_left;  // input column of lane 0
      m.input[b][v] = Masked<T>::make(std::clamp<int64_t>(-col, 0, lanes),
                                      std::clamp<int64_t>(pl.width - col, 0, lanes));
    }
  }
}

// The accumulators of the K output rows an input row touches, NV vectors each; output row
// o lives in slot (o - a0) % K.
template <typename T, int K, int NV>
using RowWindow = typename Vec<T>::type[K][NV];

// Step s of plane_forward_chunk, with U = s % K known at compile time: input row
// a0 - pad_top + s (`in_row`, its column j - pad_left at x + in_offset) adds its K taps to
// outputs a0 + s - a (kernel row a), after output a0 + s starts from the bias; output
// a0 + s - (K - 1) (at y + out_offset) is then complete and, when `store`, written.
// Offsets rather than pointers: rows in the padding have no address.
template <typename T, int K, int NV, int U>
__attribute__((always_inline)) inline void plane_forward_step(
    const PlaneRef<T>& pl, const typename Vec<T>::type (&wv)[K][K], const ChunkMasks<T, K>& m,
    T bias, int64_t in_row, int64_t in_offset, int64_t out_offset, bool store,
    RowWindow<T, K, NV>& acc, T* y) {
  using V = typename Vec<T>::type;
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  for (int v = 0; v < NV; ++v) acc[U][v] = bias - V{};
  if (static_cast<uint64_t>(in_row) < static_cast<uint64_t>(pl.height)) {
    const T* row = pl.x + in_offset;
    V xs[K][NV];
#pragma GCC unroll 8
    for (int b = 0; b < K; ++b) {
      for (int v = 0; v < NV; ++v) xs[b][v] = Masked<T>::load(row + b + v * lanes, m.input[b][v]);
    }
#pragma GCC unroll 8
    for (int b = 0; b < K; ++b) {
#pragma GCC unroll 8
      for (int a = 0; a < K; ++a) {
        for (int v = 0; v < NV; ++v) {
          acc[(U - a + K) % K][v] += wv[a][b] * xs[b][v];
        }
      }
    }
  }
  if (store) {
    constexpr int slot = (U + 1) % K;
    for (int v = 0; v < NV; ++v) {
      T* out = y + out_offset + v * lanes;
      // In a chunk of kPlaneVectors, the first vector is whole.
      if (NV == kPlaneVectors && v == 0) {
        std::memcpy(out, &acc[slot][v], sizeof(V));
      } else {
        Masked<T>::store(out, m.output[v], acc[slot][v]);
      }
    }
  }
}

// Steps s0 .. s0 + K - 1 (s0 a multiple of K), those below `steps`.
template <typename T, int K, int NV, int... U>
__attribute__((always_inline)) inline void plane_forward_steps(
    const PlaneRef<T>& pl, const typename Vec<T>::type (&wv)[K][K], const ChunkMasks<T, K>& m,
    T bias, int64_t s0, int64_t steps, int64_t in_row, int64_t in_offset, int64_t out_offset,
    RowWindow<T, K, NV>& acc, T* y, std::integer_sequence<int, U...>) {
  // Output a0 + s - (K - 1) exists from step K - 1 on.
  ((s0 + U < steps
        ? plane_forward_step<T, K, NV, U>(pl, wv, m, bias, in_row + U, in_offset + U * pl.width,
                                          out_offset + U * pl.out_width,
                                          s0 > 0 || U == K - 1, acc, y)
        : void()),
   ...);
}

// Output rows [a0, a1), columns [j, j + NV * lanes) of one plane from the kernel w (K x K),
// streaming down the input rows with the K output rows in flight held in registers: each
// input vector is loaded once per chunk and feeds all K x K products it takes part in.
// The weights and masks are this function's own locals: the output stores may alias any
// float in memory, so values reached through a pointer would be reloaded after every store.
template <typename T, int K, int NV>
void plane_forward_chunk(const PlaneRef<T>& pl, const T* w, T bias, int64_t a0, int64_t a1,
                         int64_t j, T* y) {
  using V = typename Vec<T>::type;
  V wv[K][K];
  for (int a = 0; a < K; ++a) {
    for (int b = 0; b < K; ++b) wv[a][b] = w[a * K + b] - V{};
  }
  ChunkMasks<T, K> m;
  make_chunk_masks(pl, j, m);
  // Slots of rows before a0 take products that are never stored; they start at zero so
  // that no step reads an unset register.
  RowWindow<T, K, NV> acc = {};
  const int64_t steps = a1 - a0 + K - 1;
  int64_t in_row = a0 - pl.pad_top;
  int64_t in_offset = in_row * pl.width + j - pl.pad_left;
  int64_t out_offset = (a0 - (K - 1)) * pl.out_width + j;
  for (int64_t s0 = 0; s0 < steps; s0 += K) {
    plane_forward_steps<T, K, NV>(pl, wv, m, bias, s0, steps, in_row, in_offset, out_offset, acc,
                                  y, std::make_integer_sequence<int, K>{});
    in_row += K;
    in_offset += K * pl.width;
    out_offset += K * pl.out_width;
  }
}

// Output rows [a0, a1) of one plane from the kernel w (K x K).
template <typename T, int K>
void plane_forward(const PlaneRef<T>& pl, const T* w, T bias, int64_t a0, int64_t a1, T* y) {
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  for (int64_t j = 0; j < pl.out_width; j += kPlaneVectors * lanes) {
    if (pl.out_width - j > lanes) {
      plane_forward_chunk<T, K, 2>(pl, w, bias, a0, a1, j, y);
    } else {
      plane_forward_chunk<T, K, 1>(pl, w, bias, a0, a1, j, y);
    }
  }
}

// acc[a][b] += the products of dy rows [i0, i0 + R), columns [j, j + NV * lanes), with the
// input under tap (a, b).
template <typename T, int K, int R, int NV>
__attribute__((always_inline)) inline void plane_weight_block(const PlaneRef<T>& pl,
                                                              const ChunkMasks<T, K>& m,
                                                              const T* dy, int64_t i0, int64_t j,
                                                              typename Vec<T>::type (&acc)[K][K]) {
  using V = typename Vec<T>::type;
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  V grad[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) {
      grad[r][v] = Masked<T>::load(dy + (i0 + r) * pl.out_width + j + v * lanes, m.output[v]);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < R + K - 1; ++t) {
    const int64_t in_row = i0 - pl.pad_top + t;
    if (in_row < 0 || in_row >= pl.height) continue;
    const T* row = pl.x + in_row * pl.width + j - pl.pad_left;
#pragma GCC unroll 8
    for (int b = 0; b < K; ++b) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        const V xv = Masked<T>::load(row + b + v * lanes, m.input[b][v]);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          if (t - r >= 0 && t - r < K) acc[t - r][b] += grad[r][v] * xv;
        }
      }
    }
  }
}

// sums[a][b] += the products of dy rows [a0, a1), columns [j, j + NV * lanes), with the
// input under tap (a, b), one partial sum per vector lane. The sums and masks are worked on
// as locals, which stay in registers; through the reference they would live in memory.
template <typename T, int K, int NV>
void plane_weight_chunk(const PlaneRef<T>& pl, const T* dy, int64_t a0, int64_t a1, int64_t j,
                        typename Vec<T>::type (&sums)[K][K]) {
  using V = typename Vec<T>::type;
  constexpr int R = 4;
  ChunkMasks<T, K> m;
  make_chunk_masks(pl, j, m);
  V acc[K][K];
  for (int a = 0; a < K; ++a) {
    for (int b = 0; b < K; ++b) acc[a][b] = sums[a][b];
  }
  int64_t i = a0;
  for (; i + R <= a1; i += R) plane_weight_block<T, K, R, NV>(pl, m, dy, i, j, acc);
  for (; i < a1; ++i) plane_weight_block<T, K, 1, NV>(pl, m, dy, i, j, acc);
  for (int a = 0; a < K; ++a) {
    for (int b = 0; b < K; ++b) sums[a][b] = acc[a][b];
  }
}

// acc[a][b] += the gradient of the K x K kernel (one lane-wise partial sum per vector lane)
// from dy rows [a0, a1) of one plane (dy is the output plane's gradient, pl.out_width wide).
template <typename T, int K>
void plane_weight(const PlaneRef<T>& pl, const T* dy, int64_t a0, int64_t a1,
                  typename Vec<T>::type (&acc)[K][K]) {
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  for (int64_t j = 0; j < pl.out_width; j += kPlaneVectors * lanes) {
    if (pl.out_width - j > lanes) {
      plane_weight_chunk<T, K, 2>(pl, dy, a0, a1, j, acc);
    } else {
      plane_weight_chunk<T, K, 1>(pl, dy, a0, a1, j, acc);
    }
  }
}

template <typename T>
PlaneRef<T> plane_ref(const DirectConvPlan& p, const T* x) {
  const WindowGeom& g = *p.win;
  return {x, g.in[0], g.in[1], g.pad_before[0], g.pad_before[1], g.out[1]};
}

// Forward job of a plane plan: output channel k of image n reads input channel k / group_out.
template <typename T, int K>
void plane_forward_job(const DirectConvPlan& p, int64_t n, int64_t grp, int64_t a0, int64_t a1,
                       const T* x, const T* w, const T* bias, T* y) {
  const WindowGeom& g = *p.win;
  const PlaneRef<T> pl = plane_ref(p, x + (n * g.channels + grp) * g.in_plane());
  for (int64_t k = grp * p.group_out; k < (grp + 1) * p.group_out; ++k) {
    plane_forward<T, K>(pl, w + k * K * K, bias ? bias[k] : T(0), a0, a1,
                        y + (n * p.out_channels + k) * g.out_plane());
  }
}

// Weight-gradient job of a plane plan: images [n0, n1), rows [a0, a1), into
// partial (group_out x K x K).
template <typename T, int K>
void plane_weight_job(const DirectConvPlan& p, int64_t n0, int64_t n1, int64_t grp, int64_t a0,
                      int64_t a1, const T* x, const T* dy, T* partial) {
  using V = typename Vec<T>::type;
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  const WindowGeom& g = *p.win;
  for (int64_t k = 0; k < p.group_out; ++k) {
    const int64_t channel = grp * p.group_out + k;
    V acc[K][K] = {};
    for (int64_t n = n0; n < n1; ++n) {
      plane_weight<T, K>(plane_ref(p, x + (n * g.channels + grp) * g.in_plane()),
                         dy + (n * p.out_channels + channel) * g.out_plane(), a0, a1, acc);
    }
    for (int a = 0; a < K; ++a) {
      for (int b = 0; b < K; ++b) {
        T sum = 0;
        for (int64_t l = 0; l < lanes; ++l) sum += acc[a][b][l];
        partial[(k * K + a) * K + b] = sum;
      }
    }
  }
}

// Calls f(std::integral_constant<int, K>{}) for the plan's kernel size k (1..kMaxPlaneKernel).
template <typename F>
void with_kernel_size(int64_t k, F&& f) {
  switch (k) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    default: f(std::integral_constant<int, 7>{}); break;
  }
}

template <typename T>
void forward_job(const DirectConvPlan& p, int64_t job, const T* x, const T* w, const T* bias,
                 T* y, T* scratch, Workspace& ws) {
  const int64_t block = job % p.blocks, grp = job / p.blocks % p.groups;
  const int64_t n = job / (p.blocks * p.groups);
  const int64_t a0 = block * p.block_rows, a1 = std::min(p.win->out[0], a0 + p.block_rows);
  if (p.plane_kernel) {
    with_kernel_size(p.win->kernel[0], [&](auto k) {
      plane_forward_job<T, decltype(k)::value>(p, n, grp, a0, a1, x, w, bias, y);
    });
  } else if (p.win->dims() == 1) {
    forward_1d(p, n, grp, a0, a1, x, w, bias, y, scratch, ws);
  } else {
    forward_nd(p, n, grp, a0, a1, x, w, bias, y, scratch, ws);
  }
}

// acc[c * kernel_volume + tap] (one vector each) += the products of one dy row (`dy_row`,
// zero past the row's end) with the prepared input under every tap.
template <typename T>
void accumulate_row(const T* input, int64_t channel_stride, int64_t channels,
                    const int64_t* outer_input, const int64_t* outer_weight, int64_t outer_taps,
                    const DirectConvPlan& p, const T* dy_row, int64_t vectors, T* acc) {
  using V = typename Vec<T>::type;
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  const int64_t kernel_last = p.win->kernel.back(), kernel_volume = p.win->kernel_volume();
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t t = 0; t < outer_taps; ++t) {
      const T* row = input + c * channel_stride + outer_input[t];
      T* out = acc + (c * kernel_volume + outer_weight[t]) * lanes;
      for (int64_t b = 0; b < kernel_last; ++b) {
        const T* src = row + p.tap_offset[b];
        V sum = {};
        for (int64_t v = 0; v < vectors; ++v) {
          V xv, gv;
          std::memcpy(&xv, src + v * lanes, sizeof(V));
          std::memcpy(&gv, dy_row + v * lanes, sizeof(V));
          sum += gv * xv;
        }
        V total;
        std::memcpy(&total, out + b * lanes, sizeof(V));
        total += sum;
        std::memcpy(out + b * lanes, &total, sizeof(V));
      }
    }
  }
}

// One job of the weight gradient: images [n0, n1) of one group and one block of dim 0,
// summed into `partial` (group_out x group_in x prod(kernel)).
template <typename T>
void weight_grad_job(const DirectConvPlan& p, int64_t job, const T* x, const T* dy, T* partial,
                     T* scratch, Workspace& ws, std::vector<T>& buffer) {
  constexpr int64_t lanes = FC_VEC_BYTES / sizeof(T);
  const WindowGeom& g = *p.win;
  const int64_t dims = g.dims(), last = dims - 1;
  const int64_t block = job % p.blocks, grp = job / p.blocks % p.groups;
  const int64_t n0 = job / (p.blocks * p.groups) * p.images_per_job;
  const int64_t n1 = std::min(g.batch, n0 + p.images_per_job);
  const int64_t a0 = block * p.block_rows, a1 = std::min(g.out[0], a0 + p.block_rows);
  if (p.plane_kernel) {
    with_kernel_size(g.kernel[0], [&](auto k) {
      plane_weight_job<T, decltype(k)::value>(p, n0, n1, grp, a0, a1, x, dy, partial);
    });
    return;
  }
  const int64_t width = dims == 1 ? a1 - a0 : g.out[last];
  const int64_t vectors = (width + lanes - 1) / lanes;
  const int64_t per_channel = p.group_in * g.kernel_volume();
  const int64_t out_plane = g.out_plane();
  buffer.assign((p.group_out * per_channel + vectors) * lanes, T(0));
  T* acc = buffer.data();
  T* dy_row = acc + p.group_out * per_channel * lanes;
  // dy_row past `width` stays zero, so the last vector adds nothing from beyond the row.
  auto load_dy = [&](const T* src) { std::copy(src, src + width, dy_row); };
  for (int64_t n = n0; n < n1; ++n) {
    const T* dy_first = dy + (n * p.out_channels + grp * p.group_out) * out_plane;
    if (dims == 1) {
      const int64_t row_elems = p.phases * p.phase_len;
      make_row_layout(p, a0, ws.layout);
      for (int64_t c = 0; c < p.group_in; ++c) {
        prepare_row(x + (n * g.channels + grp * p.group_in + c) * g.in[0], ws.layout,
                    scratch + c * row_elems);
      }
      const int64_t zero = 0;
      for (int64_t k = 0; k < p.group_out; ++k) {
        load_dy(dy_first + k * out_plane + a0);
        accumulate_row(scratch, row_elems, p.group_in, &zero, &zero, 1, p, dy_row, vectors,
                       acc + k * per_channel * lanes);
      }
      continue;
    }
    const int64_t channel_stride = prepare_nd(p, n, grp, a0, a1, x, scratch, ws);
    const int64_t line_step = g.stride[last - 1] * ws.prepared_stride[last - 1];
    walk_nd(p, a0, a1, ws, [&](int64_t out_row, int64_t input_offset, int64_t rows) {
      const int64_t taps = static_cast<int64_t>(ws.outer_input.size());
      for (int64_t k = 0; k < p.group_out; ++k) {
        for (int64_t r = 0; r < rows; ++r) {
          load_dy(dy_first + k * out_plane + (out_row + r) * width);
          accumulate_row(scratch + input_offset + r * line_step, channel_stride, p.group_in,
                         ws.outer_input.data(), ws.outer_weight.data(), taps, p, dy_row, vectors,
                         acc + k * per_channel * lanes);
        }
      }
    });
  }
  for (int64_t i = 0; i < p.group_out * per_channel; ++i) {
    T sum = 0;
    for (int64_t l = 0; l < lanes; ++l) sum += acc[i * lanes + l];
    partial[i] = sum;
  }
}

}  // namespace

void direct_forward_f32(const DirectConvPlan& p, int64_t first, int64_t last, const float* x,
                        const float* w, const float* bias, float* y, float* scratch) {
  Workspace ws;
  for (int64_t job = first; job < last; ++job) forward_job(p, job, x, w, bias, y, scratch, ws);
}

void direct_forward_f64(const DirectConvPlan& p, int64_t first, int64_t last, const double* x,
                        const double* w, const double* bias, double* y, double* scratch) {
  Workspace ws;
  for (int64_t job = first; job < last; ++job) forward_job(p, job, x, w, bias, y, scratch, ws);
}

void direct_weight_grad_f32(const DirectConvPlan& p, int64_t first, int64_t last, const float* x,
                            const float* dy, float* partial, float* scratch) {
  Workspace ws;
  std::vector<float> buffer;
  const int64_t size = p.group_out * p.group_in * p.win->kernel_volume();
  for (int64_t job = first; job < last; ++job) {
    weight_grad_job(p, job, x, dy, partial + job * size, scratch, ws, buffer);
  }
}

void direct_weight_grad_f64(const DirectConvPlan& p, int64_t first, int64_t last,
                            const double* x, const double* dy, double* partial,
                            double* scratch) {
  Workspace ws;
  std::vector<double> buffer;
  const int64_t size = p.group_out * p.group_in * p.win->kernel_volume();
  for (int64_t job = first; job < last; ++job) {
    weight_grad_job(p, job, x, dy, partial + job * size, scratch, ws, buffer);
  }
}

}  // namespace FC_ISA
}  // namespace fastconv
