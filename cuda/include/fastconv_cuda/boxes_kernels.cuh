// Box kernels for the CUDA backend: IoU, format conversion, non-max suppression (plain and
// per label) and Soft-NMS, with the results of cpp/boxes.cpp bit for bit (Soft-NMS: up to
// the last bit of the device's exp in the Gaussian weight). Device code only (no
// pybind11, no CUDA runtime calls); boxes.cu validates, launches on the caller's stream and
// reads the status words back.
//
// Arithmetic: every IoU goes through pair_iou below, the CPU's formula in the box dtype, in
// the CPU's order, with every operation an explicitly rounded intrinsic (__fmul_rn,
// __fadd_rn, ...): nvcc would otherwise contract a*b + c into an FMA, while the CPU module is
// built with -ffp-contract=off. So an IoU is the same float on both sides and a box exactly
// at the threshold is decided the same way.
//
// Validation: non-finite / inverted boxes and NaN scores must raise ValueError naming the
// first bad row, like the CPU binding. A small kernel records the first bad position in
// device memory (atomicMin); raising needs that value on the host:
//   box_iou, box_convert: one 16-byte device->host read after the launches, i.e. these ops
//     synchronize the stream once. (A CuPy reduction in Python would also sync, and cost
//     more launches; doing it here keeps it to one kernel and one copy, overlapped with the
//     main kernel, which runs on invalid input too but only writes the fresh output.)
//   nms, batched_nms: the flags travel in the same read as the result length, the op's one
//     sync. The fixed-size variants (nms_fixed, batched_nms_fixed) never sync: invalid input
//     yields count = -1 and indices all -1 instead of an exception.
//
// NMS pipeline, all on the caller's stream:
//   1. prepare (one thread per box): validation flags; candidate flag (score above
//      score_threshold); sort key = descending-order bits of the score (+0 for -0, so equal
//      scores compare equal as on the CPU), all ones for non-candidates (they sort last).
//   2. stable radix sort of (key, index): score descending, ties by lower index (the input
//      is in index order and the sort is stable). batched_nms then stably sorts that order by
//      label (sign-flipped int64), giving (label, score desc, index) and candidates before
//      non-candidates inside each label.
//   3. gather the boxes into sorted order; the IoU >= threshold bitmask in 64-bit words,
//      mask[row * col_blocks + cb] bit j = box (64 cb + j) is suppressed by box row. One block
//      of 64 threads per (row block, column block) tile of the upper triangle, the column
//      boxes in shared memory. batched: pairs of different labels are 0 and tiles with no
//      same-label pair are skipped (the greedy pass never reads them).
//   4. greedy pass: one block per label segment (nms: one segment). It walks the segment
//      64 rows at a time: the 64 "diagonal" mask words are staged in shared memory and one
//      thread resolves the block sequentially (a removed row is skipped, a kept row ORs its
//      diagonal word into the block's removed word); then all threads OR the kept rows' later
//      words into the removed bitset (shared memory). Rows of removed boxes are never read.
//      Stops at the first non-candidate or at max_output.
//   5. nms writes kept indices directly (rows are in output order). batched_nms marks kept
//      indices, then one block compacts the step-2 score order (score desc, index asc) over
//      the marked ones -- the CPU's final merge order -- and truncates at max_output.
#pragma once

#include <cub/block/block_scan.cuh>

#include <cmath>
#include <cstdint>
#include <limits>

#include "fastconv_cuda/grid.cuh"

namespace fastconv::cuda {

// ---------------------------------------------------------------------------------------
// Exactly rounded arithmetic (no contraction)
// ---------------------------------------------------------------------------------------

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

// The CPU's std::max/std::min spellings (they decide which zero survives).
template <typename T>
__device__ __forceinline__ T max_of(T a, T b) {
  return a < b ? b : a;
}
template <typename T>
__device__ __forceinline__ T min_of(T a, T b) {
  return b < a ? b : a;
}

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
__device__ __forceinline__ T box_area(T x1, T y1, T x2, T y2) {
  return mul_rn(sub_rn(x2, x1), sub_rn(y2, y1));
}

// cpp/boxes.cpp pair_iou, operation for operation. The early return for inter == 0 gives
// the same +0 the full formula gives (0 / uni, or the guarded 0), and skips the division for
// the common disjoint pair.
template <typename T>
__device__ __forceinline__ T pair_iou(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1,
                                      T bx2, T by2, T area_b) {
  const T w = max_of(T(0), sub_rn(min_of(ax2, bx2), max_of(ax1, bx1)));
  const T h = max_of(T(0), sub_rn(min_of(ay2, by2), max_of(ay1, by1)));
  const T inter = mul_rn(w, h);
  if (!(inter > T(0))) return T(0);
  const T uni = sub_rn(add_rn(area_a, area_b), inter);
  return uni > T(0) ? div_rn(inter, uni) : T(0);
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

// Row i is bad when a coordinate is not finite, or (sizes=false) x1 > x2 or y1 > y2, or
// (sizes=true) a width/height is negative. first_bad <- the smallest bad row.
template <typename T>
__device__ __forceinline__ bool row_is_bad(const T* r, bool sizes) {
  const T big = std::numeric_limits<T>::max();
  const bool finite = (fabs(r[0]) <= big) & (fabs(r[1]) <= big) & (fabs(r[2]) <= big) &
                      (fabs(r[3]) <= big);
  const bool shaped = sizes ? (r[2] >= T(0)) & (r[3] >= T(0)) : (r[0] <= r[2]) & (r[1] <= r[3]);
  return !(finite & shaped);
}

template <typename T>
__global__ void find_bad_rows_kernel(const T* __restrict__ b, int64_t n, bool sizes,
                                     long long* first_bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (row_is_bad(b + 4 * i, sizes)) atomicMin(first_bad, static_cast<long long>(i));
  }
}

__global__ void fill_i64_kernel(long long* p, int64_t count, long long value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    p[i] = value;
  }
}

// ---------------------------------------------------------------------------------------
// box_iou
// ---------------------------------------------------------------------------------------

// Thread x of the grid owns column j (box b[j], kept in registers) and walks the rows
// i = blockIdx.y, +gridDim.y, ...; a row's box is the same for the whole block (a broadcast
// load), and the stores of one row are contiguous across the block.
template <typename T>
__global__ void box_iou_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t n,
                               int64_t m, T* __restrict__ out) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= m) return;
  const T bx1 = b[4 * j], by1 = b[4 * j + 1], bx2 = b[4 * j + 2], by2 = b[4 * j + 3];
  const T area_b = box_area(bx1, by1, bx2, by2);
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const T ax1 = a[4 * i], ay1 = a[4 * i + 1], ax2 = a[4 * i + 2], ay2 = a[4 * i + 3];
    const T area_a = box_area(ax1, ay1, ax2, ay2);
    out[i * m + j] = pair_iou(ax1, ay1, ax2, ay2, area_a, bx1, by1, bx2, by2, area_b);
  }
}

// ---------------------------------------------------------------------------------------
// box_convert
// ---------------------------------------------------------------------------------------

// One thread per box; the CPU's formulas through xyxy, explicitly rounded.
template <typename T>
__global__ void box_convert_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t n,
                                   Fmt in, Fmt out) {
  const T half = T(0.5);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const T a = src[4 * i], b = src[4 * i + 1], c = src[4 * i + 2], d = src[4 * i + 3];
    T x1 = a, y1 = b, x2 = c, y2 = d;
    if (in == Fmt::kXywh) {
      x2 = add_rn(a, c);
      y2 = add_rn(b, d);
    } else if (in == Fmt::kCxcywh) {
      x1 = sub_rn(a, mul_rn(half, c));
      y1 = sub_rn(b, mul_rn(half, d));
      x2 = add_rn(a, mul_rn(half, c));
      y2 = add_rn(b, mul_rn(half, d));
    }
    T r0 = x1, r1 = y1, r2 = x2, r3 = y2;
    if (out == Fmt::kXywh) {
      r2 = sub_rn(x2, x1);
      r3 = sub_rn(y2, y1);
    } else if (out == Fmt::kCxcywh) {
      r0 = mul_rn(add_rn(x1, x2), half);
      r1 = mul_rn(add_rn(y1, y2), half);
      r2 = sub_rn(x2, x1);
      r3 = sub_rn(y2, y1);
    }
    dst[4 * i] = r0;
    dst[4 * i + 1] = r1;
    dst[4 * i + 2] = r2;
    dst[4 * i + 3] = r3;
  }
}

// ---------------------------------------------------------------------------------------
// nms / batched_nms
// ---------------------------------------------------------------------------------------

constexpr int kMaskThreads = 64;     // boxes per mask tile side (bits per word)
constexpr int kGreedyThreads = 256;  // threads of a greedy-pass block
constexpr int kCompactThreads = 1024;

// Status words of one call (device memory).
enum Status { kBadBox = 0, kNanScore = 1, kCount = 2, kStatusWords = 3 };

// Descending-order sort keys: a larger score gets a smaller key. Non-candidates get all
// ones over the sorted bits, above any non-NaN score's key.
__device__ __forceinline__ uint64_t descending_key(float s) {
  if (s == 0.0f) s = 0.0f;  // -0 == +0 on the CPU: give both one key
  const uint32_t u = __float_as_uint(s);
  const uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return static_cast<uint64_t>(~ascending);
}
__device__ __forceinline__ uint64_t descending_key(double s) {
  if (s == 0.0) s = 0.0;
  const uint64_t u = static_cast<uint64_t>(__double_as_longlong(s));
  const uint64_t ascending = (u >> 63) ? ~u : (u | (uint64_t(1) << 63));
  return ~ascending;
}
template <typename T>
constexpr int score_key_bits() {
  return sizeof(T) == 4 ? 32 : 64;
}
template <typename T>
constexpr uint64_t excluded_key() {
  return sizeof(T) == 4 ? uint64_t(0xffffffffu) : ~uint64_t(0);
}

template <typename T>
__global__ void nms_prepare_kernel(const T* __restrict__ boxes, const T* __restrict__ scores,
                                   int64_t n, bool has_score_threshold, T score_threshold,
                                   uint64_t* __restrict__ keys, int64_t* __restrict__ values,
                                   uint8_t* __restrict__ candidate, long long* status) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (row_is_bad(boxes + 4 * i, false)) atomicMin(status + kBadBox, static_cast<long long>(i));
    const T s = scores[i];
    if (s != s) atomicMin(status + kNanScore, static_cast<long long>(i));
    const bool keep = !has_score_threshold || !(s <= score_threshold);
    candidate[i] = keep;
    keys[i] = keep ? descending_key(s) : excluded_key<T>();
    values[i] = i;
  }
}

// Labels in sort order of the score pass, as order-preserving unsigned keys.
__global__ void label_keys_kernel(const int64_t* __restrict__ labels,
                                  const int64_t* __restrict__ order, int64_t n,
                                  uint64_t* __restrict__ keys) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    keys[k] = static_cast<uint64_t>(labels[order[k]]) ^ (uint64_t(1) << 63);
  }
}

// Boxes and candidate flags in processing order.
template <typename T>
__global__ void gather_sorted_kernel(const T* __restrict__ boxes,
                                     const uint8_t* __restrict__ candidate,
                                     const int64_t* __restrict__ order, int64_t n,
                                     T* __restrict__ sorted, uint8_t* __restrict__ sorted_cand) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = order[k];
    for (int c = 0; c < 4; ++c) sorted[4 * k + c] = boxes[4 * i + c];
    sorted_cand[k] = candidate[i];
  }
}

// Tile (row block blockIdx.y, column block blockIdx.x) of the suppression mask: thread t
// computes the word of row 64*rb + t, bit j set when IoU(row, column 64*cb + j) >= thr for a
// later column of the same segment. Lower-triangle tiles, (batched) tiles whose first
// column's label is above the last row's label (no same-label pair lies there) and (nms)
// tiles past the candidates are skipped; the greedy pass never reads them.
template <typename T, bool kBatched>
__global__ void __launch_bounds__(kMaskThreads)
    nms_mask_kernel(const T* __restrict__ sorted, const uint64_t* __restrict__ segment,
                    const uint8_t* __restrict__ cand, int64_t n, int64_t col_blocks, T thr,
                    uint64_t* __restrict__ mask) {
  const int64_t rb = blockIdx.y, cb = blockIdx.x;
  if (cb < rb) return;
  const int64_t row0 = rb * kMaskThreads, col0 = cb * kMaskThreads;
  const int rows = static_cast<int>(imin(kMaskThreads, n - row0));
  const int cols = static_cast<int>(imin(kMaskThreads, n - col0));
  if (kBatched && segment[col0] > segment[row0 + rows - 1]) return;
  // nms: candidates are a prefix of the order, and the greedy pass stops at the first
  // non-candidate, so a tile whose first row or first column is not a candidate is unused.
  if (!kBatched && (!cand[row0] || !cand[col0])) return;
  __shared__ T cx1[kMaskThreads], cy1[kMaskThreads], cx2[kMaskThreads], cy2[kMaskThreads],
      carea[kMaskThreads];
  __shared__ uint64_t cseg[kMaskThreads];
  const int t = threadIdx.x;
  if (t < cols) {
    const T* r = sorted + 4 * (col0 + t);
    cx1[t] = r[0], cy1[t] = r[1], cx2[t] = r[2], cy2[t] = r[3];
    carea[t] = box_area(r[0], r[1], r[2], r[3]);
    if (kBatched) cseg[t] = segment[col0 + t];
  }
  __syncthreads();
  if (t >= rows) return;
  const int64_t row = row0 + t;
  const T* r = sorted + 4 * row;
  const T ax1 = r[0], ay1 = r[1], ax2 = r[2], ay2 = r[3];
  const T area_a = box_area(ax1, ay1, ax2, ay2);
  const uint64_t seg = kBatched ? segment[row] : 0;
  uint64_t bits = 0;
  // Only later columns: on the diagonal tile that is j > t.
  for (int j = rb == cb ? t + 1 : 0; j < cols; ++j) {
    if (kBatched && cseg[j] != seg) continue;
    const T iou = pair_iou(ax1, ay1, ax2, ay2, area_a, cx1[j], cy1[j], cx2[j], cy2[j], carea[j]);
    if (iou >= thr) bits |= uint64_t(1) << j;
  }
  mask[row * col_blocks + cb] = bits;
}

// The greedy pass over one segment [s, e) of the processing order, by the whole block.
// removed: shared bitset over words [s/64, (e-1)/64]. Writes kept indices (keep_out, in
// order, nms) or marks them (kept_by_index, batched); returns the number kept.
__device__ int64_t greedy_segment(const uint64_t* __restrict__ mask, int64_t col_blocks,
                                  const uint8_t* __restrict__ cand,
                                  const int64_t* __restrict__ order,
                                  int64_t s, int64_t e, int64_t limit, int64_t* keep_out,
                                  uint8_t* kept_by_index, uint64_t* removed) {
  __shared__ uint64_t diag[kMaskThreads];
  __shared__ int64_t diag_order[kMaskThreads];
  __shared__ uint8_t diag_cand[kMaskThreads];
  __shared__ uint64_t keep_bits;
  __shared__ int64_t kept;
  __shared__ int done;
  const int t = threadIdx.x;
  const int64_t w0 = s / kMaskThreads, w1 = (e - 1) / kMaskThreads;
  for (int64_t k = t; k <= w1 - w0; k += blockDim.x) removed[k] = 0;
  if (t == 0) {
    kept = 0;
    done = 0;
  }
  __syncthreads();
  for (int64_t w = w0; w <= w1; ++w) {
    const int64_t base = w * kMaskThreads;
    const int64_t rlo = s > base ? s : base;
    const int64_t rhi = e < base + kMaskThreads ? e : base + kMaskThreads;
    // Stage the block's diagonal words (of candidate rows only: other tiles may be unwritten).
    for (int64_t r = rlo + t; r < rhi; r += blockDim.x) {
      const int b = static_cast<int>(r - base);
      const bool c = cand[r] != 0;
      diag_cand[b] = c;
      diag_order[b] = order[r];
      diag[b] = c ? mask[r * col_blocks + w] : 0;
    }
    __syncthreads();
    if (t == 0) {
      uint64_t rem = removed[w - w0], bits = 0;
      int64_t count = kept;
      for (int64_t r = rlo; r < rhi; ++r) {
        const int b = static_cast<int>(r - base);
        // Candidates come first in every segment: the first non-candidate ends it.
        if (!diag_cand[b] || count >= limit) {
          done = 1;
          break;
        }
        if ((rem >> b) & 1) continue;
        bits |= uint64_t(1) << b;
        rem |= diag[b];
        if (keep_out) keep_out[count] = diag_order[b];
        if (kept_by_index) kept_by_index[diag_order[b]] = 1;
        ++count;
      }
      if (count >= limit) done = 1;
      keep_bits = bits;
      kept = count;
    }
    __syncthreads();
    const uint64_t bits = keep_bits;
    const bool stop = done != 0;
    if (!stop && bits != 0) {
      // Later words: each thread ORs the kept rows' words of its columns (coalesced).
      for (int64_t k = w + 1 + t; k <= w1; k += blockDim.x) {
        uint64_t acc = 0;
        for (uint64_t rest = bits; rest != 0; rest &= rest - 1) {
          const int b = __ffsll(static_cast<long long>(rest)) - 1;
          acc |= mask[(base + b) * col_blocks + k];
        }
        removed[k - w0] |= acc;
      }
    }
    __syncthreads();
    if (stop) break;
  }
  return kept;
}

// Block x handles the segments that start in rows [64x, 64x + 64) (nms: one segment, block 0;
// it always writes *count_out).
template <bool kBatched>
__global__ void __launch_bounds__(kGreedyThreads)
    nms_greedy_kernel(const uint64_t* __restrict__ mask, int64_t n, int64_t col_blocks,
                      const uint64_t* __restrict__ segment, const uint8_t* __restrict__ cand,
                      const int64_t* __restrict__ order, int64_t limit, int64_t* keep_out,
                      long long* count_out, uint8_t* kept_by_index) {
  extern __shared__ uint64_t removed[];
  __shared__ long long seg_end;
  const int64_t first = blockIdx.x * int64_t(kMaskThreads);
  const int64_t last = imin(n, first + kMaskThreads);
  for (int64_t s = first; s < last; ++s) {
    if (kBatched ? (s > 0 && segment[s] == segment[s - 1]) : s > 0) continue;
    // A label's candidates come first in its run: the segment is that prefix, ending at the
    // first non-candidate or the next label. No candidate: nothing to keep.
    if (!cand[s]) {
      if (!kBatched && threadIdx.x == 0) *count_out = 0;
      continue;
    }
    if (threadIdx.x == 0) seg_end = n;
    __syncthreads();
    const uint64_t label = kBatched ? segment[s] : 0;
    constexpr int kPerThread = 8;  // positions each thread tests per round (coalesced)
    for (int64_t b = s + 1; b < n; b += int64_t(blockDim.x) * kPerThread) {
      for (int q = 0; q < kPerThread; ++q) {
        const int64_t r = b + q * int64_t(blockDim.x) + threadIdx.x;
        if (r < n && (!cand[r] || (kBatched && segment[r] != label))) {
          atomicMin(&seg_end, static_cast<long long>(r));
        }
      }
      __syncthreads();
      const bool found = seg_end < n;
      __syncthreads();  // every thread read seg_end before the next round may lower it
      if (found) break;
    }
    const int64_t e = seg_end;
    const int64_t kept =
        greedy_segment(mask, col_blocks, cand, order, s, e, limit, keep_out, kept_by_index,
                       removed);
    if (!kBatched && threadIdx.x == 0) *count_out = kept;
    __syncthreads();
  }
}

// batched: the kept indices in score order (score desc, index asc = the first sort's
// order), truncated at limit; one block, a block-wide scan per chunk.
__global__ void __launch_bounds__(kCompactThreads)
    compact_kept_kernel(const int64_t* __restrict__ score_order,
                        const uint8_t* __restrict__ kept_by_index, int64_t n, int64_t limit,
                        int64_t* __restrict__ keep_out, long long* count_out) {
  using Scan = cub::BlockScan<int, kCompactThreads>;
  __shared__ typename Scan::TempStorage temp;
  int64_t written = 0;
  for (int64_t base = 0; base < n && written < limit; base += kCompactThreads) {
    const int64_t k = base + threadIdx.x;
    const int64_t idx = k < n ? score_order[k] : 0;
    const int flag = k < n && kept_by_index[idx] ? 1 : 0;
    int pos = 0, total = 0;
    Scan(temp).ExclusiveSum(flag, pos, total);
    if (flag && written + pos < limit) keep_out[written + pos] = idx;
    written += total;
    __syncthreads();  // temp is reused by the next chunk
  }
  if (threadIdx.x == 0) *count_out = written < limit ? written : limit;
}

// Fixed-size results: on invalid input, count = -1 and every index -1 (no exception
// without a host sync).
__global__ void finalize_fixed_kernel(const long long* status, int64_t n, int64_t* keep,
                                      int64_t capacity, int64_t* count) {
  const bool bad = status[kBadBox] < n || status[kNanScore] < n;
  if (!bad) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *count = status[kCount];
    return;
  }
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < capacity;
       i += int64_t(gridDim.x) * blockDim.x) {
    keep[i] = -1;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) *count = -1;
}

// ---------------------------------------------------------------------------------------
// soft_nms
// ---------------------------------------------------------------------------------------

// Status words of a soft_nms call: first bad box row, first non-finite score, count kept.
enum SoftNmsStatus { kSoftBadBox = 0, kSoftBadScore = 1, kSoftCount = 2, kSoftStatusWords = 3 };
constexpr int kSoftNmsThreads = 1024;  // one block, a power of two

// The CPU's soft_nms_weight (nms_params.hpp), explicitly rounded.
__device__ __forceinline__ double soft_nms_weight(bool linear, double sigma, double iou) {
  if (linear) return __dsub_rn(1.0, iou);
  return exp(-__ddiv_rn(__dmul_rn(iou, iou), sigma));
}

// The whole greedy loop in one block: each step reduces the live boxes to the best (highest
// score, then lowest index -- the CPU's first maximum) in shared memory, then every thread
// rescores its strided share of the live boxes against it, in the CPU's arithmetic, and
// finds its share's best for the next step. Scores and live flags live in `score` / `live`
// (n each); keep / kept receive the result, status[kSoftCount] its length.
template <typename T>
__global__ void __launch_bounds__(kSoftNmsThreads)
soft_nms_kernel(const T* __restrict__ boxes, const T* __restrict__ scores, int64_t n,
                bool linear, double sigma, T iou_threshold, bool drop, T score_threshold,
                int64_t limit, T* __restrict__ score, uint8_t* __restrict__ live,
                int64_t* __restrict__ keep, T* __restrict__ kept, long long* status) {
  __shared__ T best_score[kSoftNmsThreads];
  __shared__ int64_t best_index[kSoftNmsThreads];
  const int tid = threadIdx.x, threads = blockDim.x;
  const T big = std::numeric_limits<T>::max();
  T my_score = T(0);
  int64_t my_index = -1;
  for (int64_t i = tid; i < n; i += threads) {
    if (row_is_bad(boxes + 4 * i, false)) atomicMin(status + kSoftBadBox, (long long)i);
    const T s = scores[i];
    if (!(fabs(s) <= big)) atomicMin(status + kSoftBadScore, (long long)i);
    score[i] = s;
    const bool alive = !drop || s >= score_threshold;
    live[i] = alive;
    if (alive && (my_index < 0 || s > my_score)) my_score = s, my_index = i;
  }
  __syncthreads();
  if (status[kSoftBadBox] < n || status[kSoftBadScore] < n) return;  // the host raises
  int64_t count = 0;
  while (true) {
    best_score[tid] = my_score;
    best_index[tid] = my_index;
    __syncthreads();
    for (int half = threads / 2; half > 0; half /= 2) {
      if (tid < half) {
        const T s = best_score[tid + half];
        const int64_t j = best_index[tid + half], i = best_index[tid];
        if (j >= 0 && (i < 0 || s > best_score[tid] || (s == best_score[tid] && j < i))) {
          best_score[tid] = s;
          best_index[tid] = j;
        }
      }
      __syncthreads();
    }
    const int64_t m = best_index[0];
    const T m_score = best_score[0];
    if (m < 0 || count >= limit) break;
    if (tid == 0) {
      keep[count] = m;
      kept[count] = m_score;
    }
    ++count;
    const T* b = boxes + 4 * m;
    const T area = box_area(b[0], b[1], b[2], b[3]);
    my_index = -1;
    for (int64_t j = tid; j < n; j += threads) {
      if (!live[j]) continue;
      if (j == m) {
        live[j] = 0;
        continue;
      }
      const T* c = boxes + 4 * j;
      const T o = pair_iou(b[0], b[1], b[2], b[3], area, c[0], c[1], c[2], c[3],
                           box_area(c[0], c[1], c[2], c[3]));
      T s = score[j];
      if (o > T(0) && (!linear || o >= iou_threshold)) {
        s = static_cast<T>(__dmul_rn(static_cast<double>(s),
                                     soft_nms_weight(linear, sigma, static_cast<double>(o))));
        score[j] = s;
      }
      if (drop && !(s >= score_threshold)) {
        live[j] = 0;
        continue;
      }
      if (my_index < 0 || s > my_score) my_score = s, my_index = j;
    }
    __syncthreads();  // everyone has read best_*[0] before the next step overwrites it
  }
  if (tid == 0) status[kSoftCount] = count;
}

}  // namespace fastconv::cuda
