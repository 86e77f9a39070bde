// Cache-blocked GEMM in the BLIS arrangement: B is packed into KC x NR panels that stay
// in L2, A into MC x KC blocks of MR-row panels, and a register-blocked micro-kernel
// keeps an MR x NR tile of C in vector registers across the whole KC loop. B may also come
// pre-packed by the caller or as shifted windows of a padded image, read in place.
// Compiled once per instruction set (see cpu_features.hpp): FC_ISA names the namespace,
// which keeps each copy's templates apart at link time, and FC_VEC_BYTES is the vector
// width. GCC vector extensions lower to whatever the target has.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastconv/gemm.hpp"
#include "fastconv/lanes.hpp"

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

// Register tile: kMR rows x kNV vectors of C. With 32 vector registers (AVX-512), 8 x 3
// keeps 24 accumulators plus 3 B vectors and an A broadcast live, and 8 rows divide the
// usual channel counts (32, 64, 512) exactly; with 16 registers, 6 x 2 is the largest fit.
#if FC_VEC_BYTES == 64
constexpr int64_t kMR = 8;
constexpr int kNV = 3;
#else
constexpr int64_t kMR = 6;
constexpr int kNV = 2;
#endif
// Products whose A is read in place (gathered windows, weights too large to pack) need no
// packing unit of kMR rows, and their B is as wide as a layer's output channels (64, 128,
// 256, 512): 6 x 4 vectors keeps 24 accumulators, 4 B vectors and an A broadcast live with
// 10 loads per 24 FMAs, and its 64 columns divide those widths, where 48-column tiles end
// in a one-vector tile (8 FMAs per 9 loads, 40% slower per FMA). Measured at batch 16 (2
// threads): the gathered weight gradient of 64ch 28x28 3.33 -> 3.10 ms, 512ch 4x4's forward
// and input gradient in batch lanes 4.48 -> 4.27 and 4.56 -> 4.36, 256ch 7x7's gathered
// forward 3.08 -> 2.99; with 6 x 4 everywhere the shifted forward of 64 channels lost
// (2.91 -> 3.02: 64 rows are 10 tiles of 6 and a partial one), so packed A keeps 8 x 3.
#if FC_VEC_BYTES == 64
constexpr int64_t kWideMR = 6;
constexpr int kWideNV = 4;
#else
constexpr int64_t kWideMR = kMR;
constexpr int kWideNV = kNV;
#endif
template <typename T>
constexpr int64_t kWidth = FC_VEC_BYTES / int64_t(sizeof(T));  // lanes per vector
template <typename T>
constexpr int64_t kNR = kNV * kWidth<T>;  // columns of C per micro-tile
constexpr int64_t kKC = kGemmDepth;       // depth of one packed block
constexpr int64_t kMC = 12 * kMR;         // rows of one packed A block (kMC x kKC in L2)

template <typename T>
struct LaneIndex {  // the shuffle-mask vector matching Vec<T>
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> type
      __attribute__((vector_size(FC_VEC_BYTES)));
};

// Groups of G lanes taken alternately from one half of x and of y (see zip_mask).
template <int G, typename T>
inline typename Vec<T>::type zip(typename Vec<T>::type x, typename Vec<T>::type y, int half) {
  constexpr int W = kWidth<T>;
  using IVec = typename LaneIndex<T>::type;
  constexpr IVec kLow = zip_mask<IVec, W, G>(std::make_integer_sequence<int, W>{}, 0);
  constexpr IVec kHigh = zip_mask<IVec, W, G>(std::make_integer_sequence<int, W>{}, 1);
  return __builtin_shuffle(x, y, half ? kHigh : kLow);
}

// Packs W depth steps of 8 contiguous rows (rs apart) into dst (8 values per depth step):
// an 8 x W transpose in three rounds of pairwise zips, instead of 8W scalar moves (the
// scalar packing of convolution weights took up to 13% of a layer's forward time).
template <typename T>
inline void pack_8_rows(const T* a, int64_t rs, T* dst) {
  using V = typename Vec<T>::type;
  constexpr int64_t W = kWidth<T>;
  V row[8], pair[4][2], quad[2][2][2];
  for (int i = 0; i < 8; ++i) std::memcpy(&row[i], a + i * rs, sizeof(V));
  for (int q = 0; q < 4; ++q)
    for (int h = 0; h < 2; ++h) pair[q][h] = zip<1, T>(row[2 * q], row[2 * q + 1], h);
  for (int q = 0; q < 2; ++q)
    for (int h = 0; h < 2; ++h)
      for (int h2 = 0; h2 < 2; ++h2)
        quad[q][h][h2] = zip<2, T>(pair[2 * q][h], pair[2 * q + 1][h], h2);
  // Output e holds depth steps [e W/8, (e+1) W/8) of all 8 rows, in order.
  for (int h = 0; h < 2; ++h)
    for (int h2 = 0; h2 < 2; ++h2)
      for (int h3 = 0; h3 < 2; ++h3) {
        const V out = zip<4, T>(quad[0][h][h2], quad[1][h][h2], h3);
        std::memcpy(dst + (4 * h + 2 * h2 + h3) * W, &out, sizeof(V));
      }
}

template <typename T>
void pack_a(int64_t mc, int64_t kc, const T* a, int64_t rs, int64_t cs, T* dst) {
  constexpr int64_t W = kWidth<T>;
  for (int64_t i0 = 0; i0 < mc; i0 += kMR) {
    const int64_t rows = std::min(kMR, mc - i0);
    int64_t p = 0;
    if constexpr (kMR == 8 && W >= 8) {
      if (cs == 1 && rows == kMR) {
        for (; p + W <= kc; p += W, dst += kMR * W) pack_8_rows(a + i0 * rs + p, rs, dst);
      }
    }
    for (; p < kc; ++p) {
      for (int64_t i = 0; i < rows; ++i) dst[i] = a[(i0 + i) * rs + p * cs];
      for (int64_t i = rows; i < kMR; ++i) dst[i] = T(0);
      dst += kMR;
    }
  }
}

template <typename T>
void pack_b(int64_t kc, int64_t nc, const T* b, int64_t rs, int64_t cs, T* dst) {
  constexpr int64_t nr = kNR<T>;
  if (rs == 1 && cs != 1) {
    // Column-major B (a transposed operand): read each column along its contiguous
    // depth instead of gathering nr far-apart values per depth step.
    for (int64_t j0 = 0; j0 < nc; j0 += nr) {
      const int64_t cols = std::min(nr, nc - j0);
      const int64_t width = fastconv::panel_width(cols, nr, kWidth<T>);
      T* panel = dst + j0 * kc;
      for (int64_t j = 0; j < cols; ++j) {
        const T* src = b + (j0 + j) * cs;
        for (int64_t p = 0; p < kc; ++p) panel[p * width + j] = src[p];
      }
      for (int64_t j = cols; j < width; ++j)
        for (int64_t p = 0; p < kc; ++p) panel[p * width + j] = T(0);
    }
    return;
  }
  for (int64_t j0 = 0; j0 < nc; j0 += nr) {
    const int64_t cols = std::min(nr, nc - j0);
    const int64_t width = fastconv::panel_width(cols, nr, kWidth<T>);
    for (int64_t p = 0; p < kc; ++p) {
      const T* src = b + p * rs + j0 * cs;
      if (cs == 1 && cols == nr) {
        std::memcpy(dst, src, sizeof(T) * nr);
      } else {
        for (int64_t j = 0; j < cols; ++j) dst[j] = src[j * cs];
        for (int64_t j = cols; j < width; ++j) dst[j] = T(0);
      }
      dst += width;
    }
  }
}

// Packs B[pc .. pc+kc) x [jc .. jc+nc) of a shifted-window operand given by columns
// (each column a contiguous run; shifted rows are read in place instead).
template <typename T>
void pack_b_shifted_columns(int64_t kc, int64_t nc, ShiftedRows<T> b, int64_t pc, int64_t jc,
                            T* dst) {
  constexpr int64_t nr = kNR<T>;
  for (int64_t j0 = 0; j0 < nc; j0 += nr) {
    const int64_t cols = std::min(nr, nc - j0);
    const int64_t width = fastconv::panel_width(cols, nr, kWidth<T>);
    T* panel = dst + j0 * kc;
    for (int64_t j = 0; j < cols; ++j) {
      const T* src = b.base + b.offsets[jc + j0 + j] + pc;
      for (int64_t p = 0; p < kc; ++p) panel[p * width + j] = src[p];
    }
    for (int64_t j = cols; j < width; ++j)
      for (int64_t p = 0; p < kc; ++p) panel[p * width + j] = T(0);
  }
}

// How the micro-kernel reads its kMR x kc A panel.
//   kPacked:   packed by pack_a, at data + p * kMR + i;
//   kRows:     in place, row i at data + i * lda;
//   kGathered: in place, element (i, p) at data + row_offsets[i] + depth_offsets[p].
// Rows past `rows` repeat the last one in place, and their results are dropped.
enum class ASide { kPacked, kRows, kGathered };

template <typename T>
struct APanel {
  const T* data;
  int64_t lda = 0;
  const int64_t* row_offsets = nullptr;
  const int64_t* depth_offsets = nullptr;
  // A depth set's steps (DepthSets), as (A offset, B offset) pairs: the micro-kernel's
  // `depth_set` mode reads step q's A at set_steps[2 * q] (the depth index, or offset, that
  // its ASide would compute) and B at set_steps[2 * q + 1] (in place of offsets[p]).
  const int64_t* set_steps = nullptr;
};

// How the micro-kernel reads its kc x kNR B panel (vector v of row p).
//   kPanel:   packed, at data + p * nv * W + v * W (a panel of nv vectors, gemm.hpp's panel_width);
//   kShifted: in place, at data + offsets[p] + v * W (shifted windows: lanes past `cols`
//             read neighbouring values and are dropped);
//   kLanes:   in place, at data + offsets[p] + lanes[v] (each vector its own run of W).
enum class BSide { kPanel, kShifted, kLanes };

template <typename T>
struct BPanel {
  const T* data;
  const int64_t* offsets = nullptr;
  const int64_t* lanes = nullptr;
};

// Depth steps ahead that B panels are prefetched.
constexpr int64_t kPanelPrefetchRows = 4;

// C[rows x cols] (+)= A panel (mr x kc) * B panel (kc x nv vectors): a narrow last panel
// costs what it uses. With `depth_set`, over the steps of a depth set only (APanel::
// set_steps). Never inlined: inlined into gemm_impl next to its depth-set variant, the
// 6 x 4 lane-runs kernel ran 20% slower (512ch 4x4 input gradient without sets 4.31 ->
// 5.19 ms); a call per register tile and depth block costs nothing measurable.
template <typename T, int nv, BSide b_side, ASide side, int64_t mr, bool depth_set = false>
__attribute__((noinline)) void micro_kernel(int64_t kc, const APanel<T>& a, const BPanel<T>& b,
                                            T* c, int64_t ldc, int64_t rows, int64_t cols,
                                            bool accumulate) {
  static_assert(side != ASide::kPacked || mr == kMR, "pack_a writes panels of kMR rows");
  static_assert(!depth_set || b_side == BSide::kLanes, "depth sets are over lane runs");
  using V = typename Vec<T>::type;
  constexpr int64_t width = kWidth<T>;
  const T* a_row[mr];
  if constexpr (side == ASide::kRows) {
    for (int64_t i = 0; i < mr; ++i) a_row[i] = a.data + std::min(i, rows - 1) * a.lda;
  } else if constexpr (side == ASide::kGathered) {
    for (int64_t i = 0; i < mr; ++i) a_row[i] = a.data + a.row_offsets[std::min(i, rows - 1)];
  }
  const T* b_vector[nv];
#pragma GCC unroll 4
  for (int v = 0; v < nv; ++v) {
    b_vector[v] = b_side == BSide::kLanes ? b.data + b.lanes[v] : b.data + v * width;
  }
  V acc[mr][nv];
#pragma GCC unroll 8
  for (int64_t i = 0; i < mr; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < nv; ++v) acc[i][v] = V{};
  }
  for (int64_t i = 0; i < rows; ++i) __builtin_prefetch(c + i * ldc, 1);
  for (int64_t p = 0; p < kc; ++p) {
    V bv[nv];
    const int64_t b_at = depth_set                  ? a.set_steps[2 * p + 1]
                         : b_side == BSide::kPanel ? p * (nv * width)
                                                   : b.offsets[p];
    if constexpr (b_side == BSide::kPanel) {
      // B panels stream from L2 (the A panel is the one that stays in L1). At one vector per
      // depth step the hardware prefetchers fall behind (half speed); at three they nearly
      // keep up, and this gains 1-2% more.
      const int64_t ahead = b_at + kPanelPrefetchRows * nv * width;
#pragma GCC unroll 4
      for (int v = 0; v < nv; ++v) __builtin_prefetch(b_vector[v] + ahead);
    }
#pragma GCC unroll 4
    for (int v = 0; v < nv; ++v) std::memcpy(&bv[v], b_vector[v] + b_at, sizeof(V));
    const int64_t depth_at = depth_set                   ? a.set_steps[2 * p]
                             : side == ASide::kGathered ? a.depth_offsets[p]
                                                        : p;
#pragma GCC unroll 8
    for (int64_t i = 0; i < mr; ++i) {
      const T ai = side == ASide::kPacked ? a.data[depth_at * kMR + i] : a_row[i][depth_at];
#pragma GCC unroll 4
      for (int v = 0; v < nv; ++v) acc[i][v] += bv[v] * ai;
    }
  }
  if (rows == mr && cols == nv * width) {
#pragma GCC unroll 8
    for (int64_t i = 0; i < mr; ++i) {
      T* row = c + i * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < nv; ++v) {
        if (accumulate) {
          V old;
          std::memcpy(&old, row + v * width, sizeof(V));
          acc[i][v] += old;
        }
        std::memcpy(row + v * width, &acc[i][v], sizeof(V));
      }
    }
    return;
  }
  T tile[mr][nv * width];
  std::memcpy(tile, acc, sizeof(tile));
  for (int64_t i = 0; i < rows; ++i) {
    T* row = c + i * ldc;
    for (int64_t j = 0; j < cols; ++j) row[j] = accumulate ? row[j] + tile[i][j] : tile[i][j];
  }
}

// Picks the micro-kernel by how many vectors of the B panel hold real columns.
template <typename T, BSide b_side, ASide side, int64_t mr, int max_nv, bool depth_set = false>
inline void micro_tile(int64_t kc, const APanel<T>& a, const BPanel<T>& b, T* c, int64_t ldc,
                       int64_t rows, int64_t cols, bool accumulate) {
  constexpr int64_t width = kWidth<T>;
  if constexpr (max_nv == 4) {
    if (cols > 3 * width) {
      return micro_kernel<T, 4, b_side, side, mr, depth_set>(kc, a, b, c, ldc, rows, cols,
                                                             accumulate);
    }
  }
  if (cols > 2 * width) {
    micro_kernel<T, 3, b_side, side, mr, depth_set>(kc, a, b, c, ldc, rows, cols, accumulate);
  } else if (cols > width) {
    micro_kernel<T, 2, b_side, side, mr, depth_set>(kc, a, b, c, ldc, rows, cols, accumulate);
  } else {
    micro_kernel<T, 1, b_side, side, mr, depth_set>(kc, a, b, c, ldc, rows, cols, accumulate);
  }
}

// `count` values in `storage` starting at a 64-byte boundary: misaligned vector loads
// from the packed panels would split across cache lines.
template <typename T>
T* cache_aligned(std::vector<T>& storage, int64_t count) {
  constexpr int64_t align = 64 / sizeof(T);
  if (static_cast<int64_t>(storage.size()) < count + align) storage.resize(count + align);
  const auto address = reinterpret_cast<std::uintptr_t>(storage.data());
  return storage.data() + ((64 - address % 64) % 64) / sizeof(T);
}

// Where B comes from: a strided view, panels packed by the caller (GemmPanelsFn layout),
// shifted windows or lane runs; the first of panels / shifted.base / lanes that is set wins.
template <typename T>
struct BSource {
  MatrixView<T> view;
  const T* panels;
  ShiftedRows<T> shifted;
  const LaneRuns<T>* lanes = nullptr;
};

// Where A comes from: a strided view packed here, packed once by pack_all (`packed`), or
// windows read in place through offset tables (`gathered`).
template <typename T>
struct ASource {
  MatrixView<T> view;
  const PackedA<T>* packed = nullptr;
  const GatheredRows<T>* gathered = nullptr;
};

// C (+)= A * B in register tiles of mr rows x max_nv vectors (kMR x kNV, or kWideMR x
// kWideNV where A is read in place).
template <typename T, int64_t mr = kMR, int max_nv = kNV>
void gemm_impl(int64_t m, int64_t n, int64_t k, const ASource<T>& a_src, const BSource<T>& src,
               T* c, int64_t ldc, bool accumulate) {
  const PackedA<T>* const packed = a_src.packed;
  const GatheredRows<T>* const gathered = a_src.gathered;
  const MatrixView<T>& a = a_src.view;
  const T* const b_panels = src.panels;
  const MatrixView<T>& b = src.view;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
    return;
  }
  constexpr int64_t nr = max_nv * kWidth<T>, nc_block = 6 * nr;
  // Packing buffers live as long as the thread, so repeated calls do not pay page faults.
  thread_local std::vector<T> a_storage, b_storage;
  T* const a_pack = packed || gathered ? nullptr : cache_aligned(a_storage, kMC * kKC);
  T* const b_pack = b_panels ? nullptr : cache_aligned(b_storage, nc_block * kKC);
  // Gathered A has no packing unit, so it may ask for deeper blocks, cut into equal parts
  // so that no thin last block is left.
  int64_t block_depth = kKC;
  if (gathered && gathered->block_depth > 0) {
    const int64_t blocks = (k + gathered->block_depth - 1) / gathered->block_depth;
    block_depth = (k + blocks - 1) / blocks;
  }
  // Lane runs' depth sets (DepthSets), resolved per depth block into the (A, B) offset pairs
  // of their steps (APanel::set_steps) at set_steps[2 * s * block_depth], set_count[s] of
  // them (-1: the set holds the whole block).
  const DepthSets* const skips =
      b_panels || src.shifted.base || !src.lanes ? nullptr : src.lanes->skips;
  thread_local std::vector<int64_t> set_steps, set_count;
  if (skips) {
    set_steps.resize(2 * skips->count * block_depth);
    set_count.resize(skips->count);
  }
  for (int64_t jc = 0; jc < n; jc += nc_block) {
    const int64_t nc = std::min(nc_block, n - jc);
    for (int64_t pc = 0; pc < k; pc += block_depth) {
      const int64_t kc = std::min(block_depth, k - pc);
      // Shifted rows and lane runs are read in place: contiguous runs of the padded input.
      const bool shifted = src.shifted.base && !src.shifted.by_columns && !b_panels;
      const LaneRuns<T>* const lanes = b_panels || src.shifted.base ? nullptr : src.lanes;
      for (int64_t set = 0; skips && set < skips->count; ++set) {
        const int64_t* const end = skips->entries + skips->starts[set + 1];
        const int64_t* const first =
            std::lower_bound(skips->entries + skips->starts[set], end, pc);
        const int64_t* const last = std::lower_bound(first, end, pc + kc);
        set_count[set] = last - first == kc ? -1 : last - first;
        int64_t* const steps = set_steps.data() + 2 * set * block_depth;
        for (int64_t q = 0; q < last - first; ++q) {
          steps[2 * q] = gathered ? gathered->depth_offsets[first[q]] : first[q] - pc;
          steps[2 * q + 1] = lanes->row_offsets[first[q]];
        }
      }
      if (src.shifted.base && src.shifted.by_columns) {
        pack_b_shifted_columns(kc, nc, src.shifted, pc, jc, b_pack);
      } else if (!b_panels && !shifted && !lanes) {
        pack_b(kc, nc, b.data + pc * b.row_stride + jc * b.col_stride, b.row_stride,
               b.col_stride, b_pack);
      }
      // Panel jr of this block: kc x panel_width values from b_block + jr * panel_step on
      // (the panels before it are full, so a narrow last panel starts where a full one would).
      const T* const b_block = lanes     ? lanes->base
                               : shifted ? src.shifted.base + jc
                               : b_panels ? b_panels + jc * k
                                          : b_pack;
      const int64_t panel_step = b_panels ? k : kc;
      const int64_t* const offsets =
          lanes ? lanes->row_offsets + pc : shifted ? src.shifted.offsets + pc : nullptr;
      const bool acc = accumulate || pc > 0;
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        // The A panels of this block: panel ir / mr at a_block.data + ir / mr * a_step.
        APanel<T> a_block{nullptr};
        int64_t a_step = mr * kc;
        if (gathered) {
          a_block = APanel<T>{gathered->base, 0, gathered->row_offsets + ic,
                              gathered->depth_offsets + pc};
        } else if (packed && packed->row_stride) {
          a_block = APanel<T>{packed->data + (packed->first_row + ic) * packed->row_stride + pc,
                              packed->row_stride};
          a_step = mr * packed->row_stride;
        } else if (packed) {
          a_block.data = packed->data + pc * packed->padded_rows + (packed->first_row + ic) * kc;
        } else {
          pack_a(mc, kc, a.data + ic * a.row_stride + pc * a.col_stride, a.row_stride,
                 a.col_stride, a_pack);
          a_block.data = a_pack;
        }
        const auto tiles = [&](auto b_side_tag, auto side_tag) {
          constexpr BSide kBSide = decltype(b_side_tag)::value;
          constexpr ASide kSide = decltype(side_tag)::value;
          // The broadcast side (an A panel, mr x kc) stays in L1 while the vector side
          // (the whole packed B block) streams from L2.
          for (int64_t ir = 0; ir < mc; ir += mr) {
            APanel<T> a_panel = a_block;
            if constexpr (kSide == ASide::kGathered) {
              a_panel.row_offsets += ir;
            } else {
              a_panel.data += ir / mr * a_step;
            }
            for (int64_t jr = 0; jr < nc; jr += nr) {
              T* const c_tile = c + (ic + ir) * ldc + jc + jr;
              const int64_t rows = std::min(mr, mc - ir), cols = std::min(nr, nc - jr);
              BPanel<T> b_panel{b_block + jr * panel_step, offsets};
              if (b_panels) b_panel.data += pc * fastconv::panel_width(cols, nr, kWidth<T>);
              if constexpr (kBSide == BSide::kShifted) b_panel.data = b_block + jr;
              if constexpr (kBSide == BSide::kLanes) {
                b_panel.data = b_block;
                b_panel.lanes = lanes->vector_offsets + (jc + jr) / kWidth<T>;
                // A tile whose vectors all name one depth set sums over its steps only.
                const int64_t* const sets =
                    skips ? skips->vector_set + (jc + jr) / kWidth<T> : nullptr;
                int64_t set = sets ? sets[0] : -1;
                for (int64_t v = 1; set >= 0 && v * kWidth<T> < cols; ++v) {
                  if (sets[v] != set) set = -1;
                }
                if (set >= 0 && set_count[set] >= 0) {
                  APanel<T> a_set = a_panel;
                  a_set.set_steps = set_steps.data() + 2 * set * block_depth;
                  micro_tile<T, kBSide, kSide, mr, max_nv, true>(set_count[set], a_set, b_panel,
                                                                 c_tile, ldc, rows, cols, acc);
                  continue;
                }
              }
              micro_tile<T, kBSide, kSide, mr, max_nv>(kc, a_panel, b_panel, c_tile, ldc, rows,
                                                       cols, acc);
            }
          }
        };
        using Rows = std::integral_constant<ASide, ASide::kRows>;
        using Packed = std::integral_constant<ASide, ASide::kPacked>;
        using Gathered = std::integral_constant<ASide, ASide::kGathered>;
        using Panel = std::integral_constant<BSide, BSide::kPanel>;
        using Shifted = std::integral_constant<BSide, BSide::kShifted>;
        using Lanes = std::integral_constant<BSide, BSide::kLanes>;
        if constexpr (mr != kMR || max_nv != kNV) {
          // Wide tiles (kWideMR): A gathered or rows read in place, B panels or lane runs.
          if (lanes && gathered) {
            tiles(Lanes{}, Gathered{});
          } else if (lanes) {
            tiles(Lanes{}, Rows{});
          } else {
            tiles(Panel{}, Gathered{});
          }
        } else if (shifted && a_block.lda) {
          tiles(Shifted{}, Rows{});
        } else if (shifted) {
          tiles(Shifted{}, Packed{});
        } else if (lanes && gathered) {
          tiles(Lanes{}, Gathered{});
        } else if (lanes && a_block.lda) {
          tiles(Lanes{}, Rows{});
        } else if (lanes) {
          tiles(Lanes{}, Packed{});
        } else if (gathered) {
          tiles(Panel{}, Gathered{});
        } else if (a_block.lda) {
          tiles(Panel{}, Rows{});
        } else {
          tiles(Panel{}, Packed{});
        }
      }
    }
  }
}

template <typename T>
void pack_all(int64_t m, int64_t k, MatrixView<T> a, T* dst) {
  const int64_t padded = (m + kMR - 1) / kMR * kMR;
  for (int64_t pc = 0; pc < k; pc += kKC) {
    pack_a(m, std::min(kKC, k - pc), a.data + pc * a.col_stride, a.row_stride, a.col_stride,
           dst + pc * padded);
  }
}

// ---- C (+)= A * B^T with both operands read along their depth (the weight gradient)
//
// In the weight gradient the depth is the output positions, contiguous in dy and in every
// shifted input row alike, so the GEMM above would have to transpose both operands while
// packing (for ResNet's 3x3 layer, a third of its time). Here each register holds a strip of
// depth for one (row of A, row of B) pair, the partial sums stay in vector registers along
// the whole depth, and one lane sum per element of C finishes the tile: no packing at all.
#if FC_VEC_BYTES == 64
constexpr int64_t kDotMR = 4;  // 24 accumulators + 4 A vectors + 1 B vector of 32 registers
constexpr int64_t kDotNR = 6;
#else
constexpr int64_t kDotMR = 3;  // 12 + 3 + 1 of 16 registers
constexpr int64_t kDotNR = 4;
#endif

// Sum of a vector's lanes by halving, in a fixed order.
template <typename T, int bytes>
struct LaneSum {
  typedef T V __attribute__((vector_size(bytes)));
  static T of(V v) {
    if constexpr (bytes == 2 * int(sizeof(T))) {
      return v[0] + v[1];
    } else {
      typename LaneSum<T, bytes / 2>::V low, high;
      std::memcpy(&low, &v, bytes / 2);
      std::memcpy(&high, reinterpret_cast<const char*>(&v) + bytes / 2, bytes / 2);
      return LaneSum<T, bytes / 2>::of(low + high);
    }
  }
};

// One kDotMR x kDotNR tile of C over depth k; rows past `rows`/`cols` repeat a valid row
// and are computed but not stored.
template <typename T>
inline void dot_tile(int64_t k, const T* const* a_rows, const T* const* b_rows, T* c,
                     int64_t ldc, int64_t rows, int64_t cols, bool accumulate,
                     const DotBatch& batch) {
  using V = typename Vec<T>::type;
  constexpr int64_t width = kWidth<T>;
  V acc[kDotMR][kDotNR];
#pragma GCC unroll 4
  for (int64_t i = 0; i < kDotMR; ++i)
#pragma GCC unroll 6
    for (int64_t j = 0; j < kDotNR; ++j) acc[i][j] = V{};
  const auto step = [&](const T* const* a_at, const T* const* b_at, int64_t p) {
    V av[kDotMR];
#pragma GCC unroll 4
    for (int64_t i = 0; i < kDotMR; ++i) std::memcpy(&av[i], a_at[i] + p, sizeof(V));
#pragma GCC unroll 6
    for (int64_t j = 0; j < kDotNR; ++j) {
      V bv;
      std::memcpy(&bv, b_at[j] + p, sizeof(V));
#pragma GCC unroll 4
      for (int64_t i = 0; i < kDotMR; ++i) acc[i][j] += av[i] * bv;
    }
  };
  const int64_t body = k / width * width;
  for (int64_t item = 0; item < batch.count; ++item) {
    const T* a_at[kDotMR];
    const T* b_at[kDotNR];
    for (int64_t i = 0; i < kDotMR; ++i) a_at[i] = a_rows[i] + item * batch.a_stride;
    for (int64_t j = 0; j < kDotNR; ++j) b_at[j] = b_rows[j] + item * batch.b_stride;
    for (int64_t p = 0; p < body; p += width) step(a_at, b_at, p);
    if (body < k) {
      // The last partial strip, copied into zero-padded vectors: nothing past a row's end
      // is read, and the padding adds exact zeros.
      T a_tail[kDotMR][width] = {}, b_tail[kDotNR][width] = {};
      for (int64_t i = 0; i < kDotMR; ++i) {
        std::memcpy(a_tail[i], a_at[i] + body, sizeof(T) * (k - body));
        a_at[i] = a_tail[i];
      }
      for (int64_t j = 0; j < kDotNR; ++j) {
        std::memcpy(b_tail[j], b_at[j] + body, sizeof(T) * (k - body));
        b_at[j] = b_tail[j];
      }
      step(a_at, b_at, 0);
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const T sum = LaneSum<T, FC_VEC_BYTES>::of(acc[i][j]);
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + sum : sum;
    }
  }
}

// C[m x n] (+)= sum over the batch items of A * B^T: row i of A at a.data + i *
// a.row_stride, row j of B at b.base + b.offsets[j], each k values long and contiguous.
template <typename T>
void gemm_dot_impl(int64_t m, int64_t n, int64_t k, MatrixView<T> a, ShiftedRows<T> b, T* c,
                   int64_t ldc, bool accumulate, const DotBatch& batch) {
  if (m <= 0 || n <= 0) return;
  // A strip of A rows stays in L1/L2 while every B row goes by: B (the padded input of
  // the group) is the larger operand and streams from L2.
  for (int64_t i0 = 0; i0 < m; i0 += kDotMR) {
    const T* a_rows[kDotMR];
    for (int64_t i = 0; i < kDotMR; ++i)
      a_rows[i] = a.data + std::min(i0 + i, m - 1) * a.row_stride;
    for (int64_t j0 = 0; j0 < n; j0 += kDotNR) {
      const T* b_rows[kDotNR];
      for (int64_t j = 0; j < kDotNR; ++j) b_rows[j] = b.base + b.offsets[std::min(j0 + j, n - 1)];
      dot_tile(k, a_rows, b_rows, c + i0 * ldc + j0, ldc, std::min(kDotMR, m - i0),
               std::min(kDotNR, n - j0), accumulate, batch);
    }
  }
}



// ---- C (m x [j0, j1)) = A * B for A of at most kStreamedMaxRows contiguous rows
//
// Bound by reading B (a fully connected layer's weights at batch 1 to 4), which is read in
// place exactly once: every row of C is accumulated together.
template <typename T, int M>
void streamed_rows(int64_t j0, int64_t j1, int64_t k, const T* a, MatrixView<T> b, T* c,
                   int64_t ldc) {
  const T* a0 = a;
  const T* a1 = a + (M > 1 ? k : 0);
  const T* a2 = a + (M > 2 ? 2 * k : 0);
  const T* a3 = a + (M > 3 ? 3 * k : 0);
  if (b.row_stride == 1) {
    // Columns of B contiguous (x @ W.T): M dot products per column.
    for (int64_t j = j0; j < j1; ++j) {
      const T* bj = b.data + j * b.col_stride;
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t p = 0; p < k; ++p) {
        const T v = bj[p];
        s0 += a0[p] * v;
        if constexpr (M > 1) s1 += a1[p] * v;
        if constexpr (M > 2) s2 += a2[p] * v;
        if constexpr (M > 3) s3 += a3[p] * v;
      }
      const T sums[4] = {s0, s1, s2, s3};
      for (int i = 0; i < M; ++i) c[i * ldc + j] = sums[i];
    }
    return;
  }
  // Rows of B contiguous (g @ W): a[i, p] * B[p, block] accumulated over p for every i,
  // in blocks whose sums stay in L1 while the rows of B stream by.
  constexpr int64_t kBlock = 32768 / (M * int64_t(sizeof(T)));
  for (int64_t jb = j0; jb < j1; jb += kBlock) {
    const int64_t len = std::min(kBlock, j1 - jb);
    T acc[M][kBlock];
    for (int i = 0; i < M; ++i) std::fill(acc[i], acc[i] + len, T(0));
    for (int64_t p = 0; p < k; ++p) {
      const T* row = b.data + p * b.row_stride + jb;
      for (int i = 0; i < M; ++i) {
        const T ap = a[i * k + p];
        T* sum = acc[i];
#pragma omp simd
        for (int64_t jj = 0; jj < len; ++jj) sum[jj] += ap * row[jj];
      }
    }
    for (int i = 0; i < M; ++i) std::copy(acc[i], acc[i] + len, c + i * ldc + jb);
  }
}

template <typename T>
void streamed_impl(int64_t m, int64_t j0, int64_t j1, int64_t k, const T* a, MatrixView<T> b,
                   T* c, int64_t ldc) {
  static_assert(kStreamedMaxRows == 4, "one instantiation per row count below");
  switch (m) {
    case 1: return streamed_rows<T, 1>(j0, j1, k, a, b, c, ldc);
    case 2: return streamed_rows<T, 2>(j0, j1, k, a, b, c, ldc);
    case 3: return streamed_rows<T, 3>(j0, j1, k, a, b, c, ldc);
    default: return streamed_rows<T, 4>(j0, j1, k, a, b, c, ldc);
  }
}

void streamed_f32(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a,
                  MatrixView<float> b, float* c, int64_t ldc) {
  streamed_impl(m, j0, j1, k, a, b, c, ldc);
}
void streamed_f64(int64_t m, int64_t j0, int64_t j1, int64_t k, const double* a,
                  MatrixView<double> b, double* c, int64_t ldc) {
  streamed_impl(m, j0, j1, k, a, b, c, ldc);
}

void gemm_f32(int64_t m, int64_t n, int64_t k, MatrixView<float> a, MatrixView<float> b,
              float* c, int64_t ldc, bool accumulate) {
  gemm_impl<float>(m, n, k, {a}, {b, nullptr, {}}, c, ldc, accumulate);
}
void gemm_f64(int64_t m, int64_t n, int64_t k, MatrixView<double> a, MatrixView<double> b,
              double* c, int64_t ldc, bool accumulate) {
  gemm_impl<double>(m, n, k, {a}, {b, nullptr, {}}, c, ldc, accumulate);
}
void pack_f32(int64_t m, int64_t k, MatrixView<float> a, float* dst) { pack_all(m, k, a, dst); }
void pack_f64(int64_t m, int64_t k, MatrixView<double> a, double* dst) { pack_all(m, k, a, dst); }
void packed_f32(int64_t m, int64_t n, int64_t k, PackedA<float> a, MatrixView<float> b, float* c,
                int64_t ldc, bool accumulate) {
  gemm_impl<float>(m, n, k, {{}, &a}, {b, nullptr, {}}, c, ldc, accumulate);
}
void packed_f64(int64_t m, int64_t n, int64_t k, PackedA<double> a, MatrixView<double> b,
                double* c, int64_t ldc, bool accumulate) {
  gemm_impl<double>(m, n, k, {{}, &a}, {b, nullptr, {}}, c, ldc, accumulate);
}

void panels_f32(int64_t m, int64_t n, int64_t k, PackedA<float> a, const float* b_panels,
                float* c, int64_t ldc, bool accumulate) {
  gemm_impl<float>(m, n, k, {{}, &a}, {{}, b_panels, {}}, c, ldc, accumulate);
}
void panels_f64(int64_t m, int64_t n, int64_t k, PackedA<double> a, const double* b_panels,
                double* c, int64_t ldc, bool accumulate) {
  gemm_impl<double>(m, n, k, {{}, &a}, {{}, b_panels, {}}, c, ldc, accumulate);
}

void shifted_f32(int64_t m, int64_t n, int64_t k, MatrixView<float> a,
                 const PackedA<float>* packed_a, ShiftedRows<float> b, float* c, int64_t ldc,
                 bool accumulate) {
  gemm_impl<float>(m, n, k, {a, packed_a}, {{}, nullptr, b}, c, ldc, accumulate);
}
void shifted_f64(int64_t m, int64_t n, int64_t k, MatrixView<double> a,
                 const PackedA<double>* packed_a, ShiftedRows<double> b, double* c, int64_t ldc,
                 bool accumulate) {
  gemm_impl<double>(m, n, k, {a, packed_a}, {{}, nullptr, b}, c, ldc, accumulate);
}

void gathered_f32(int64_t m, int64_t n, int64_t k, GatheredRows<float> a, const float* b_panels,
                  float* c, int64_t ldc, bool accumulate) {
  gemm_impl<float, kWideMR, kWideNV>(m, n, k, {{}, nullptr, &a}, {{}, b_panels, {}}, c, ldc,
                                     accumulate);
}
void gathered_f64(int64_t m, int64_t n, int64_t k, GatheredRows<double> a,
                  const double* b_panels, double* c, int64_t ldc, bool accumulate) {
  gemm_impl<double, kWideMR, kWideNV>(m, n, k, {{}, nullptr, &a}, {{}, b_panels, {}}, c, ldc,
                                      accumulate);
}

// Weights read in place take wide tiles; packed ones come in panels of kMR rows.
template <typename T>
void lanes_impl(int64_t m, int64_t n, int64_t k, PackedA<T> a, LaneRuns<T> b, T* c, int64_t ldc,
                bool accumulate) {
  if (a.row_stride) {
    gemm_impl<T, kWideMR, kWideNV>(m, n, k, {{}, &a}, {{}, nullptr, {}, &b}, c, ldc, accumulate);
  } else {
    gemm_impl<T>(m, n, k, {{}, &a}, {{}, nullptr, {}, &b}, c, ldc, accumulate);
  }
}
void lanes_f32(int64_t m, int64_t n, int64_t k, PackedA<float> a, LaneRuns<float> b, float* c,
               int64_t ldc, bool accumulate) {
  lanes_impl(m, n, k, a, b, c, ldc, accumulate);
}
void lanes_f64(int64_t m, int64_t n, int64_t k, PackedA<double> a, LaneRuns<double> b,
               double* c, int64_t ldc, bool accumulate) {
  lanes_impl(m, n, k, a, b, c, ldc, accumulate);
}

void gathered_lanes_f32(int64_t m, int64_t n, int64_t k, GatheredRows<float> a,
                        LaneRuns<float> b, float* c, int64_t ldc, bool accumulate) {
  gemm_impl<float, kWideMR, kWideNV>(m, n, k, {{}, nullptr, &a}, {{}, nullptr, {}, &b}, c, ldc,
                                     accumulate);
}
void gathered_lanes_f64(int64_t m, int64_t n, int64_t k, GatheredRows<double> a,
                        LaneRuns<double> b, double* c, int64_t ldc, bool accumulate) {
  gemm_impl<double, kWideMR, kWideNV>(m, n, k, {{}, nullptr, &a}, {{}, nullptr, {}, &b}, c,
                                      ldc, accumulate);
}

void dot_f32(int64_t m, int64_t n, int64_t k, MatrixView<float> a, ShiftedRows<float> b,
             float* c, int64_t ldc, bool accumulate, DotBatch batch) {
  gemm_dot_impl<float>(m, n, k, a, b, c, ldc, accumulate, batch);
}
void dot_f64(int64_t m, int64_t n, int64_t k, MatrixView<double> a, ShiftedRows<double> b,
             double* c, int64_t ldc, bool accumulate, DotBatch batch) {
  gemm_dot_impl<double>(m, n, k, a, b, c, ldc, accumulate, batch);
}

}  // namespace

const GemmKernels& gemm_table() {
  static const GemmKernels table{gemm_f32,    gemm_f64,   pack_f32,    pack_f64,
                                 packed_f32,  packed_f64, panels_f32,  panels_f64,
                                 shifted_f32, shifted_f64, dot_f32,    dot_f64,
                                 streamed_f32, streamed_f64,
                                 {gathered_f32, gathered_f64},
                                 {lanes_f32, lanes_f64},
                                 {gathered_lanes_f32, gathered_lanes_f64},
                                 kMR,         kNR<float>, kNR<double>,
                                 kWideNV * kWidth<float>, kWideNV * kWidth<double>,
                                 kWidth<float>, kWidth<double>};
  return table;
}

}  // namespace FC_ISA
}  // namespace fastconv
