// CUDA box IoU, format conversion and non-max suppression: argument checks with the CPU's
// messages, launches on the caller's stream, and the status read-backs (see
// fastconv_cuda/boxes_kernels.cuh for the kernels, their arithmetic and the NMS pipeline).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "fastconv/box_format.hpp"
#include "fastconv/geometry.hpp"
#include "fastconv/nms_params.hpp"
#include "fastconv_cuda/binding.hpp"
#include "fastconv_cuda/boxes_kernels.cuh"
#include "fastconv_cuda/launch.cuh"
#include "radix_sort.cuh"

namespace fastconv::cuda {

namespace {

// Copies `count` int64 status words to the host; the op's one synchronization.
void read_status(const long long* dev, long long* host, int count, cudaStream_t stream) {
  py::gil_scoped_release release;
  FC_CUDA_CHECK(cudaMemcpyAsync(host, dev, count * sizeof(long long), cudaMemcpyDeviceToHost,
                                stream));
  FC_CUDA_CHECK(cudaStreamSynchronize(stream));
}

template <typename T>
void read_row(const T* b, int64_t row, T* host, cudaStream_t stream) {
  FC_CUDA_CHECK(cudaMemcpyAsync(host, b + 4 * row, 4 * sizeof(T), cudaMemcpyDeviceToHost,
                                stream));
  FC_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// The CPU's check_boxes_values message for the first bad row (finite checked first).
template <typename T>
[[noreturn]] void raise_box_row(const char* op, const char* name, const T* b, int64_t row,
                                cudaStream_t stream) {
  T r[4];
  read_row(b, row, r, stream);
  const bool finite =
      std::isfinite(r[0]) && std::isfinite(r[1]) && std::isfinite(r[2]) && std::isfinite(r[3]);
  FC_CHECK(finite, op, ": ", name, " has a non-finite coordinate in row ", row, ": [", r[0],
           ", ", r[1], ", ", r[2], ", ", r[3], "]");
  FC_CHECK(false, op, ": ", name, " row ", row, " is inverted (need x1 <= x2 and y1 <= y2): [",
           r[0], ", ", r[1], ", ", r[2], ", ", r[3], "]");
  throw std::logic_error("unreachable");
}

int64_t check_boxes_shape(const char* op, const DeviceArray& boxes, const char* name) {
  FC_CHECK(boxes.shape.size() == 2 && boxes.shape[1] == 4, op, ": ", name,
           " must have shape (N, 4), got shape ", tuple_str(boxes.shape));
  return boxes.shape[0];
}

void check_lengths(const char* op, const DeviceArray& boxes, const DeviceArray& other,
                   const char* name) {
  FC_CHECK(other.shape.size() == 1 && other.shape[0] == boxes.shape[0], op, ": ", name,
           " shape ", tuple_str(other.shape), " must be (N,) for boxes shape ",
           tuple_str(boxes.shape));
}

void box_iou_cuda(py::handle a, py::handle b, py::handle out, py::object alloc,
                  uintptr_t stream_handle) {
  const DeviceArray aa = device_array(a, "a"), ba = device_array(b, "b"),
                    oa = device_array(out, "out");
  const int64_t n = check_boxes_shape("box_iou", aa, "a");
  const int64_t m = check_boxes_shape("box_iou", ba, "b");
  check_shape(oa, {n, m}, "out");
  const cudaStream_t stream = as_stream(stream_handle);
  dispatch_float(aa, "a", [&](auto zero) {
    using T = decltype(zero);
    const T* pa = input_ptr<T>(aa, "a");
    const T* pb = input_ptr<T>(ba, "b");
    T* po = output_ptr<T>(oa, "out");
    if (n == 0 && m == 0) return;
    Workspace ws(alloc);
    long long* bad = ws.get<long long>(2);
    StreamLauncher{stream, 32}(&fill_i64_kernel, 1, bad, 2,
                               std::numeric_limits<long long>::max());
    if (n > 0) {
      StreamLauncher{stream}(&find_bad_rows_kernel<T>, blocks_for(n), pa, n, false, bad);
    }
    if (m > 0) {
      StreamLauncher{stream}(&find_bad_rows_kernel<T>, blocks_for(m), pb, m, false, bad + 1);
    }
    if (n > 0 && m > 0) {
      const int64_t col_blocks = (m + kThreads - 1) / kThreads;
      FC_CHECK(col_blocks <= std::numeric_limits<int32_t>::max(), "box_iou: b has too many rows");
      // Enough row-blocks to fill the device several times over; each walks the rest.
      const int64_t want = std::max<int64_t>(1, 8192 / col_blocks);
      const dim3 grid(static_cast<unsigned>(col_blocks),
                      static_cast<unsigned>(std::min<int64_t>({n, want, 65535})));
      StreamLauncher{stream}(&box_iou_kernel<T>, grid, pa, pb, n, m, po);
    }
    long long host[2];
    read_status(bad, host, 2, stream);
    if (host[0] < n) raise_box_row("box_iou", "a", pa, host[0], stream);
    if (host[1] < m) raise_box_row("box_iou", "b", pb, host[1], stream);
  });
}

void box_convert_cuda(py::handle boxes, py::handle out, const std::string& in_fmt,
                      const std::string& out_fmt, py::object alloc, uintptr_t stream_handle) {
  const Fmt fi = parse_fmt(in_fmt, "in_fmt"), fo = parse_fmt(out_fmt, "out_fmt");
  const DeviceArray ba = device_array(boxes, "boxes"), oa = device_array(out, "out");
  const int64_t n = check_boxes_shape("box_convert", ba, "boxes");
  check_shape(oa, {n, 4}, "out");
  const cudaStream_t stream = as_stream(stream_handle);
  dispatch_float(ba, "boxes", [&](auto zero) {
    using T = decltype(zero);
    const T* src = input_ptr<T>(ba, "boxes");
    T* dst = output_ptr<T>(oa, "out");
    if (n == 0) return;
    Workspace ws(alloc);
    long long* bad = ws.get<long long>(1);
    StreamLauncher{stream, 32}(&fill_i64_kernel, 1, bad, 1,
                               std::numeric_limits<long long>::max());
    const bool sizes = fi != Fmt::kXyxy;
    StreamLauncher{stream}(&find_bad_rows_kernel<T>, blocks_for(n), src, n, sizes, bad);
    StreamLauncher{stream}(&box_convert_kernel<T>, blocks_for(n), src, dst, n, fi, fo);
    long long first_bad = 0;
    read_status(bad, &first_bad, 1, stream);
    if (first_bad >= n) return;
    if (!sizes) raise_box_row("box_convert", "boxes", src, first_bad, stream);
    T r[4];
    read_row(src, first_bad, r, stream);
    const bool finite = std::isfinite(r[0]) && std::isfinite(r[1]) && std::isfinite(r[2]) &&
                        std::isfinite(r[3]);
    FC_CHECK(finite, "box_convert: boxes has a non-finite value in row ", first_bad, ": [", r[0],
             ", ", r[1], ", ", r[2], ", ", r[3], "]");
    FC_CHECK(false, "box_convert: boxes row ", first_bad, " has a negative width or height (",
             fmt_name(fi), "): [", r[0], ", ", r[1], ", ", r[2], ", ", r[3], "]");
  });
}

// Runs the whole pipeline on the stream; keep_out receives up to `limit` indices and
// status[kCount] their number. Nothing synchronizes.
template <typename T>
void nms_launch(Workspace& ws, const T* boxes, const T* scores, const int64_t* labels, int64_t n,
                const NmsParams& p, int64_t limit, int64_t* keep_out, long long* status,
                cudaStream_t stream) {
  const char* op = labels ? "batched_nms" : "nms";
  // status: bad box row and NaN score as "none" (max), count 0.
  StreamLauncher{stream, 32}(&fill_i64_kernel, 1, status, 2,
                             std::numeric_limits<long long>::max());
  StreamLauncher{stream, 32}(&fill_i64_kernel, 1, status + kCount, 1, 0);
  if (n == 0 || limit == 0) {
    // Nothing can be kept; the prepare kernel still validates boxes and scores.
    if (n > 0) {
      uint64_t* keys = ws.get<uint64_t>(n);
      int64_t* values = ws.get<int64_t>(n);
      uint8_t* cand = ws.get<uint8_t>(n);
      StreamLauncher{stream}(&nms_prepare_kernel<T>, blocks_for(n), boxes, scores, n, false,
                             T(0), keys, values, cand, status);
    }
    return;
  }
  // The mask's row blocks are a grid's y extent (<= 65535).
  const int64_t col_blocks = (n + kMaskThreads - 1) / kMaskThreads;
  FC_CHECK(col_blocks <= 65535, op, ": the CUDA kernel takes at most ", 65535 * kMaskThreads,
           " boxes, got ", n);
  const int64_t mask_words = checked_mul(n, col_blocks, "nms mask size");
  // The greedy pass keeps one segment's removed bitset in shared memory.
  const size_t removed_bytes = static_cast<size_t>(col_blocks + 1) * sizeof(uint64_t);
  int device = 0, optin = 0;
  FC_CUDA_CHECK(cudaGetDevice(&device));
  FC_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  FC_CHECK(removed_bytes + 2048 <= static_cast<size_t>(optin), op,
           ": too many boxes for the GPU kernel's shared-memory bitset: ", n);
  const auto greedy = labels ? &nms_greedy_kernel<true> : &nms_greedy_kernel<false>;
  if (removed_bytes > 32 * 1024) {
    FC_CUDA_CHECK(cudaFuncSetAttribute(greedy, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(removed_bytes)));
  }

  uint64_t* keys = ws.get<uint64_t>(2 * n);
  int64_t* values = ws.get<int64_t>(2 * n);
  uint8_t* cand = ws.get<uint8_t>(2 * n);
  uint8_t* sorted_cand = cand + n;
  const T st = p.score_threshold ? static_cast<T>(*p.score_threshold) : T(0);
  StreamLauncher{stream}(&nms_prepare_kernel<T>, blocks_for(n), boxes, scores, n,
                         p.score_threshold.has_value(), st, keys, values, cand, status);
  // Score descending, ties by lower index; non-candidates last.
  int64_t* score_order = values + n;
  stable_sort_pairs(ws, keys, keys + n, values, score_order, n, score_key_bits<T>(), stream);
  const int64_t* order = score_order;
  const uint64_t* segment = nullptr;
  if (labels) {
    uint64_t* lab_keys = ws.get<uint64_t>(2 * n);
    int64_t* lab_order = ws.get<int64_t>(n);
    StreamLauncher{stream}(&label_keys_kernel, blocks_for(n), labels, score_order, n,
                           lab_keys);
    stable_sort_pairs(ws, lab_keys, lab_keys + n, score_order, lab_order, n, 64, stream);
    order = lab_order;
    segment = lab_keys + n;
  }
  T* sorted = ws.get<T>(4 * n);
  StreamLauncher{stream}(&gather_sorted_kernel<T>, blocks_for(n), boxes, cand, order, n,
                         sorted, sorted_cand);

  uint64_t* mask = ws.get<uint64_t>(mask_words);
  const T thr = static_cast<T>(p.iou_threshold);
  const dim3 tiles(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
  if (labels) {
    StreamLauncher{stream, kMaskThreads}(&nms_mask_kernel<T, true>, tiles, sorted, segment,
                                         sorted_cand, n, col_blocks, thr, mask);
  } else {
    StreamLauncher{stream, kMaskThreads}(&nms_mask_kernel<T, false>, tiles, sorted, nullptr,
                                         sorted_cand, n, col_blocks, thr, mask);
  }

  if (!labels) {
    StreamLauncher{stream, kGreedyThreads, removed_bytes}(greedy, 1, mask, n, col_blocks,
                                                          nullptr, sorted_cand, order, limit,
                                                          keep_out, status + kCount, nullptr);
    return;
  }
  uint8_t* kept_by_index = ws.get<uint8_t>(n);
  FC_CUDA_CHECK(cudaMemsetAsync(kept_by_index, 0, static_cast<size_t>(n), stream));
  StreamLauncher{stream, kGreedyThreads, removed_bytes}(
      greedy, static_cast<unsigned>(col_blocks), mask, n, col_blocks, segment, sorted_cand, order,
      limit, nullptr, nullptr, kept_by_index);
  StreamLauncher{stream, kCompactThreads}(&compact_kept_kernel, 1, score_order, kept_by_index,
                                          n, limit, keep_out, status + kCount);
}

struct NmsArgs {
  DeviceArray boxes, scores;
  std::optional<DeviceArray> labels;
  int64_t n = 0;
};

NmsArgs nms_args(const char* op, py::handle boxes, py::handle scores,
                 std::optional<py::handle> labels, const NmsParams& p) {
  check_nms_params(op, p);
  NmsArgs a;
  a.boxes = device_array(boxes, "boxes");
  a.scores = device_array(scores, "scores");
  a.n = check_boxes_shape(op, a.boxes, "boxes");
  check_lengths(op, a.boxes, a.scores, "scores");
  if (labels) {
    a.labels = device_array(*labels, "labels");
    check_lengths(op, a.boxes, *a.labels, "labels");
    if (a.labels->type != ScalarType::kInt64) {
      throw py::type_error(concat(op, ": labels must have dtype int64, got ",
                                  a.labels->typestr));
    }
  }
  return a;
}

// Runs the NMS pipeline of `a` (its dtype's kernels) into keep_ptr, then
// then(boxes, status words on the device) while the temporary memory is still held.
template <typename Then>
void run_nms(const NmsArgs& a, const NmsParams& p, int64_t limit, int64_t* keep_ptr,
             py::object alloc, cudaStream_t stream, Then&& then) {
  dispatch_float(a.boxes, "boxes", [&](auto zero) {
    using T = decltype(zero);
    const T* b = input_ptr<T>(a.boxes, "boxes");
    const T* s = input_ptr<T>(a.scores, "scores");
    const int64_t* lab = a.labels ? static_cast<const int64_t*>(a.labels->data) : nullptr;
    Workspace ws(alloc);
    long long* dev_status = ws.get<long long>(kStatusWords);
    nms_launch<T>(ws, b, s, lab, a.n, p, limit, keep_ptr, dev_status, stream);
    then(b, dev_status);
  });
}

// The variable-length result: one device->host read of (validation flags, count).
py::object nms_result(const char* op, const NmsArgs& a, const NmsParams& p, py::object alloc,
                      uintptr_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t n = a.n;
  const int64_t limit = std::min<int64_t>(p.max_output.value_or(n), n);
  // The result array outlives the workspace: allocated apart, viewed as int64.
  py::object keep = alloc(std::max<int64_t>(1, limit) * int64_t(sizeof(int64_t)))
                        .attr("view")("int64");
  const DeviceArray keep_arr = device_array(keep, "keep");
  int64_t* keep_ptr = static_cast<int64_t*>(keep_arr.data);
  long long status[kStatusWords] = {};
  run_nms(a, p, limit, keep_ptr, alloc, stream, [&](const auto* b, long long* dev_status) {
    read_status(dev_status, status, kStatusWords, stream);
    if (status[kBadBox] < n) raise_box_row(op, "boxes", b, status[kBadBox], stream);
    FC_CHECK(status[kNanScore] >= n, op, ": scores has NaN at index ", status[kNanScore]);
  });
  return keep[py::slice(0, static_cast<py::ssize_t>(status[kCount]), 1)];
}

// The fixed-size result: keep (M,) int64 padded with -1 and count (1,) int64, both on the
// device; no synchronization.
void nms_fixed_result(const char* op, const NmsArgs& a, const NmsParams& p, py::handle keep,
                      py::handle count, py::object alloc, uintptr_t stream_handle) {
  FC_CHECK(p.max_output.has_value(), op, ": a fixed-size result needs max_output");
  const int64_t capacity = *p.max_output;
  const DeviceArray ka = device_array(keep, "keep"), ca = device_array(count, "count");
  check_shape(ka, {capacity}, "keep");
  check_shape(ca, {1}, "count");
  int64_t* keep_ptr = output_ptr<int64_t>(ka, "keep");
  int64_t* count_ptr = output_ptr<int64_t>(ca, "count");
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t n = a.n;
  const int64_t limit = std::min(capacity, n);
  if (capacity > 0) {
    // All ones: -1 in every slot not written below.
    FC_CUDA_CHECK(cudaMemsetAsync(keep_ptr, 0xff, static_cast<size_t>(capacity) * 8, stream));
  }
  run_nms(a, p, limit, keep_ptr, alloc, stream, [&](const auto*, long long* dev_status) {
    StreamLauncher{stream}(&finalize_fixed_kernel, blocks_for(std::max<int64_t>(1, capacity)),
                           dev_status, n, keep_ptr, capacity, count_ptr);
  });
}

py::object nms_cuda(py::handle boxes, py::handle scores, double iou_threshold,
                    std::optional<double> score_threshold, std::optional<int64_t> max_output,
                    py::object alloc, uintptr_t stream) {
  const NmsParams p{iou_threshold, score_threshold, max_output};
  return nms_result("nms", nms_args("nms", boxes, scores, std::nullopt, p), p, alloc, stream);
}

py::object batched_nms_cuda(py::handle boxes, py::handle scores, py::handle labels,
                            double iou_threshold, std::optional<double> score_threshold,
                            std::optional<int64_t> max_output, py::object alloc,
                            uintptr_t stream) {
  const NmsParams p{iou_threshold, score_threshold, max_output};
  return nms_result("batched_nms", nms_args("batched_nms", boxes, scores, labels, p), p, alloc,
                    stream);
}

void nms_fixed_cuda(py::handle boxes, py::handle scores, double iou_threshold,
                    std::optional<double> score_threshold, std::optional<int64_t> max_output,
                    py::handle keep, py::handle count, py::object alloc, uintptr_t stream) {
  const NmsParams p{iou_threshold, score_threshold, max_output};
  nms_fixed_result("nms", nms_args("nms", boxes, scores, std::nullopt, p), p, keep, count, alloc,
                   stream);
}

void batched_nms_fixed_cuda(py::handle boxes, py::handle scores, py::handle labels,
                            double iou_threshold, std::optional<double> score_threshold,
                            std::optional<int64_t> max_output, py::handle keep, py::handle count,
                            py::object alloc, uintptr_t stream) {
  const NmsParams p{iou_threshold, score_threshold, max_output};
  nms_fixed_result("batched_nms", nms_args("batched_nms", boxes, scores, labels, p), p, keep,
                   count, alloc, stream);
}

// Soft-NMS in one block (see soft_nms_kernel); one read of the status words, then the
// results, sliced to the count, as arrays of the caller's allocator.
py::tuple soft_nms_cuda(py::handle boxes, py::handle scores, double sigma,
                        const std::string& method, double iou_threshold,
                        std::optional<double> score_threshold, std::optional<int64_t> max_output,
                        py::object alloc, uintptr_t stream_handle) {
  const char* op = "soft_nms";
  const SoftNmsParams p{parse_soft_nms_method(method), sigma, iou_threshold, score_threshold,
                        max_output};
  check_soft_nms_params(p);
  const DeviceArray ba = device_array(boxes, "boxes"), sa = device_array(scores, "scores");
  const int64_t n = check_boxes_shape(op, ba, "boxes");
  check_lengths(op, ba, sa, "scores");
  const cudaStream_t stream = as_stream(stream_handle);
  return dispatch_float(ba, "boxes", [&](auto zero) {
    using T = decltype(zero);
    const T* b = input_ptr<T>(ba, "boxes");
    const T* s = input_ptr<T>(sa, "scores");
    const int64_t limit = std::min<int64_t>(p.max_output.value_or(n), n);
    const char* dtype = sizeof(T) == 4 ? "float32" : "float64";
    // The results outlive the workspace: allocated apart.
    py::object keep =
        alloc(std::max<int64_t>(1, n) * int64_t(sizeof(int64_t))).attr("view")("int64");
    py::object kept = alloc(std::max<int64_t>(1, n) * int64_t(sizeof(T))).attr("view")(dtype);
    long long status[kSoftStatusWords] = {0, 0, 0};
    if (n > 0) {
      Workspace ws(alloc);
      long long* dev = ws.get<long long>(kSoftStatusWords);
      T* work = ws.get<T>(n);
      uint8_t* live = ws.get<uint8_t>(n);
      StreamLauncher{stream, 32}(&fill_i64_kernel, 1, dev, 2,
                                 std::numeric_limits<long long>::max());
      StreamLauncher{stream, 32}(&fill_i64_kernel, 1, dev + kSoftCount, 1, 0);
      StreamLauncher{stream, kSoftNmsThreads}(
          &soft_nms_kernel<T>, 1, b, s, n, p.method == SoftNmsMethod::kLinear, p.sigma,
          static_cast<T>(p.iou_threshold), p.score_threshold.has_value(),
          static_cast<T>(p.score_threshold.value_or(0)), limit, work, live,
          static_cast<int64_t*>(device_array(keep, "keep").data),
          static_cast<T*>(device_array(kept, "kept").data), dev);
      read_status(dev, status, kSoftStatusWords, stream);
      if (status[kSoftBadBox] < n) raise_box_row(op, "boxes", b, status[kSoftBadBox], stream);
      if (status[kSoftBadScore] < n) {
        T v = 0;
        FC_CUDA_CHECK(cudaMemcpyAsync(&v, s + status[kSoftBadScore], sizeof v,
                                      cudaMemcpyDeviceToHost, stream));
        FC_CUDA_CHECK(cudaStreamSynchronize(stream));
        FC_CHECK(!std::isnan(v), op, ": scores has NaN at index ", status[kSoftBadScore]);
        FC_CHECK(false, op, ": scores has a non-finite value (", v, ") at index ",
                 status[kSoftBadScore]);
      }
    }
    const py::slice first(0, static_cast<py::ssize_t>(status[kSoftCount]), 1);
    return py::tuple(py::make_tuple(keep[first], kept[first]));
  });
}

}  // namespace

void bind_boxes(py::module_& m) {
  m.def("box_iou", &box_iou_cuda, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("alloc"),
        py::arg("stream"),
        "out (N, M) <- IoU of boxes a (N, 4) and b (M, 4), xyxy. Synchronizes the stream once "
        "(validation).");
  m.def("box_convert", &box_convert_cuda, py::arg("boxes"), py::arg("out"), py::arg("in_fmt"),
        py::arg("out_fmt"), py::arg("alloc"), py::arg("stream"),
        "out (N, 4) <- boxes (N, 4) converted from in_fmt to out_fmt. Synchronizes the stream "
        "once (validation).");
  m.def("nms", &nms_cuda, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"),
        py::arg("score_threshold").none(true), py::arg("max_output").none(true),
        py::arg("alloc"), py::arg("stream"),
        "Greedy non-max suppression on the GPU; int64 indices by decreasing score. Reads the "
        "result length (and the validation flags) back: one stream synchronization.");
  m.def("batched_nms", &batched_nms_cuda, py::arg("boxes"), py::arg("scores"),
        py::arg("labels"), py::arg("iou_threshold"), py::arg("score_threshold").none(true),
        py::arg("max_output").none(true), py::arg("alloc"), py::arg("stream"),
        "Non-max suppression per label (int64 labels) on the GPU; one stream synchronization.");
  m.def("nms_fixed", &nms_fixed_cuda, py::arg("boxes"), py::arg("scores"),
        py::arg("iou_threshold"), py::arg("score_threshold").none(true),
        py::arg("max_output").none(true), py::arg("keep"), py::arg("count"), py::arg("alloc"),
        py::arg("stream"),
        "nms into keep (max_output,) int64 (padded with -1) and count (1,) int64, without any "
        "synchronization; invalid input gives count -1.");
  m.def("batched_nms_fixed", &batched_nms_fixed_cuda, py::arg("boxes"), py::arg("scores"),
        py::arg("labels"), py::arg("iou_threshold"), py::arg("score_threshold").none(true),
        py::arg("max_output").none(true), py::arg("keep"), py::arg("count"), py::arg("alloc"),
        py::arg("stream"), "batched_nms into fixed-size device arrays; see nms_fixed.");
  m.def("soft_nms", &soft_nms_cuda, py::arg("boxes"), py::arg("scores"), py::arg("sigma"),
        py::arg("method"), py::arg("iou_threshold"), py::arg("score_threshold").none(true),
        py::arg("max_output").none(true), py::arg("alloc"), py::arg("stream"),
        "Soft-NMS on the GPU (one block); (int64 indices, rescored scores) by decreasing "
        "rescored score. One stream synchronization (the result length).");
}

}  // namespace fastconv::cuda
