// The inner loops of RoI align and RoI pool on the CPU, compiled once per instruction set
// (see cpu_features.hpp: FC_ISA names the namespace, FC_VEC_BYTES is the vector width) and
// exported as one table, roi_kernels(). Vector code is written with GCC vector extensions.
//
// Every kernel works on one roi and one block of channels in the channels-last layout
// (roi.cpp transposes the operands), so a tap is one scalar weight times a few contiguous
// vectors of channels: the block's running sums, maxima and winners stay in registers while
// a bin visits its taps. Channels never interact, so the vector width and the block split
// cannot change a result; each lane sums its taps in the same order in every build.

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastconv/roi.hpp"

// The kernels have internal linkage, so the vector-argument ABI notes do not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastconv {
namespace FC_ISA {
namespace {

template <typename T>
using LaneInt = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

template <typename T>
struct Lanes {
  static constexpr int kCount = FC_VEC_BYTES / sizeof(T);
  typedef T Vec __attribute__((vector_size(FC_VEC_BYTES)));
  typedef LaneInt<T> IVec __attribute__((vector_size(FC_VEC_BYTES)));

  static FC_INLINE Vec load(const T* p) {
    Vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static FC_INLINE void store(T* p, Vec v) { std::memcpy(p, &v, sizeof v); }
};

template <typename T, int NV>
void align_forward_n(const AlignTaps<T>& t, const T* __restrict src, const int64_t* pitch,
                     T count, T* __restrict dst) {
  using L = Lanes<T>;
  using Vec = typename L::Vec;
  constexpr int W = L::kCount;
  const AxisTaps<T>&az = t.axis[0], &ay = t.axis[1], &ax = t.axis[2];
  const int64_t pz = pitch[0], py = pitch[1], px = pitch[2];
  T* out = dst;
  for (int64_t bz = 0; bz < t.out[0]; ++bz) {
    for (int64_t by = 0; by < t.out[1]; ++by) {
      for (int64_t bx = 0; bx < t.out[2]; ++bx) {
        Vec acc[NV] = {};
        for (int64_t kz = az.begin[bz]; kz < az.begin[bz + 1]; ++kz) {
          const T wz = az.weight[kz];
          const T* plane = src + az.cell[kz] * pz;
          for (int64_t ky = ay.begin[by]; ky < ay.begin[by + 1]; ++ky) {
            const T wzy = wz * ay.weight[ky];
            const T* row = plane + ay.cell[ky] * py;
            for (int64_t kx = ax.begin[bx]; kx < ax.begin[bx + 1]; ++kx) {
              const T w = wzy * ax.weight[kx];
              const T* p = row + ax.cell[kx] * px;
              for (int v = 0; v < NV; ++v) acc[v] += w * L::load(p + v * W);
            }
          }
        }
        for (int v = 0; v < NV; ++v) L::store(out + v * W, acc[v] / count);
        out += NV * W;
      }
    }
  }
}

template <typename T, int NV>
void align_backward_n(const AlignTaps<T>& t, const T* __restrict g, int64_t height, int64_t row0,
                      int64_t row1, const int64_t* pitch, T* __restrict acc) {
  using L = Lanes<T>;
  using Vec = typename L::Vec;
  constexpr int W = L::kCount;
  const AxisTaps<T>&az = t.axis[0], &ay = t.axis[1], &ax = t.axis[2];
  const int64_t prow = pitch[0], px = pitch[1];
  const T* grad = g;
  for (int64_t bz = 0; bz < t.out[0]; ++bz) {
    for (int64_t by = 0; by < t.out[1]; ++by) {
      for (int64_t bx = 0; bx < t.out[2]; ++bx, grad += NV * W) {
        Vec gv[NV];
        for (int v = 0; v < NV; ++v) gv[v] = L::load(grad + v * W);
        for (int64_t kz = az.begin[bz]; kz < az.begin[bz + 1]; ++kz) {
          const T wz = az.weight[kz];
          const int64_t plane_row = az.cell[kz] * height;
          for (int64_t ky = ay.begin[by]; ky < ay.begin[by + 1]; ++ky) {
            const int64_t r = plane_row + ay.cell[ky];
            if (r < row0 || r >= row1) continue;
            const T wzy = wz * ay.weight[ky];
            T* row = acc + (r - row0) * prow;
            for (int64_t kx = ax.begin[bx]; kx < ax.begin[bx + 1]; ++kx) {
              const T w = wzy * ax.weight[kx];
              T* p = row + ax.cell[kx] * px;
              for (int v = 0; v < NV; ++v) L::store(p + v * W, L::load(p + v * W) + w * gv[v]);
            }
          }
        }
      }
    }
  }
}

template <typename T, int NV>
void pool_forward_n(const PoolBins& b, const T* __restrict src, const int64_t* pitch,
                    int64_t height, int64_t width, T* __restrict dst, int64_t* __restrict at) {
  using L = Lanes<T>;
  using Vec = typename L::Vec;
  using IVec = typename L::IVec;
  using Int = LaneInt<T>;
  constexpr int W = L::kCount;
  const int64_t pz = pitch[0], py = pitch[1], px = pitch[2];
  int64_t out = 0;
  for (int64_t bz = 0; bz < b.out[0]; ++bz) {
    for (int64_t by = 0; by < b.out[1]; ++by) {
      for (int64_t bx = 0; bx < b.out[2]; ++bx, out += NV * W) {
        const int64_t z0 = b.start[0][bz], z1 = b.end[0][bz];
        const int64_t y0 = b.start[1][by], y1 = b.end[1][by];
        const int64_t x0 = b.start[2][bx], x1 = b.end[2][bx];
        if (z1 <= z0 || y1 <= y0 || x1 <= x0) {
          for (int64_t j = 0; j < NV * W; ++j) {
            dst[out + j] = T(0);
            at[out + j] = -1;
          }
          continue;
        }
        Vec best[NV];
        IVec pos[NV];
        for (int v = 0; v < NV; ++v) {
          best[v] = Vec{} + pool_floor<T>();
          pos[v] = IVec{} - 1;
        }
        for (int64_t z = z0; z < z1; ++z) {
          for (int64_t y = y0; y < y1; ++y) {
            const T* row = src + z * pz + y * py;
            const Int first = static_cast<Int>((z * height + y) * width);
            for (int64_t x = x0; x < x1; ++x) {
              const IVec cell = IVec{} + static_cast<Int>(first + x);
              const T* p = row + x * px;
              for (int v = 0; v < NV; ++v) {
                const Vec value = L::load(p + v * W);
                const IVec wins = value > best[v];
                best[v] = wins ? value : best[v];
                pos[v] = wins ? cell : pos[v];
              }
            }
          }
        }
        for (int v = 0; v < NV; ++v) {
          L::store(dst + out + v * W, best[v]);
          Int lanes[W];
          std::memcpy(lanes, &pos[v], sizeof lanes);
          for (int j = 0; j < W; ++j) at[out + v * W + j] = lanes[j];
        }
      }
    }
  }
}

// Transposes of square tiles of 32 bytes a row (8 floats or 4 doubles) in registers: the
// classic unpack, pair and half-swap stages as two-vector shuffles.
template <typename T>
struct Tile {
  static constexpr int kSize = 32 / sizeof(T);
  typedef T Vec __attribute__((vector_size(32)));
  typedef LaneInt<T> IVec __attribute__((vector_size(32)));

  static FC_INLINE Vec load(const T* p) {
    Vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static FC_INLINE void store(T* p, Vec v) { std::memcpy(p, &v, sizeof v); }

  static FC_INLINE void transpose(const T* src, int64_t src_stride, T* dst, int64_t dst_stride) {
    Vec r[kSize];
    for (int i = 0; i < kSize; ++i) r[i] = load(src + i * src_stride);
    if constexpr (kSize == 8) {
      Vec t[8], u[8];
      for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], IVec{0, 8, 1, 9, 4, 12, 5, 13});
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], IVec{2, 10, 3, 11, 6, 14, 7, 15});
      }
      for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shuffle(t[i], t[i + 2], IVec{0, 1, 8, 9, 4, 5, 12, 13});
        u[i + 1] = __builtin_shuffle(t[i], t[i + 2], IVec{2, 3, 10, 11, 6, 7, 14, 15});
        u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], IVec{0, 1, 8, 9, 4, 5, 12, 13});
        u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], IVec{2, 3, 10, 11, 6, 7, 14, 15});
      }
      for (int i = 0; i < 4; ++i) {
        store(dst + i * dst_stride,
              __builtin_shuffle(u[i], u[i + 4], IVec{0, 1, 2, 3, 8, 9, 10, 11}));
        store(dst + (i + 4) * dst_stride,
              __builtin_shuffle(u[i], u[i + 4], IVec{4, 5, 6, 7, 12, 13, 14, 15}));
      }
    } else {
      const Vec t0 = __builtin_shuffle(r[0], r[1], IVec{0, 4, 2, 6});
      const Vec t1 = __builtin_shuffle(r[0], r[1], IVec{1, 5, 3, 7});
      const Vec t2 = __builtin_shuffle(r[2], r[3], IVec{0, 4, 2, 6});
      const Vec t3 = __builtin_shuffle(r[2], r[3], IVec{1, 5, 3, 7});
      store(dst, __builtin_shuffle(t0, t2, IVec{0, 1, 4, 5}));
      store(dst + dst_stride, __builtin_shuffle(t1, t3, IVec{0, 1, 4, 5}));
      store(dst + 2 * dst_stride, __builtin_shuffle(t0, t2, IVec{2, 3, 6, 7}));
      store(dst + 3 * dst_stride, __builtin_shuffle(t1, t3, IVec{2, 3, 6, 7}));
    }
  }
};

// Tiles walk the destination row by row (a band of K rows at a time), so each destination
// cache line is completed while it is still in L1.
template <typename T>
void transpose(const T* __restrict src, int64_t src_stride, int64_t rows, int64_t cols,
               T* __restrict dst, int64_t dst_stride) {
  constexpr int K = Tile<T>::kSize;
  const int64_t full_rows = rows / K * K, full_cols = cols / K * K;
  for (int64_t c = 0; c < full_cols; c += K) {
    for (int64_t r = 0; r < full_rows; r += K) {
      Tile<T>::transpose(src + r * src_stride + c, src_stride, dst + c * dst_stride + r,
                         dst_stride);
    }
    for (int64_t i = c; i < c + K; ++i) {
      for (int64_t r = full_rows; r < rows; ++r) dst[i * dst_stride + r] = src[r * src_stride + i];
    }
  }
  for (int64_t c = full_cols; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r) dst[c * dst_stride + r] = src[r * src_stride + c];
  }
}

template <typename T>
void align_forward(const AlignTaps<T>& t, const T* src, const int64_t* pitch, int64_t vecs,
                   T count, T* dst) {
  switch (vecs) {
    case 1: return align_forward_n<T, 1>(t, src, pitch, count, dst);
    case 2: return align_forward_n<T, 2>(t, src, pitch, count, dst);
    case 3: return align_forward_n<T, 3>(t, src, pitch, count, dst);
    default: return align_forward_n<T, 4>(t, src, pitch, count, dst);
  }
}

template <typename T>
void align_backward(const AlignTaps<T>& t, const T* g, int64_t vecs, int64_t height,
                    int64_t row0, int64_t row1, const int64_t* pitch, T* acc) {
  switch (vecs) {
    case 1: return align_backward_n<T, 1>(t, g, height, row0, row1, pitch, acc);
    case 2: return align_backward_n<T, 2>(t, g, height, row0, row1, pitch, acc);
    case 3: return align_backward_n<T, 3>(t, g, height, row0, row1, pitch, acc);
    default: return align_backward_n<T, 4>(t, g, height, row0, row1, pitch, acc);
  }
}

template <typename T>
void pool_forward(const PoolBins& b, const T* src, const int64_t* pitch, int64_t vecs,
                  int64_t height, int64_t width, T* dst, int64_t* at) {
  switch (vecs) {
    case 1: return pool_forward_n<T, 1>(b, src, pitch, height, width, dst, at);
    case 2: return pool_forward_n<T, 2>(b, src, pitch, height, width, dst, at);
    case 3: return pool_forward_n<T, 3>(b, src, pitch, height, width, dst, at);
    default: return pool_forward_n<T, 4>(b, src, pitch, height, width, dst, at);
  }
}

template <typename T>
RoiKernelFns<T> kernels_of() {
  static_assert(kRoiMaxVecs == 4, "the dispatch above covers 1 to 4 vectors");
  return {align_forward<T>, align_backward<T>, pool_forward<T>, transpose<T>,
          Lanes<T>::kCount};
}

}  // namespace

const RoiKernels& roi_kernels() {
  static const RoiKernels kernels{kernels_of<float>(), kernels_of<double>()};
  return kernels;
}

}  // namespace FC_ISA
}  // namespace fastconv
