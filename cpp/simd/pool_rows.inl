// Row kernels of pooling, compiled once per instruction set (see cpu_features.hpp: FC_ISA
// names the namespace, FC_VEC_BYTES is the vector width) and exported as one table,
// pool_rows(). Vector code is written with GCC vector extensions, which lower to the
// target's instructions. Kernels run rows [begin, end) of one call and depend only on
// read-only inputs.
//
// Every kernel is output-chunk-major: a chunk of outputs (forward) or input cells (average
// adjoint) keeps its running max and winner position, or its double sums, in registers
// while it loops over all taps of the window (the box of leading-dim rows, then the
// last-dim taps, in row-major scan order), and is stored once. Forward chunks cover the
// interior of a row, where every tap is an input cell; adjoint chunks cover whole rows
// (their dy rows carry zero margins). The last chunk overlaps its predecessor instead of
// leaving a tail (recomputing an output gives the same bits). Last-dim strides 1 and 2 are
// vectorized (stride 2 with deinterleaving loads); the few border outputs, and every
// output of other strides, take a scalar path that visits the same cells in the same
// order, so both paths agree bitwise.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include <immintrin.h>

#include "fastconv/lanes.hpp"
#include "fastconv/pool_rows.hpp"

// The kernels have internal linkage, so the vector-argument ABI notes do not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastconv {
namespace FC_ISA {
namespace {

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

// The divisor share of the leading dims for leading output coordinates `coord`.
FC_INLINE double lead_divisor(const AvgPlan& a, const int64_t* coord) {
  double count = 1;
  for (int64_t d = 0; d < a.pool->lead_dims(); ++d) {
    const OutTable& t = a.pool->out_tab[d];
    // Counts are far below 2^53, so the products stay exact.
    count *= static_cast<double>(a.count_include_pad ? t.padded[coord[d]]
                                                     : t.hi[coord[d]] - t.lo[coord[d]]);
  }
  return count;
}

constexpr int kVecBytes = FC_VEC_BYTES;
constexpr int kDoubleLanes = kVecBytes / sizeof(double);

// W lanes of T (and of the same-width integer, the lane type of compare masks and of the
// max-pool winner positions) through GCC vector extensions, which lower to whatever the
// enclosing target provides.
template <typename T>
using LaneInt = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

template <typename T, int W>
struct Lanes {
  typedef T Vec __attribute__((vector_size(W * sizeof(T))));
  typedef LaneInt<T> IVec __attribute__((vector_size(W * sizeof(T))));
  typedef double DVec __attribute__((vector_size(W * sizeof(double))));

  template <typename V, typename E>
  static FC_INLINE V load(const E* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  template <typename V, typename E>
  static FC_INLINE void store(E* p, V v) {
    std::memcpy(p, &v, sizeof v);
  }
  template <int... I>
  static constexpr IVec ramp(std::integer_sequence<int, I...>, int step, int first) {
    return IVec{static_cast<LaneInt<T>>(step * I + first)...};
  }
  // Lanes p[0], p[S], ..., p[S (W - 1)] for S = 1 or 2. Stride 2 deinterleaves two
  // contiguous loads: kBack reads p[-1 .. 2W - 2] and keeps the odd lanes, otherwise it reads
  // p[0 .. 2W - 1] and keeps the even ones, so a caller can stay inside a row at either end.
  template <int S, bool kBack>
  static FC_INLINE Vec strided(const T* p) {
    if constexpr (S == 1) {
      return load<Vec>(p);
    } else {
      constexpr IVec kPick =
          ramp(std::make_integer_sequence<int, W>{}, 2, kBack ? 1 : 0);
      const T* q = kBack ? p - 1 : p;
      return __builtin_shuffle(load<Vec>(q), load<Vec>(q + W), kPick);
    }
  }
};


// Stores the int32 or int64 lanes of a position vector as int64; int32 lanes are widened
// in two halves, each filling a native-width register.
template <typename T, int W>
FC_INLINE void store_positions(int64_t* dst, typename Lanes<T, W>::IVec pos) {
  if constexpr (sizeof(LaneInt<T>) == sizeof(int64_t)) {
    Lanes<T, W>::store(dst, pos);
  } else {
    using Half = typename Lanes<int32_t, W / 2>::IVec;
    using Wide = typename Lanes<int64_t, W / 2>::IVec;
    Half half[2];
    std::memcpy(half, &pos, sizeof pos);
    Lanes<T, W>::store(dst, __builtin_convertvector(half[0], Wide));
    Lanes<T, W>::store(dst + W / 2, __builtin_convertvector(half[1], Wide));
  }
}

// float32 lanes widened to double. GCC 12 lowers __builtin_convertvector of a half-width
// float vector to a full-width double one as two quarter conversions and an insert; the
// intrinsic is one instruction.
template <typename DVec, typename V>
FC_INLINE DVec widen(V v) {
#if FC_VEC_BYTES == 64
  if constexpr (sizeof(V) == 32 && sizeof(DVec) == 64) {
    return reinterpret_cast<DVec>(_mm512_cvtps_pd(reinterpret_cast<__m256>(v)));
  }
#elif FC_VEC_BYTES == 32
  if constexpr (sizeof(V) == 16 && sizeof(DVec) == 32) {
    return reinterpret_cast<DVec>(_mm256_cvtps_pd(reinterpret_cast<__m128>(v)));
  }
#endif
  return __builtin_convertvector(v, DVec);
}

// Vector g of a chunk: the first may load forward while the rest load backward.
template <typename T, int W, int S, bool kBackFirst, bool kBackRest>
FC_INLINE typename Lanes<T, W>::Vec load_group(const T* p, int g) {
  return g == 0 ? Lanes<T, W>::template strided<S, kBackFirst>(p)
                : Lanes<T, W>::template strided<S, kBackRest>(p);
}

// One chunk of G vectors of W max-pool outputs, vector g from the cells
// `first_cell + S*(g*step + lane) + tap` of every box row. The first cell seeds the lanes;
// a later cell wins when greater, or when it is a NaN and the lane's best is not, so the
// first maximum (or first NaN) in scan order stays.
// G independent vectors hide the compare-select latency of the running max; winners are
// tracked as the cell of lane 0, and the lane ramp is added once at the end.
template <typename T, int W, int G, int S, bool kBackFirst, bool kBackRest, bool kIndex>
FC_INLINE void max_chunk(const T* __restrict src_plane, const int64_t* rows, int64_t row_count,
                         int64_t taps, int64_t first_cell, int64_t step, T* __restrict out,
                         int64_t* __restrict idx) {
  using L = Lanes<T, W>;
  using IVec = typename L::IVec;
  using Index = LaneInt<T>;
  constexpr IVec kRamp = L::ramp(std::make_integer_sequence<int, W>{}, S, 0);
  typename L::Vec best[G];
  IVec pos[G];
  for (int g = 0; g < G; ++g) {
    best[g] = load_group<T, W, S, kBackFirst, kBackRest>(
        src_plane + rows[0] + first_cell + g * S * step, g);
    pos[g] = IVec{} + static_cast<Index>(rows[0] + first_cell);
  }
  for (int64_t r = 0; r < row_count; ++r) {
    const T* row = src_plane + rows[r] + first_cell;
    for (int64_t t = r == 0 ? 1 : 0; t < taps; ++t) {
      const Index at = static_cast<Index>(rows[r] + first_cell + t);
      for (int g = 0; g < G; ++g) {
        const auto v = load_group<T, W, S, kBackFirst, kBackRest>(row + t + g * S * step, g);
        const IVec take = ~(v <= best[g]) & (best[g] == best[g]);
        best[g] = take ? v : best[g];
        if (kIndex) pos[g] = take ? IVec{} + at : pos[g];
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    L::store(out + g * step, best[g]);
    if (kIndex) {
      store_positions<T, W>(idx + g * step, pos[g] + kRamp + static_cast<Index>(g * S * step));
    }
  }
}

// One max-pool output over whatever cells of its window are inside the input.
template <typename T, bool kIndex>
FC_INLINE void max_scalar(const T* src_plane, const int64_t* rows, int64_t row_count,
                          int64_t lo, int64_t hi, T* out, int64_t* idx) {
  T best = src_plane[rows[0] + lo];
  int64_t pos = rows[0] + lo;
  for (int64_t r = 0; r < row_count; ++r) {
    for (int64_t i = rows[r] + lo + (r == 0 ? 1 : 0); i < rows[r] + hi; ++i) {
      const T v = src_plane[i];
      const bool take = !(v <= best) & (best == best);
      best = take ? v : best;
      pos = take ? i : pos;
    }
  }
  *out = best;
  if (kIndex) *idx = pos;
}

// kStride is the last-dim stride when it is 1 or 2 (vector chunks), 0 for any other
// (scalar). kNarrow tracks float32 winner positions in int32 lanes, which keeps compare
// masks and positions the same width; it needs planes below 2^31 cells.
template <typename T, bool kIndex, bool kNarrow, int kStride>
struct MaxPoolRows {
  static constexpr bool kVector =
      kStride != 0 && (!kIndex || sizeof(T) == sizeof(int64_t) || kNarrow);

  template <int W, int G>
  static FC_INLINE int64_t pass(const PoolPlan& p, const T* src_plane, const int64_t* rows,
                                int64_t row_count, int64_t o, Interior in, T* out,
                                int64_t* idx) {
    const int64_t taps = p.taps(), shift = p.tap_shift[0];
    return run_chunks<W, G>(o, in, kStride, shift, taps, p.in_last,
                            [&](int64_t start, int64_t step, auto back_first, auto back_rest) {
      max_chunk<T, W, G, kStride, back_first, back_rest, kIndex>(
          src_plane, rows, row_count, taps, start * kStride + shift, step, out + start,
          kIndex ? idx + start : nullptr);
    });
  }

  static void run(const PoolPlan* plan, const T* x, T* y, int64_t* indices, int64_t begin,
                  int64_t end) {
    constexpr int W = kVecBytes / sizeof(T);
    const PoolPlan& p = *plan;
    const int64_t rows_per_plane = p.out_plane / p.out_last;
    const OutTable& last = p.out_tab.back();
    const Interior in = kVector ? output_interior(p, kStride) : Interior{0, 0};
    RowBox box(p.lead_dims());
    for (RowJobs jobs(begin, rows_per_plane); jobs.job < end; jobs.next()) {
      const int64_t plane = jobs.plane, row = jobs.row;
      const int64_t row_count = box.gather(p, row);
      const int64_t* rows = box.offsets.data();
      const T* src_plane = x + plane * p.in_plane;
      const int64_t at = plane * p.out_plane + row * p.out_last;
      T* __restrict out = y + at;
      int64_t* __restrict idx = kIndex ? indices + at : nullptr;
      int64_t o = in.lo;
      if constexpr (kVector) {
        o = pass<W, 2>(p, src_plane, rows, row_count, o, in, out, idx);
        if constexpr (W >= 8) o = pass<W / 2, 2>(p, src_plane, rows, row_count, o, in, out, idx);
        if constexpr (W >= 16) o = pass<W / 4, 2>(p, src_plane, rows, row_count, o, in, out, idx);
      }
      // Border outputs, and whatever interior the chunks left.
      for (int64_t k = 0; k < p.out_last; ++k) {
        if (k == in.lo) k = std::max(k, o);
        if (k >= p.out_last) break;
        max_scalar<T, kIndex>(src_plane, rows, row_count, last.lo[k], last.hi[k], out + k,
                              kIndex ? idx + k : nullptr);
      }
    }
  }
};

// One chunk of G vectors of D average-pool outputs (vector g from output g * step): double
// sums over every box row and last-dim tap in scan order, from +0.0 as the scalar path,
// divided by each output's count and rounded once.
template <typename T, int D, int G, int S, bool kBackFirst, bool kBackRest>
FC_INLINE void avg_chunk(const T* __restrict src_plane, const int64_t* rows, int64_t row_count,
                         int64_t taps, int64_t first_cell, int64_t step, double lead_count,
                         const double* __restrict last_count, T* __restrict out) {
  using L = Lanes<T, D>;
  using DVec = typename L::DVec;
  DVec sum[G] = {};
  for (int64_t r = 0; r < row_count; ++r) {
    const T* row = src_plane + rows[r] + first_cell;
    for (int64_t t = 0; t < taps; ++t) {
      for (int g = 0; g < G; ++g) {
        const T* at = row + t + g * S * step;
        sum[g] += widen<DVec>(load_group<T, D, S, kBackFirst, kBackRest>(at, g));
      }
    }
  }
  const DVec lead = DVec{} + lead_count;
  for (int g = 0; g < G; ++g) {
    const DVec count = lead * L::template load<DVec>(last_count + g * step);
    L::store(out + g * step, __builtin_convertvector(sum[g] / count, typename L::Vec));
  }
}

template <typename T, int kStride>
struct AvgPoolRows {
  static constexpr bool kVector = kStride != 0;

  template <int D, int G>
  static FC_INLINE int64_t pass(const AvgPlan& a, const T* src_plane, const int64_t* rows,
                                int64_t row_count, double lead_count, int64_t o, Interior in,
                                T* out) {
    const PoolPlan& p = *a.pool;
    const int64_t taps = p.taps(), shift = p.tap_shift[0];
    return run_chunks<D, G>(o, in, kStride, shift, taps, p.in_last,
                            [&](int64_t start, int64_t step, auto back_first, auto back_rest) {
      avg_chunk<T, D, G, kStride, back_first, back_rest>(
          src_plane, rows, row_count, taps, start * kStride + shift, step, lead_count,
          a.last_count.data() + start, out + start);
    });
  }

  static void run(const AvgPlan* avg, const T* x, T* y, int64_t begin, int64_t end) {
    constexpr int D = kDoubleLanes;
    const AvgPlan& a = *avg;
    const PoolPlan& p = *a.pool;
    const int64_t rows_per_plane = p.out_plane / p.out_last;
    const OutTable& last = p.out_tab.back();
    const Interior in = kVector ? output_interior(p, kStride) : Interior{0, 0};
    RowBox box(p.lead_dims());
    for (RowJobs jobs(begin, rows_per_plane); jobs.job < end; jobs.next()) {
      const int64_t plane = jobs.plane, row = jobs.row;
      const int64_t row_count = box.gather(p, row);
      const int64_t* rows = box.offsets.data();
      const double lead_count = lead_divisor(a, box.coord.data());
      const T* src_plane = x + plane * p.in_plane;
      T* __restrict out = y + plane * p.out_plane + row * p.out_last;
      int64_t o = in.lo;
      if constexpr (kVector) {
        o = pass<D, 2>(a, src_plane, rows, row_count, lead_count, o, in, out);
        if constexpr (D >= 4) {
          o = pass<D / 2, 2>(a, src_plane, rows, row_count, lead_count, o, in, out);
        }
      }
      for (int64_t k = 0; k < p.out_last; ++k) {
        if (k == in.lo) k = std::max(k, o);
        if (k >= p.out_last) break;
        double sum = 0.0;
        for (int64_t r = 0; r < row_count; ++r) {
          for (int64_t i = rows[r] + last.lo[k]; i < rows[r] + last.hi[k]; ++i) {
            sum += src_plane[i];
          }
        }
        out[k] = static_cast<T>(sum / (lead_count * a.last_count[k]));
      }
    }
  }
};

// dy / count of output rows, in double, for the average-pool adjoint. An input row reads
// the rows of its box of output rows, and other input rows share them, so rows are cached
// in slots (coord_d mod extent_d, per leading dim). Input rows come in row-major order, so
// along dim 0 a row is shared by neighbours only (extent: the widest box there), while the
// inner dims come round again for the next coordinate of an outer one (extent: the whole
// output extent, within a memory cap). A row the current box needs is never evicted, and
// each is computed about once per job.
// Each cached row has `margin` outputs of +0.0 on both sides, so vector chunks may run
// over the whole input row: a tap whose output does not exist adds +0.0, which changes no
// sum (sums start at +0.0 and so are never -0.0).
struct ScaledRows {
  Dims extent, slot_pitch;
  std::vector<int64_t> tag;   // plane * out rows + row of each slot, or -1
  std::vector<double> rows;   // slots of `pitch` doubles, margin + out_last + margin
  int64_t margin, pitch;
  int64_t out_rows;           // output rows per plane

  explicit ScaledRows(const AvgPlan& a)
      : extent(a.pool->lead_dims()), slot_pitch(a.pool->lead_dims()) {
    const PoolPlan& p = *a.pool;
    // A cell reaches at most `taps` outputs past either end of the row.
    margin = p.taps() + 2;
    pitch = p.out_last + 2 * margin;
    out_rows = p.out_plane / p.out_last;
    // Extents are powers of two, so a slot needs no division. Where keeping the whole inner
    // range would take more than kMaxDoubles (long inner dims, short rows), every dim keeps
    // only its widest box: rows are then recomputed when an outer coordinate moves on.
    constexpr int64_t kMaxDoubles = int64_t{1} << 21;
    const auto pow2 = [](int64_t v) {
      int64_t r = 1;
      while (r < v) r *= 2;
      return r;
    };
    Dims widest(p.lead_dims(), 1);
    int64_t whole = pitch;
    for (int64_t d = 0; d < p.lead_dims(); ++d) {
      for (int64_t i = 0; i < p.g.in[d]; ++i) {
        widest[d] = std::max(widest[d], a.in_tab[d].last[i] - a.in_tab[d].first[i]);
      }
      extent[d] = pow2(d == 0 ? widest[d] : p.g.out[d]);
      whole = whole > kMaxDoubles ? whole : whole * extent[d];
    }
    int64_t slots = 1;
    for (int64_t d = p.lead_dims() - 1; d >= 0; --d) {
      if (whole > kMaxDoubles) extent[d] = pow2(widest[d]);
      slot_pitch[d] = slots;
      slots *= extent[d];
    }
    tag.assign(slots, -1);
    rows.assign(slots * pitch, 0.0);
  }

  template <typename T>
  FC_INLINE const double* get(const AvgPlan& a, const T* grad_plane, int64_t plane,
                              const int64_t* coord) {
    const PoolPlan& p = *a.pool;
    int64_t slot = 0, row = 0;
    for (int64_t d = 0; d < p.lead_dims(); ++d) {
      slot += (coord[d] & (extent[d] - 1)) * slot_pitch[d];
      row = row * p.g.out[d] + coord[d];
    }
    const int64_t key = plane * out_rows + row;
    double* scaled = rows.data() + slot * pitch + margin;
    if (tag[slot] != key) {
      tag[slot] = key;
      const T* grad = grad_plane + row * p.out_last;
      const double lead = lead_divisor(a, coord);
      const double* last_count = a.last_count.data();
      for (int64_t o = 0; o < p.out_last; ++o) {
        scaled[o] = static_cast<double>(grad[o]) / (lead * last_count[o]);
      }
    }
    return scaled;
  }
};

// One chunk of the average-pool adjoint, G groups of C input cells from `cell`: per box
// row, the last-dim taps from last to first (outputs in increasing order), as the scalar
// path. Stride 1 (C = D): tap t adds the D outputs from cell - shift_t to each group.
// Stride 2 (C = 2D): a tap reaches every other cell, so sums are kept per parity of the
// cell (D even and D odd cells per group) and each tap adds D consecutive outputs to one
// of them; a cell still gets its taps in the same order. The parities interleave at the end.
template <typename T, int D, int G, int S>
FC_INLINE void avg_backward_chunk(const double* const* scaled, int64_t row_count,
                                  int64_t taps, int64_t first_shift, int64_t cell,
                                  T* __restrict out) {
  using DL = Lanes<double, D>;
  using DVec = typename DL::Vec;
  using L = Lanes<T, D>;
  if constexpr (S == 1) {
    DVec sum[G] = {};
    for (int64_t r = 0; r < row_count; ++r) {
      for (int64_t t = taps - 1; t >= 0; --t) {
        const double* at = scaled[r] + cell - (first_shift + t);
        for (int g = 0; g < G; ++g) sum[g] += DL::template load<DVec>(at + g * D);
      }
    }
    for (int g = 0; g < G; ++g) {
      L::store(out + g * D, __builtin_convertvector(sum[g], typename L::Vec));
    }
  } else {
    // `top` gathers the taps taps-1, taps-3, ..., `next` the taps taps-2, taps-4, ...; an
    // output index (rel + 1) / 2 serves the even cells when rel = cell - shift is even, the
    // odd cells when it is odd.
    // rel_top may be negative at the row start (the margin holds those outputs): >> floors.
    const int64_t rel_top = cell - (first_shift + taps - 1);
    const int64_t top_base = (rel_top + 1) >> 1, next_base = (rel_top + 2) >> 1;
    const int64_t top_taps = (taps + 1) / 2, next_taps = taps / 2;
    DVec top[G] = {}, next[G] = {};
    for (int64_t r = 0; r < row_count; ++r) {
      const double* row = scaled[r];
      for (int64_t j = 0; j < top_taps; ++j) {
        for (int g = 0; g < G; ++g) top[g] += DL::template load<DVec>(row + top_base + j + g * D);
      }
      for (int64_t j = 0; j < next_taps; ++j) {
        for (int g = 0; g < G; ++g) {
          next[g] += DL::template load<DVec>(row + next_base + j + g * D);
        }
      }
    }
    using IVec = typename DL::IVec;
    constexpr auto kSeq = std::make_integer_sequence<int, D>{};
    constexpr IVec kLow = zip_mask<IVec, D, 1>(kSeq, 0);
    constexpr IVec kHigh = zip_mask<IVec, D, 1>(kSeq, 1);
    const bool top_odd = rel_top & 1;
    for (int g = 0; g < G; ++g) {
      const DVec even = top_odd ? next[g] : top[g], odd = top_odd ? top[g] : next[g];
      T* dst = out + g * 2 * D;
      L::store(dst, __builtin_convertvector(__builtin_shuffle(even, odd, kLow), typename L::Vec));
      L::store(dst + D,
               __builtin_convertvector(__builtin_shuffle(even, odd, kHigh), typename L::Vec));
    }
  }
}

// The adjoint of AvgPoolRows. Each job is one input row: it gathers dy / count of every
// output whose window covers each cell, over the box of output rows that cover the row.
// Jobs write disjoint rows, so no atomics.
template <typename T, int kStride>
struct AvgPoolBackwardRows {
  static constexpr bool kVector = kStride != 0;

  template <int D, int G>
  static FC_INLINE int64_t pass(const PoolPlan& p, const double* const* scaled,
                                int64_t row_count, int64_t i, Interior in, T* out) {
    constexpr int C = G * (kStride == 2 ? 2 * D : D);
    const int64_t taps = p.taps(), shift = p.tap_shift[0];
    for (; i < in.hi; i += C) {
      int64_t start = i;
      if (in.hi - i < C) {
        if (in.hi - in.lo < C) break;
        start = in.hi - C;
      }
      avg_backward_chunk<T, D, G, kStride>(scaled, row_count, taps, shift, start, out + start);
      i = start;
    }
    return i;
  }

  static void run(const AvgPlan* avg, const T* dy, T* dx, int64_t begin, int64_t end) {
    constexpr int D = kDoubleLanes;
    const AvgPlan& a = *avg;
    const PoolPlan& p = *a.pool;
    const int64_t lead = p.lead_dims(), rows_per_plane = p.in_plane / p.in_last;
    const int64_t n = p.in_last;
    const InTable& last = a.in_tab.back();
    // The margins of the cached rows let vector chunks cover every cell.
    const Interior in{0, kVector ? n : 0};
    ScaledRows cache(a);
    Dims coord(lead), lo(lead), hi(lead), cur(lead);
    std::vector<const double*> scaled;
    for (RowJobs jobs(begin, rows_per_plane); jobs.job < end; jobs.next()) {
      const int64_t plane = jobs.plane, row = jobs.row;
      row_coords(p.g.in, row, coord.data());
      // A row covered by the same output rows as the one before it (both rows of a window
      // that is as tall as its stride) equals it: copy the row just written.
      bool same_box = jobs.job > begin && row > 0;
      for (int64_t d = 0; d < lead; ++d) {
        const int64_t first = a.in_tab[d].first[coord[d]], last = a.in_tab[d].last[coord[d]];
        same_box = same_box && first == lo[d] && last == hi[d];
        lo[d] = first;
        hi[d] = last;
      }
      T* __restrict out = dx + plane * p.in_plane + row * n;
      if (same_box) {
        std::memcpy(out, out - n, n * sizeof(T));
        continue;
      }
      const T* grad_plane = dy + plane * p.out_plane;
      scaled.clear();
      for (BoxCursor box(lead, lo.data(), hi.data(), p.out_pitch.data(), cur.data());
           box.valid; box.advance()) {
        scaled.push_back(cache.get(a, grad_plane, plane, cur.data()));
      }
      const int64_t row_count = static_cast<int64_t>(scaled.size());
      int64_t i = in.lo;
      if constexpr (kVector) {
        i = pass<D, 2>(p, scaled.data(), row_count, i, in, out);
        i = pass<D, 1>(p, scaled.data(), row_count, i, in, out);
        if constexpr (D >= 4) i = pass<D / 2, 1>(p, scaled.data(), row_count, i, in, out);
      }
      for (int64_t k = 0; k < n; ++k) {
        if (k == in.lo) k = std::max(k, i);
        if (k >= n) break;
        double sum = 0.0;
        for (int64_t r = 0; r < row_count; ++r) {
          for (int64_t o = last.first[k]; o < last.last[k]; ++o) sum += scaled[r][o];
        }
        out[k] = static_cast<T>(sum);
      }
    }
  }
};

// The table of one dtype's kernels, by last-dim stride kind (0: any, 1, 2).
template <typename T>
PoolRowKernels<T> kernels_of() {
  return {{MaxPoolRows<T, false, false, 0>::run, MaxPoolRows<T, false, false, 1>::run,
           MaxPoolRows<T, false, false, 2>::run},
          {MaxPoolRows<T, true, false, 0>::run, MaxPoolRows<T, true, false, 1>::run,
           MaxPoolRows<T, true, false, 2>::run},
          // 32-bit positions only in float32's 32-bit lanes.
          {MaxPoolRows<T, true, sizeof(T) == 4, 0>::run, MaxPoolRows<T, true, sizeof(T) == 4, 1>::run,
           MaxPoolRows<T, true, sizeof(T) == 4, 2>::run},
          {AvgPoolRows<T, 0>::run, AvgPoolRows<T, 1>::run, AvgPoolRows<T, 2>::run},
          {AvgPoolBackwardRows<T, 0>::run, AvgPoolBackwardRows<T, 1>::run,
           AvgPoolBackwardRows<T, 2>::run}};
}

}  // namespace

const PoolRows& pool_rows() {
  static const PoolRows rows{kernels_of<float>(), kernels_of<double>()};
  return rows;
}

}  // namespace FC_ISA
}  // namespace fastconv
