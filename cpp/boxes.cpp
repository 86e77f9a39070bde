// Box IoU, format conversion, greedy non-max suppression and Soft-NMS.
//
// Every IoU is computed with one formula, in the box dtype and in one fixed order (see
// pair_iou), and the file is compiled with -ffp-contract=off: the NumPy reference performs
// the same IEEE operations, so a box exactly at the threshold is decided identically on both
// sides. Thresholds are rounded to the box dtype before any comparison for the same reason.
// NMS orders boxes by (score descending, index ascending) with a stable sort and the greedy
// pass is sequential per label, so results never depend on the thread count.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/box_format.hpp"
#include "fastconv/check.hpp"
#include "fastconv/box_sweeps.hpp"
#include "fastconv/nms_params.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

using Index = std::vector<int64_t>;

template <typename T>
const BoxSweepFns<T>& selected_sweeps() {
  static const BoxSweeps& sweeps = for_cpu_path(avx512::box_sweeps, avx2::box_sweeps,
                                                baseline::box_sweeps)();
  return of_dtype<T>(sweeps);
}

// (N, 4) with N >= 0; returns N.
int64_t check_boxes_shape(const char* op, const py::array& boxes, const char* name) {
  FC_CHECK(boxes.ndim() == 2 && boxes.shape(1) == 4, op, ": ", name,
           " must have shape (N, 4), got shape ", tuple_str(shape_of(boxes)));
  return boxes.shape(0);
}

// One branch-free pass that vectorizes: true when every coordinate is finite and every
// row is ordered (x1 <= x2, y1 <= y2) or, with `sizes`, has non-negative width and height.
// Valid input, the common case, costs one scan; the slow loops below only name the row.
template <typename T>
bool all_rows_valid(const T* b, int64_t n, bool sizes) {
  const T big = std::numeric_limits<T>::max();
  int bad = 0;
#pragma omp parallel for simd reduction(| : bad) if (n > (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) {
    const T* r = b + 4 * i;
    const bool finite = (std::abs(r[0]) <= big) & (std::abs(r[1]) <= big) &
                        (std::abs(r[2]) <= big) & (std::abs(r[3]) <= big);
    const bool shaped = sizes ? (r[2] >= T(0)) & (r[3] >= T(0)) : (r[0] <= r[2]) & (r[1] <= r[3]);
    bad |= !(finite & shaped);
  }
  return !bad;
}

// Coordinates finite and x1 <= x2, y1 <= y2; names the first bad row.
template <typename T>
void check_boxes_values(const char* op, const T* b, int64_t n, const char* name) {
  if (all_rows_valid(b, n, false)) return;
  for (int64_t i = 0; i < n; ++i) {
    const T* r = b + 4 * i;
    const bool finite = std::isfinite(r[0]) && std::isfinite(r[1]) && std::isfinite(r[2]) &&
                        std::isfinite(r[3]);
    FC_CHECK(finite, op, ": ", name, " has a non-finite coordinate in row ", i, ": [", r[0], ", ",
             r[1], ", ", r[2], ", ", r[3], "]");
    FC_CHECK(r[0] <= r[2] && r[1] <= r[3], op, ": ", name, " row ", i, " is inverted (need x1 <= x2"
             " and y1 <= y2): [", r[0], ", ", r[1], ", ", r[2], ", ", r[3], "]");
  }
}

template <typename T>
void check_scores_values(const char* op, const T* s, int64_t n, bool finite = false) {
  for (int64_t i = 0; i < n; ++i) {
    FC_CHECK(!std::isnan(s[i]), op, ": scores has NaN at index ", i);
    FC_CHECK(!finite || std::isfinite(s[i]), op, ": scores has a non-finite value (", s[i],
             ") at index ", i);
  }
}

void check_lengths(const char* op, const py::array& boxes, const py::array& other,
                   const char* name) {
  FC_CHECK(other.ndim() == 1 && other.shape(0) == boxes.shape(0), op, ": ", name, " shape ",
           tuple_str(shape_of(other)), " must be (N,) for boxes shape ",
           tuple_str(shape_of(boxes)));
}

// ---------------------------------------------------------------------------------------
// box_iou
// ---------------------------------------------------------------------------------------

void box_iou_py(const py::array& a, const py::array& b, py::array& out) {
  const int64_t n = check_boxes_shape("box_iou", a, "a");
  const int64_t m = check_boxes_shape("box_iou", b, "b");
  check_shape(out, {n, m}, "out");
  dispatch_float(float_dtype(a, "a"), [&](auto zero) {
    using T = decltype(zero);
    const T* pa = input_ptr<T>(a, "a");
    const T* pb = input_ptr<T>(b, "b");
    T* po = output_ptr<T>(out, "out");
    check_boxes_values("box_iou", pa, n, "a");
    check_boxes_values("box_iou", pb, m, "b");
    py::gil_scoped_release release;
    // b transposed to structure-of-arrays once, so each row of the output is one
    // vectorizable sweep.
    std::vector<T> bx1(m), by1(m), bx2(m), by2(m), barea(m);
    for (int64_t j = 0; j < m; ++j) {
      const T* r = pb + 4 * j;
      bx1[j] = r[0], by1[j] = r[1], bx2[j] = r[2], by2[j] = r[3];
      barea[j] = box_area(r[0], r[1], r[2], r[3]);
    }
    const T *X1 = bx1.data(), *Y1 = by1.data(), *X2 = bx2.data(), *Y2 = by2.data(),
            *AR = barea.data();
    const BoxSweepFns<T>& sweeps = selected_sweeps<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* r = pa + 4 * i;
      const Box<T> box{r[0], r[1], r[2], r[3], box_area(r[0], r[1], r[2], r[3])};
      sweeps.iou_row(box, X1, Y1, X2, Y2, AR, m, po + i * m);
    }
  });
}

// ---------------------------------------------------------------------------------------
// box_convert
// ---------------------------------------------------------------------------------------

// Every conversion goes through xyxy with these formulas; the reference uses the same ones.
template <typename T>
void to_xyxy(Fmt f, const T* in, T* out) {
  const T a = in[0], b = in[1], c = in[2], d = in[3];
  switch (f) {
    case Fmt::kXyxy:
      out[0] = a, out[1] = b, out[2] = c, out[3] = d;
      break;
    case Fmt::kXywh:
      out[0] = a, out[1] = b, out[2] = a + c, out[3] = b + d;
      break;
    case Fmt::kCxcywh:
      out[0] = a - T(0.5) * c, out[1] = b - T(0.5) * d;
      out[2] = a + T(0.5) * c, out[3] = b + T(0.5) * d;
      break;
  }
}

template <typename T>
void from_xyxy(Fmt f, const T* in, T* out) {
  const T x1 = in[0], y1 = in[1], x2 = in[2], y2 = in[3];
  switch (f) {
    case Fmt::kXyxy:
      out[0] = x1, out[1] = y1, out[2] = x2, out[3] = y2;
      break;
    case Fmt::kXywh:
      out[0] = x1, out[1] = y1, out[2] = x2 - x1, out[3] = y2 - y1;
      break;
    case Fmt::kCxcywh:
      out[0] = (x1 + x2) * T(0.5), out[1] = (y1 + y2) * T(0.5);
      out[2] = x2 - x1, out[3] = y2 - y1;
      break;
  }
}

template <typename T>
void check_convert_input(Fmt f, const T* b, int64_t n) {
  if (f == Fmt::kXyxy) {
    check_boxes_values("box_convert", b, n, "boxes");
    return;
  }
  if (all_rows_valid(b, n, true)) return;
  for (int64_t i = 0; i < n; ++i) {
    const T* r = b + 4 * i;
    const bool finite = std::isfinite(r[0]) && std::isfinite(r[1]) && std::isfinite(r[2]) &&
                        std::isfinite(r[3]);
    FC_CHECK(finite, "box_convert: boxes has a non-finite value in row ", i, ": [", r[0], ", ",
             r[1], ", ", r[2], ", ", r[3], "]");
    FC_CHECK(r[2] >= T(0) && r[3] >= T(0), "box_convert: boxes row ", i,
             " has a negative width or height (", fmt_name(f), "): [", r[0], ", ", r[1], ", ",
             r[2], ", ", r[3], "]");
  }
}

// The formats are template arguments so the per-row switches fold away and the loop
// vectorizes.
template <typename T, Fmt In, Fmt Out>
void convert_rows_as(const T* src, T* dst, int64_t n) {
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) {
    T xyxy[4];
    to_xyxy(In, src + 4 * i, xyxy);
    from_xyxy(Out, xyxy, dst + 4 * i);
  }
}

template <typename T, Fmt In>
void convert_rows_from(Fmt out, const T* src, T* dst, int64_t n) {
  switch (out) {
    case Fmt::kXyxy: return convert_rows_as<T, In, Fmt::kXyxy>(src, dst, n);
    case Fmt::kXywh: return convert_rows_as<T, In, Fmt::kXywh>(src, dst, n);
    case Fmt::kCxcywh: return convert_rows_as<T, In, Fmt::kCxcywh>(src, dst, n);
  }
}

template <typename T>
void convert_rows(Fmt in, Fmt out, const T* src, T* dst, int64_t n) {
  switch (in) {
    case Fmt::kXyxy: return convert_rows_from<T, Fmt::kXyxy>(out, src, dst, n);
    case Fmt::kXywh: return convert_rows_from<T, Fmt::kXywh>(out, src, dst, n);
    case Fmt::kCxcywh: return convert_rows_from<T, Fmt::kCxcywh>(out, src, dst, n);
  }
}

void box_convert_py(const py::array& boxes, py::array& out, const std::string& in_fmt,
                    const std::string& out_fmt) {
  const Fmt fi = parse_fmt(in_fmt, "in_fmt"), fo = parse_fmt(out_fmt, "out_fmt");
  const int64_t n = check_boxes_shape("box_convert", boxes, "boxes");
  check_shape(out, {n, 4}, "out");
  dispatch_float(float_dtype(boxes, "boxes"), [&](auto zero) {
    using T = decltype(zero);
    const T* src = input_ptr<T>(boxes, "boxes");
    T* dst = output_ptr<T>(out, "out");
    check_convert_input(fi, src, n);
    py::gil_scoped_release release;
    convert_rows(fi, fo, src, dst, n);
  });
}

// ---------------------------------------------------------------------------------------
// nms / batched_nms
// ---------------------------------------------------------------------------------------

// Box coordinates gathered in processing order (structure of arrays), so the inner
// suppression loop reads contiguous memory. The greedy pass compacts these arrays in place
// per label range, hence mutable; pos maps an entry back to its position in the order.
template <typename T>
struct SortedBoxes {
  std::vector<T> x1, y1, x2, y2, area;
  Index pos;
  std::vector<unsigned char> suppressed;
  explicit SortedBoxes(const T* b, const Index& order)
      : x1(order.size()), y1(order.size()), x2(order.size()), y2(order.size()),
        area(order.size()), pos(order.size()), suppressed(order.size(), 0) {
    for (size_t k = 0; k < order.size(); ++k) {
      const T* r = b + 4 * order[k];
      x1[k] = r[0], y1[k] = r[1], x2[k] = r[2], y2[k] = r[3];
      area[k] = box_area(r[0], r[1], r[2], r[3]);
      pos[k] = static_cast<int64_t>(k);
    }
  }
};

// Greedy pass over entries [begin, end) of s; sets kept[pos] = 1 for each kept box and
// stops after `limit`. Suppressed entries are squeezed out of the tail once they make up
// half of it, so later sweeps only touch live boxes (clustered inputs shrink quickly) while
// inputs with few overlaps are not copied over and over.
template <typename T>
void greedy(SortedBoxes<T>& s, int64_t begin, int64_t end, T thr, int64_t limit,
            unsigned char* kept) {
  T *X1 = s.x1.data() + begin, *Y1 = s.y1.data() + begin, *X2 = s.x2.data() + begin,
    *Y2 = s.y2.data() + begin, *AR = s.area.data() + begin;
  int64_t* pos = s.pos.data() + begin;
  unsigned char* sup = s.suppressed.data() + begin;
  int64_t len = end - begin, count = 0, dead = 0;  // dead: suppressed entries after i
  const BoxSweepFns<T>& sweeps = selected_sweeps<T>();
  for (int64_t i = 0; i < len && count < limit; ++i) {
    if (sup[i]) {
      --dead;
      continue;
    }
    kept[pos[i]] = 1;
    ++count;
    const Box<T> box{X1[i], Y1[i], X2[i], Y2[i], AR[i]};
    dead += sweeps.suppress(box, X1, Y1, X2, Y2, AR, thr, i + 1, len, sup);
    if (dead > 32 && 2 * dead > len - i - 1) {
      int64_t w = i + 1;
      for (int64_t j = i + 1; j < len; ++j) {
        if (sup[j]) continue;
        X1[w] = X1[j], Y1[w] = Y1[j], X2[w] = X2[j], Y2[w] = Y2[j], AR[w] = AR[j];
        pos[w] = pos[j], sup[w] = 0;
        ++w;
      }
      len = w;
      dead = 0;
    }
  }
}

// Indices passing the score threshold, in ascending index order.
template <typename T>
Index candidates(const T* scores, int64_t n, const NmsParams& p) {
  Index idx;
  idx.reserve(n);
  if (p.score_threshold) {
    const T st = static_cast<T>(*p.score_threshold);
    for (int64_t i = 0; i < n; ++i)
      if (!(scores[i] <= st)) idx.push_back(i);
  } else {
    idx.resize(n);
    std::iota(idx.begin(), idx.end(), int64_t(0));
  }
  return idx;
}

py::array_t<int64_t> to_array(const Index& v) {
  py::array_t<int64_t> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

template <typename T>
Index nms_impl(const T* boxes, const T* scores, int64_t n, const NmsParams& p) {
  Index order = candidates(scores, n, p);
  // Stable on an ascending index list: equal scores keep the lower index first.
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  const int64_t m = static_cast<int64_t>(order.size());
  const int64_t limit = p.max_output ? *p.max_output : m;
  SortedBoxes<T> s(boxes, order);
  std::vector<unsigned char> kept(m, 0);
  greedy(s, 0, m, static_cast<T>(p.iou_threshold), limit, kept.data());
  Index result;
  for (int64_t k = 0; k < m; ++k)
    if (kept[k]) result.push_back(order[k]);
  return result;
}

template <typename T>
Index batched_nms_impl(const T* boxes, const T* scores, const int64_t* labels, int64_t n,
                       const NmsParams& p) {
  Index order = candidates(scores, n, p);
  // Groups labels into contiguous runs, each already in the greedy order of plain nms.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (labels[a] != labels[b]) return labels[a] < labels[b];
    return scores[a] > scores[b];
  });
  const int64_t m = static_cast<int64_t>(order.size());
  const int64_t limit = p.max_output ? *p.max_output : m;
  Index starts;
  for (int64_t k = 0; k < m; ++k)
    if (k == 0 || labels[order[k]] != labels[order[k - 1]]) starts.push_back(k);
  starts.push_back(m);
  const int64_t groups = static_cast<int64_t>(starts.size()) - 1;
  SortedBoxes<T> s(boxes, order);
  std::vector<unsigned char> kept(m, 0);
  const T thr = static_cast<T>(p.iou_threshold);
  // Labels are independent and own disjoint position ranges; dynamic scheduling only
  // balances uneven group sizes and cannot change the result.
#pragma omp parallel for schedule(dynamic, 1) if (groups > 1 && m > 256)
  for (int64_t g = 0; g < groups; ++g) {
    greedy(s, starts[g], starts[g + 1], thr, limit, kept.data());
  }
  Index result;
  for (int64_t k = 0; k < m; ++k)
    if (kept[k]) result.push_back(order[k]);
  // Indices are unique, so this is a total order and the merge is deterministic.
  std::sort(result.begin(), result.end(), [&](int64_t a, int64_t b) {
    if (scores[a] != scores[b]) return scores[a] > scores[b];
    return a < b;
  });
  if (static_cast<int64_t>(result.size()) > limit) result.resize(limit);
  return result;
}

// nms and batched_nms share their argument checks; labels == nullptr means one label.
py::array_t<int64_t> run_nms(const char* op, const py::array& boxes, const py::array& scores,
                             const py::array* labels, const NmsParams& p) {
  check_nms_params(op, p);
  const int64_t n = check_boxes_shape(op, boxes, "boxes");
  check_lengths(op, boxes, scores, "scores");
  const int64_t* lab = nullptr;
  if (labels) {
    check_lengths(op, boxes, *labels, "labels");
    if (!labels->dtype().is(py::dtype::of<int64_t>())) {
      throw py::type_error(concat(op, ": labels must have dtype int64, got ",
                                  dtype_name(*labels)));
    }
    FC_CHECK(labels->flags() & py::array::c_style, op, ": labels must be C-contiguous");
    lab = static_cast<const int64_t*>(labels->data());
  }
  return dispatch_float(float_dtype(boxes, "boxes"), [&](auto zero) {
    using T = decltype(zero);
    const T* b = input_ptr<T>(boxes, "boxes");
    const T* s = input_ptr<T>(scores, "scores");
    check_boxes_values(op, b, n, "boxes");
    check_scores_values(op, s, n);
    Index result;
    {
      py::gil_scoped_release release;
      result = lab ? batched_nms_impl(b, s, lab, n, p) : nms_impl(b, s, n, p);
    }
    return to_array(result);
  });
}

py::array_t<int64_t> nms_py(const py::array& boxes, const py::array& scores, double iou_threshold,
                            std::optional<double> score_threshold,
                            std::optional<int64_t> max_output) {
  return run_nms("nms", boxes, scores, nullptr,
                 NmsParams{iou_threshold, score_threshold, max_output});
}

py::array_t<int64_t> batched_nms_py(const py::array& boxes, const py::array& scores,
                                    const py::array& labels, double iou_threshold,
                                    std::optional<double> score_threshold,
                                    std::optional<int64_t> max_output) {
  return run_nms("batched_nms", boxes, scores, &labels,
                 NmsParams{iou_threshold, score_threshold, max_output});
}

// ---------------------------------------------------------------------------------------
// soft_nms
// ---------------------------------------------------------------------------------------

// The rescoring weight of a box at `iou` with the kept one (see nms_params.hpp).
double soft_nms_weight(const SoftNmsParams& p, double iou) {
  if (p.method == SoftNmsMethod::kLinear) return 1.0 - iou;
  return std::exp(-(iou * iou) / p.sigma);
}

// The live boxes in increasing index order (structure of arrays, compacted in place), so
// the first maximum of a sweep is the lowest index among equal scores. Each step keeps the
// best box, rescores and compacts the rest in one pass that also finds the next best.
template <typename T>
void soft_nms_impl(const T* boxes, const T* scores, int64_t n, const SoftNmsParams& p,
                   Index& keep, std::vector<T>& kept) {
  const bool drop = p.score_threshold.has_value();
  const T st = drop ? static_cast<T>(*p.score_threshold) : T(0);
  const T thr = static_cast<T>(p.iou_threshold);
  const bool linear = p.method == SoftNmsMethod::kLinear;
  Index order;
  for (int64_t i = 0; i < n; ++i)
    if (!drop || scores[i] >= st) order.push_back(i);
  SortedBoxes<T> s(boxes, order);
  std::vector<T> score(order.size()), iou(order.size());
  int64_t len = static_cast<int64_t>(order.size()), best = -1;
  for (int64_t j = 0; j < len; ++j) {
    score[j] = scores[order[j]];
    if (best < 0 || score[j] > score[best]) best = j;
  }
  const int64_t limit = p.max_output ? *p.max_output : len;
  const BoxSweepFns<T>& sweeps = selected_sweeps<T>();
  T *X1 = s.x1.data(), *Y1 = s.y1.data(), *X2 = s.x2.data(), *Y2 = s.y2.data(),
    *AR = s.area.data(), *S = score.data();
  int64_t* pos = s.pos.data();
  while (len > 0 && static_cast<int64_t>(keep.size()) < limit) {
    const int64_t m = best;
    keep.push_back(order[pos[m]]);
    kept.push_back(S[m]);
    const Box<T> box{X1[m], Y1[m], X2[m], Y2[m], AR[m]};
    sweeps.iou_row(box, X1, Y1, X2, Y2, AR, len, iou.data());
    int64_t w = 0;
    best = -1;
    for (int64_t j = 0; j < len; ++j) {
      if (j == m) continue;
      T sj = S[j];
      const T o = iou[j];
      if (o > T(0) && (!linear || o >= thr)) {
        sj = static_cast<T>(static_cast<double>(sj) * soft_nms_weight(p, static_cast<double>(o)));
      }
      if (drop && !(sj >= st)) continue;
      X1[w] = X1[j], Y1[w] = Y1[j], X2[w] = X2[j], Y2[w] = Y2[j], AR[w] = AR[j];
      pos[w] = pos[j], S[w] = sj;
      if (best < 0 || sj > S[best]) best = w;
      ++w;
    }
    len = w;
  }
}

py::tuple soft_nms_py(const py::array& boxes, const py::array& scores, double sigma,
                      const std::string& method, double iou_threshold,
                      std::optional<double> score_threshold, std::optional<int64_t> max_output) {
  const char* op = "soft_nms";
  const SoftNmsParams p{parse_soft_nms_method(method), sigma, iou_threshold, score_threshold,
                        max_output};
  check_soft_nms_params(p);
  const int64_t n = check_boxes_shape(op, boxes, "boxes");
  check_lengths(op, boxes, scores, "scores");
  return dispatch_float(float_dtype(boxes, "boxes"), [&](auto zero) {
    using T = decltype(zero);
    const T* b = input_ptr<T>(boxes, "boxes");
    const T* s = input_ptr<T>(scores, "scores");
    check_boxes_values(op, b, n, "boxes");
    check_scores_values(op, s, n, true);
    Index keep;
    std::vector<T> kept;
    {
      py::gil_scoped_release release;
      soft_nms_impl(b, s, n, p, keep, kept);
    }
    py::array_t<T> rescored(static_cast<py::ssize_t>(kept.size()));
    std::copy(kept.begin(), kept.end(), rescored.mutable_data());
    return py::tuple(py::make_tuple(to_array(keep), rescored));
  });
}

}  // namespace

void bind_boxes(py::module_& m) {
  m.def("box_iou", &box_iou_py, py::arg("a"), py::arg("b"), py::arg("out"),
        "out (N, M) <- IoU of boxes a (N, 4) and b (M, 4), xyxy.");
  m.def("box_convert", &box_convert_py, py::arg("boxes"), py::arg("out"), py::arg("in_fmt"),
        py::arg("out_fmt"), "out (N, 4) <- boxes (N, 4) converted from in_fmt to out_fmt.");
  m.def("nms", &nms_py, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"),
        py::arg("score_threshold") = py::none(), py::arg("max_output") = py::none(),
        "Greedy non-max suppression; int64 indices by decreasing score.");
  m.def("batched_nms", &batched_nms_py, py::arg("boxes"), py::arg("scores"), py::arg("labels"),
        py::arg("iou_threshold"), py::arg("score_threshold") = py::none(),
        py::arg("max_output") = py::none(),
        "Non-max suppression per label (int64 labels); int64 indices by decreasing score.");
  m.def("soft_nms", &soft_nms_py, py::arg("boxes"), py::arg("scores"), py::arg("sigma"),
        py::arg("method"), py::arg("iou_threshold"), py::arg("score_threshold") = py::none(),
        py::arg("max_output") = py::none(),
        "Soft-NMS (linear or gaussian); (int64 indices, rescored scores) by decreasing "
        "rescored score.");
}

}  // namespace fastconv
