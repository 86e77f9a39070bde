// Row kernels of pooling, included by pool.cpp once per instruction set inside a
// `#pragma GCC target` region and its own namespace, with FC_POOL_VEC_BYTES the vector
// width. Vector code is written with GCC vector extensions; the pragma makes them lower to
// the target's instructions (a target attribute on a caller alone does not: vectors are
// lowered before inlining). A compile-time last-dim stride (kStride, 0 = read at run time)
// lets the common stride-2 windows load pairs and deinterleave them instead of gathering.
// Kernels run rows [begin, end) of one call and depend only on read-only inputs.

constexpr int kVecBytes = FC_POOL_VEC_BYTES;

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
  typedef int64_t DMask __attribute__((vector_size(W * sizeof(double))));  // DVec's lanes

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
  static constexpr IVec ramp(std::integer_sequence<int, I...>, int step) {
    return IVec{static_cast<LaneInt<T>>(step * I)...};
  }
  static FC_INLINE Vec select(IVec mask, Vec a, Vec b) {
    return reinterpret_cast<Vec>((reinterpret_cast<IVec>(a) & mask) |
                                 (reinterpret_cast<IVec>(b) & ~mask));
  }
  // Lanes p[0], p[2], ..., p[2W - 2] from two contiguous loads (p[2W - 1] is read too).
  static FC_INLINE Vec evens(const T* p) {
    constexpr IVec kEven = ramp(std::make_integer_sequence<int, W>{}, 2);
    return __builtin_shuffle(load<Vec>(p), load<Vec>(p + W), kEven);
  }
};

// Lane l of the mask picks lane first + l/2 of the first operand for even l and lane 0 of
// the second operand (W) for odd l: it interleaves half a vector with a filler.
template <typename IVec, int W, int... I>
constexpr IVec spread_mask(std::integer_sequence<int, I...>, int first) {
  return IVec{(I % 2 == 0 ? first + I / 2 : W)...};
}

// Stride-2 tap pass of max pooling over outputs [o, end) of one row, W at a time, while
// the pair loads stay inside the input row of `n` cells; returns where it stopped.
// `base` is the plane offset of src.
template <typename T, int W, bool kIndex>
FC_INLINE int64_t max_tap_stride2(const T* __restrict src, int64_t base, int64_t shift,
                                  int64_t n, int64_t o, int64_t end, T* __restrict out,
                                  LaneInt<T>* __restrict pos) {
  using L = Lanes<T, W>;
  using IVec = typename L::IVec;
  constexpr IVec kRamp = L::ramp(std::make_integer_sequence<int, W>{}, 2);
  for (; o + W <= end && 2 * o + 2 * W - 1 + shift < n; o += W) {
    const auto v = L::evens(src + 2 * o + shift);
    const auto best = L::template load<typename L::Vec>(out + o);
    // v wins when greater, or when it is a NaN and best is not: the first NaN stays.
    const IVec take = ~(v <= best) & (best == best);
    // Bitwise selects: a vector ?: can be split into per-lane branches under LTO.
    L::store(out + o, L::select(take, v, best));
    if (kIndex) {
      const IVec at = static_cast<LaneInt<T>>(base + 2 * o + shift) + kRamp;
      L::store(pos + o, (at & take) | (L::template load<IVec>(pos + o) & ~take));
    }
  }
  return o;
}

template <typename T, int W>
FC_INLINE int64_t sum_tap_stride2(const T* __restrict src, int64_t shift, int64_t n, int64_t o,
                                  int64_t end, double* __restrict acc) {
  using L = Lanes<T, W>;
  using DVec = typename L::DVec;
  for (; o + W <= end && 2 * o + 2 * W - 1 + shift < n; o += W) {
    const DVec v = __builtin_convertvector(L::evens(src + 2 * o + shift), DVec);
    L::store(acc + o, L::template load<DVec>(acc + o) + v);
  }
  return o;
}

// Stride-2 tap pass of the average-pool adjoint: acc[2o + shift] += scaled[o] for outputs
// [o, end), W at a time, while the pair of stores stays inside the input row of `n` cells.
// scaled is spread over the even lanes of two vectors; the odd lanes add -0.0, which leaves
// every value (signed zeros included) unchanged.
template <int W>
FC_INLINE int64_t add_tap_stride2(const double* __restrict scaled, int64_t shift, int64_t n,
                                  int64_t o, int64_t end, double* __restrict acc) {
  using L = Lanes<double, W>;
  using DVec = typename L::Vec;
  using IVec = typename L::IVec;
  constexpr IVec kLow = spread_mask<IVec, W>(std::make_integer_sequence<int, W>{}, 0);
  constexpr IVec kHigh = spread_mask<IVec, W>(std::make_integer_sequence<int, W>{}, W / 2);
  const DVec neg_zero = DVec{} - 0.0;
  for (; o + W <= end && 2 * o + 2 * W - 1 + shift < n; o += W) {
    const DVec v = L::template load<DVec>(scaled + o);
    double* dst = acc + 2 * o + shift;
    L::store(dst, L::template load<DVec>(dst) + __builtin_shuffle(v, neg_zero, kLow));
    L::store(dst + W, L::template load<DVec>(dst + W) + __builtin_shuffle(v, neg_zero, kHigh));
  }
  return o;
}

// Index is the type winners are tracked in: int32 next to float32 keeps compare mask and
// select the same width, so the inner loop vectorizes; rows are widened to int64 at the end.
template <typename T, typename Index, bool kIndex, int kStride>
struct MaxPoolRows {
  // The vector pass tracks winners in lanes as wide as T.
  static constexpr bool kVector = kStride == 2 && (!kIndex || sizeof(Index) == sizeof(T));

  static void run(const PoolPlan* plan, const T* x, T* y, int64_t* indices,
                            int64_t begin, int64_t end) {
    constexpr int W = kVecBytes / sizeof(T);
    const PoolPlan& p = *plan;
    const int64_t lead = p.lead_dims(), rows = p.out_plane / p.out_last;
    const int64_t taps = p.taps();
    const int64_t s = kStride ? kStride : p.g.stride.back();
    const OutTable& last = p.out_tab.back();
    Dims coord(lead), lo(lead), hi(lead), cur(lead);
    std::vector<Index> pos_buf(kIndex ? p.out_last : 0);
    Index* __restrict pos = pos_buf.data();
    const int64_t n = p.in_last;
    for (int64_t job = begin; job < end; ++job) {
      const int64_t plane = job / rows, row = job % rows;
      row_box(p, row, coord.data(), lo.data(), hi.data());
      int64_t first = 0;  // offset of the first input row of every window in this row
      for (int64_t d = 0; d < lead; ++d) first += lo[d] * p.in_pitch[d];
      const T* src_plane = x + plane * p.in_plane;
      T* __restrict out = y + plane * p.out_plane + row * p.out_last;
      // Seed every window with its first input cell; revisiting that cell below cannot
      // replace it (neither greater nor a new NaN), so the scan stays first-wins.
      for (int64_t o = 0; o < p.out_last; ++o) {
        out[o] = src_plane[first + last.lo[o]];
        if (kIndex) pos[o] = static_cast<Index>(first + last.lo[o]);
      }
      // Tap-major: for a fixed tap the outputs are independent, so the loop pipelines
      // instead of chaining one compare after another; per output the taps still come
      // in row-major scan order.
      for (BoxCursor box(lead, lo.data(), hi.data(), p.in_pitch.data(), cur.data()); box.valid;
           box.advance()) {
        const int64_t off = box.offset();
        const T* __restrict src = src_plane + off;
        for (int64_t j = 0; j < taps; ++j) {
          const int64_t shift = p.tap_shift[j];
          int64_t o = p.tap_lo[j];
          if constexpr (kVector) {
            auto* lanes = reinterpret_cast<LaneInt<T>*>(pos);
            o = max_tap_stride2<T, W, kIndex>(src, off, shift, n, o, p.tap_hi[j], out, lanes);
            if constexpr (W >= 8) {
              o = max_tap_stride2<T, W / 2, kIndex>(src, off, shift, n, o, p.tap_hi[j], out,
                                                    lanes);
            }
          }
          for (; o < p.tap_hi[j]; ++o) {
            const int64_t i = o * s + shift;
            const T v = src[i], best = out[o];
            // v wins when greater, or when it is a NaN and best is not: the first NaN stays.
            const bool take = !(v <= best) & (best == best);
            out[o] = take ? v : best;
            if (kIndex) pos[o] = take ? static_cast<Index>(off + i) : pos[o];
          }
        }
      }
      if (kIndex) {
        int64_t* __restrict idx = indices + plane * p.out_plane + row * p.out_last;
        for (int64_t o = 0; o < p.out_last; ++o) idx[o] = pos[o];
      }
    }
  }
};

// Lanes [first, first + H) of one stride-2 tap's values over a short row (lane o reads
// row[2 o]), in double, zero in the lanes outside [lo, hi) that the tap does not reach.
template <typename T, int H>
FC_INLINE typename Lanes<T, H>::DVec short_row_tap(const T* row, int64_t first, int64_t lo,
                                                   int64_t hi, int64_t out_last) {
  using L = Lanes<T, H>;
  using DVec = typename L::DVec;
  using Mask = typename L::DMask;
  DVec v = __builtin_convertvector(L::evens(row + 2 * first), DVec);
  if (lo > first || hi < std::min<int64_t>(out_last, first + H)) {
    constexpr Mask kLane = Lanes<double, H>::ramp(std::make_integer_sequence<int, H>{}, 1);
    const Mask lane = kLane + first;
    v = reinterpret_cast<DVec>(reinterpret_cast<Mask>(v) & ((lane >= lo) & (lane < hi)));
  }
  return v;
}

template <typename T, int kStride>
struct AvgPoolRows {
  static void run(const PoolPlan* plan, const T* x, T* y, bool count_include_pad,
                            int64_t begin, int64_t end) {
    constexpr int W = kVecBytes / sizeof(T);
    const PoolPlan& p = *plan;
    const int64_t lead = p.lead_dims(), rows = p.out_plane / p.out_last;
    const int64_t taps = p.taps(), n = p.in_last;
    const int64_t s = kStride ? kStride : p.g.stride.back();
    const OutTable& last = p.out_tab.back();
    Dims coord(lead), lo(lead), hi(lead), cur(lead);
    // Sums in double: float32 averages round once, at the end.
    std::vector<double> acc_buf(p.out_last);
    double* __restrict acc = acc_buf.data();
    // Short stride-2 rows (LeNet's 14 and 5 outputs) keep the whole row's sums in
    // registers: one vector step per tap instead of a scalar loop, and no round trip of
    // the sums through memory between taps. Lanes past the row read whatever follows it
    // in the input (never past the array) and are dropped.
    const bool short_rows = kStride == 2 && p.out_last <= W;
    const T* const x_end = x + p.planes() * p.in_plane;
    // Two halves of native width: a single double vector of W lanes would be twice the
    // register width, and GCC keeps such vectors in memory.
    constexpr int H = W / 2;
    using Half = Lanes<T, H>;
    const bool high_half = p.out_last > H;  // rows of at most H outputs skip the second
    typename Half::DMask last_count[2] = {};
    for (int64_t o = 0; o < std::min<int64_t>(W, p.out_last); ++o) {
      last_count[o / H][o % H] = count_include_pad ? last.padded[o] : last.hi[o] - last.lo[o];
    }
    for (int64_t job = begin, plane = begin / rows, row = begin % rows; job < end;
         ++job, row = row + 1 == rows ? 0 : row + 1, plane += row == 0) {
      row_box(p, row, coord.data(), lo.data(), hi.data());
      int64_t lead_count = 1;
      for (int64_t d = 0; d < lead; ++d) {
        lead_count *= count_include_pad ? p.out_tab[d].padded[coord[d]] : hi[d] - lo[d];
      }
      const T* src_plane = x + plane * p.in_plane;
      T* __restrict out = y + plane * p.out_plane + row * p.out_last;
      if constexpr (kStride == 2) {
        if (short_rows) {
          // Each lane adds the same values in the same order as the general loop below
          // (masked lanes add +0.0, which changes no sum that starts at +0.0).
          typename Half::DVec sum_low{}, sum_high{};
          bool inside = true;
          for (BoxCursor box(lead, lo.data(), hi.data(), p.in_pitch.data(), cur.data());
               box.valid && inside; box.advance()) {
            const T* src = src_plane + box.offset();
            for (int64_t j = 0; j < taps; ++j) {
              const T* at = src + p.tap_shift[j];
              if (at < x || x_end - at < 2 * W) {
                inside = false;
                break;
              }
              sum_low += short_row_tap<T, H>(at, 0, p.tap_lo[j], p.tap_hi[j], p.out_last);
              if (high_half) {
                sum_high += short_row_tap<T, H>(at, H, p.tap_lo[j], p.tap_hi[j], p.out_last);
              }
            }
          }
          if (inside) {
            // Lanes past the row divide by a zero count; their inf or NaN is dropped.
            using DVec = typename Half::DVec;
            using Vec = typename Half::Vec;
            T mean[W];
            const Vec low = __builtin_convertvector(
                sum_low / __builtin_convertvector(last_count[0] * lead_count, DVec), Vec);
            std::memcpy(mean, &low, sizeof low);
            if (high_half) {
              const Vec high = __builtin_convertvector(
                  sum_high / __builtin_convertvector(last_count[1] * lead_count, DVec), Vec);
              std::memcpy(mean + H, &high, sizeof high);
            }
            for (int64_t o = 0; o < p.out_last; ++o) out[o] = mean[o];
            continue;
          }
        }
      }
      for (int64_t o = 0; o < p.out_last; ++o) acc[o] = 0.0;
      for (BoxCursor box(lead, lo.data(), hi.data(), p.in_pitch.data(), cur.data()); box.valid;
           box.advance()) {
        const int64_t off = box.offset();
        const T* __restrict src = src_plane + off;
        for (int64_t j = 0; j < taps; ++j) {
          const int64_t shift = p.tap_shift[j];
          int64_t o = p.tap_lo[j];
          if constexpr (kStride == 2) {
            o = sum_tap_stride2<T, W>(src, shift, n, o, p.tap_hi[j], acc);
            if constexpr (W >= 8) o = sum_tap_stride2<T, W / 2>(src, shift, n, o, p.tap_hi[j], acc);
          }
          for (; o < p.tap_hi[j]; ++o) acc[o] += src[o * s + shift];
        }
      }
      for (int64_t o = 0; o < p.out_last; ++o) {
        const int64_t c = count_include_pad ? last.padded[o] : last.hi[o] - last.lo[o];
        out[o] = static_cast<T>(acc[o] / static_cast<double>(lead_count * c));
      }
    }
  }
};

// The adjoint of avg_pool_impl. Each job is one input row: it visits the box of output rows
// whose windows cover it, and scatters dy / count of each into the row through every
// last-dim tap. Jobs write disjoint rows, so no atomics; taps run last to first so each
// input cell still receives its contributions in increasing output order.
template <typename T, int kStride>
struct AvgPoolBackwardRows {
  static void run(const AvgBackwardPlan* plan, const T* dy, T* dx, int64_t begin,
                            int64_t end) {
    constexpr int W = kVecBytes / sizeof(double);
    const PoolPlan& p = *plan->pool;
    const std::vector<InTable>& in_tab = plan->in_tab;
    const double* last_count = plan->last_count.data();
    const int64_t lead = p.lead_dims(), rows = p.in_plane / p.in_last, n = p.in_last;
    const int64_t s = kStride ? kStride : p.g.stride.back();
    Dims coord(lead), lo(lead), hi(lead), cur(lead);
    std::vector<double> acc_buf(p.in_last), scaled_buf(p.out_last);
    double* __restrict acc = acc_buf.data();
    double* __restrict scaled = scaled_buf.data();
    for (int64_t job = begin; job < end; ++job) {
      const int64_t plane = job / rows, row = job % rows;
      row_coords(p.g.in, row, coord.data());
      for (int64_t d = 0; d < lead; ++d) {
        lo[d] = in_tab[d].first[coord[d]];
        hi[d] = in_tab[d].last[coord[d]];
      }
      for (int64_t i = 0; i < n; ++i) acc[i] = 0.0;
      const T* grad_plane = dy + plane * p.out_plane;
      for (BoxCursor box(lead, lo.data(), hi.data(), p.out_pitch.data(), cur.data()); box.valid;
           box.advance()) {
        double lead_count = 1;
        for (int64_t d = 0; d < lead; ++d) {
          const OutTable& t = p.out_tab[d];
          lead_count *= static_cast<double>(
              plan->count_include_pad ? t.padded[cur[d]] : t.hi[cur[d]] - t.lo[cur[d]]);
        }
        const T* __restrict grad = grad_plane + box.offset();
        for (int64_t o = 0; o < p.out_last; ++o) {
          scaled[o] = static_cast<double>(grad[o]) / (lead_count * last_count[o]);
        }
        for (int64_t j = p.taps() - 1; j >= 0; --j) {
          const int64_t shift = p.tap_shift[j];
          int64_t o = p.tap_lo[j];
          if constexpr (kStride == 2) {
            o = add_tap_stride2<W>(scaled, shift, n, o, p.tap_hi[j], acc);
            if constexpr (W >= 4) o = add_tap_stride2<W / 2>(scaled, shift, n, o, p.tap_hi[j], acc);
          }
          for (; o < p.tap_hi[j]; ++o) acc[o * s + shift] += scaled[o];
        }
      }
      T* __restrict out = dx + plane * p.in_plane + row * n;
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(acc[i]);
    }
  }
};

