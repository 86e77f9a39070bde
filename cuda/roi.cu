// CUDA RoI align and RoI pool: argument checks (the CPU's geometry code and messages, from
// fastconv/roi.hpp), launches on the caller's stream, and the one status read-back per call
// that turns a bad roi row or index into the CPU's ValueError. Kernels and launch plans:
// fastconv_cuda/roi_kernels.cuh.
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastconv/roi.hpp"
#include "fastconv_cuda/binding.hpp"
#include "fastconv_cuda/launch.cuh"
#include "fastconv_cuda/roi_kernels.cuh"
#include "radix_sort.cuh"

namespace fastconv::cuda {

namespace {

// Reads the two status words back (the op's synchronization) and raises the CPU's message
// for a bad roi row, recomputing its problem on the host from the row's values.
template <typename T, typename Problem>
void raise_on_status(const char* op, const RoiGeom& g, const T* rois, const long long* status,
                     long long* host, cudaStream_t stream, Problem problem_of) {
  {
    py::gil_scoped_release release;
    FC_CUDA_CHECK(cudaMemcpyAsync(host, status, 2 * sizeof(long long), cudaMemcpyDeviceToHost,
                                  stream));
    FC_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  if (host[0] >= g.rois) return;
  std::vector<T> row(static_cast<size_t>(g.row_width()));
  FC_CUDA_CHECK(cudaMemcpyAsync(row.data(), rois + host[0] * g.row_width(),
                                row.size() * sizeof(T), cudaMemcpyDeviceToHost, stream));
  FC_CUDA_CHECK(cudaStreamSynchronize(stream));
  raise_roi_problem(op, problem_of(row.data()), host[0], row.data(), g);
}

RoiGeom backward_geom(const char* op, const DeviceArray& dy, const DeviceArray& rois,
                      const DeviceArray& dx) {
  FC_CHECK(dy.shape.size() == dx.shape.size() && dy.shape.size() >= 2, op, ": dy shape ",
           tuple_str(dy.shape), " must be (R, C, *output_size) for dx shape ",
           tuple_str(dx.shape));
  const RoiGeom g = make_roi_geom(op, dx.shape, "dx", rois.shape,
                                  Dims(dy.shape.begin() + 2, dy.shape.end()));
  check_shape(dy, roi_out_shape(g), "dy");
  return g;
}

// One roi_align pass on the caller's stream, `in` -> `out` (forward: x -> y; adjoint:
// dy -> dx), then the status read-back that validates the rois.
template <class Pass>
void run_align(const char* op, const RoiGeom& g, const DeviceArray& in, const char* in_name,
               const DeviceArray& rois, const DeviceArray& out, const char* out_name,
               double spatial_scale, int64_t sampling_ratio, bool aligned, py::object alloc,
               uintptr_t stream_handle, Pass pass) {
  const cudaStream_t stream = as_stream(stream_handle);
  dispatch_float(in, in_name, [&](auto zero) {
    using T = decltype(zero);
    const T* rp = input_ptr<T>(rois, "rois");
    const T scale = static_cast<T>(spatial_scale);
    Workspace ws(alloc);
    long long* status = ws.get<long long>(2);
    pass(g, input_ptr<T>(in, in_name), rp, scale, aligned, sampling_ratio,
         output_ptr<T>(out, out_name), status, ws, StreamLauncher{stream});
    long long host[2];
    raise_on_status(op, g, rp, status, host, stream, [&](const T* row) {
      return align_row_problem(row, g, scale, aligned, sampling_ratio);
    });
  });
}

void roi_align_forward_cuda(py::handle x, py::handle rois, py::handle out,
                            const Dims& output_size, double spatial_scale, int64_t sampling_ratio,
                            bool aligned, py::object alloc, uintptr_t stream_handle) {
  const char* op = "roi_align";
  check_roi_scale(op, spatial_scale);
  check_sampling_ratio(op, sampling_ratio);
  const DeviceArray xa = device_array(x, "x"), ra = device_array(rois, "rois"),
                    ya = device_array(out, "out");
  const RoiGeom g = make_roi_geom(op, xa.shape, "x", ra.shape, output_size);
  check_shape(ya, roi_out_shape(g), "out");
  run_align(op, g, xa, "x", ra, ya, "out", spatial_scale, sampling_ratio, aligned,
            std::move(alloc), stream_handle,
            [](const RoiGeom& geom, const auto* in, auto&&... rest) {
              using T = std::remove_const_t<std::remove_pointer_t<decltype(in)>>;
              roi_align_forward_run<T>(geom, in, std::forward<decltype(rest)>(rest)...);
            });
}

void roi_align_backward_cuda(py::handle dy, py::handle rois, py::handle dx, double spatial_scale,
                             int64_t sampling_ratio, bool aligned, py::object alloc,
                             uintptr_t stream_handle) {
  const char* op = "roi_align_backward";
  check_roi_scale(op, spatial_scale);
  check_sampling_ratio(op, sampling_ratio);
  const DeviceArray dya = device_array(dy, "dy"), ra = device_array(rois, "rois"),
                    dxa = device_array(dx, "dx");
  const RoiGeom g = backward_geom(op, dya, ra, dxa);
  run_align(op, g, dya, "dy", ra, dxa, "dx", spatial_scale, sampling_ratio, aligned,
            std::move(alloc), stream_handle,
            [](const RoiGeom& geom, const auto* in, auto&&... rest) {
              using T = std::remove_const_t<std::remove_pointer_t<decltype(in)>>;
              roi_align_backward_run<T>(geom, in, std::forward<decltype(rest)>(rest)...);
            });
}

void roi_pool_forward_cuda(py::handle x, py::handle rois, py::handle out,
                           std::optional<py::handle> indices, const Dims& output_size,
                           double spatial_scale, py::object alloc, uintptr_t stream_handle) {
  const char* op = "roi_pool";
  check_roi_scale(op, spatial_scale);
  const DeviceArray xa = device_array(x, "x"), ra = device_array(rois, "rois"),
                    ya = device_array(out, "out");
  const RoiGeom g = make_roi_geom(op, xa.shape, "x", ra.shape, output_size);
  check_shape(ya, roi_out_shape(g), "out");
  std::optional<DeviceArray> ia;
  if (indices && !indices->is_none()) {
    ia = device_array(*indices, "indices");
    check_shape(*ia, roi_out_shape(g), "indices");
  }
  const cudaStream_t stream = as_stream(stream_handle);
  dispatch_float(xa, "x", [&](auto zero) {
    using T = decltype(zero);
    const T* rp = input_ptr<T>(ra, "rois");
    const T scale = static_cast<T>(spatial_scale);
    Workspace ws(alloc);
    long long* status = ws.get<long long>(2);
    roi_pool_forward_run<T>(g, input_ptr<T>(xa, "x"), rp, scale, output_ptr<T>(ya, "out"),
                            ia ? output_ptr<int64_t>(*ia, "indices") : nullptr, status, ws,
                            StreamLauncher{stream});
    long long host[2];
    raise_on_status(op, g, rp, status, host, stream,
                    [&](const T* row) { return pool_row_problem(row, g, scale); });
  });
}

void roi_pool_backward_cuda(py::handle dy, py::handle indices, py::handle rois, py::handle dx,
                            py::object alloc, uintptr_t stream_handle) {
  const char* op = "roi_pool_backward";
  const DeviceArray dya = device_array(dy, "dy"), ia = device_array(indices, "indices"),
                    ra = device_array(rois, "rois"), dxa = device_array(dx, "dx");
  const RoiGeom g = backward_geom(op, dya, ra, dxa);
  check_shape(ia, roi_out_shape(g), "indices");
  const int64_t* ip = input_ptr<int64_t>(ia, "indices");
  const int64_t count = g.rois * g.channels * g.bins(), plane = g.plane();
  const int64_t dx_size = g.batch * g.channels * plane;
  const cudaStream_t stream = as_stream(stream_handle);
  dispatch_float(dya, "dy", [&](auto zero) {
    using T = decltype(zero);
    const T* rp = input_ptr<T>(ra, "rois");
    const T* dyp = input_ptr<T>(dya, "dy");
    T* dxp = output_ptr<T>(dxa, "dx");
    Workspace ws(alloc);
    long long* status = ws.get<long long>(2);
    uint64_t* keys = ws.get<uint64_t>(2 * count);
    int64_t* values = ws.get<int64_t>(2 * count);
    const StreamLauncher launch{stream};
    roi_pool_backward_keys_run<T>(g, rp, ip, keys, values, status, ws, launch);
    long long host[2];
    raise_on_status(op, g, rp, status, host, stream,
                    [&](const T* row) { return roi_row_problem(row, g); });
    if (host[1] < count) {
      int64_t value = 0;
      FC_CUDA_CHECK(cudaMemcpyAsync(&value, ip + host[1], sizeof value, cudaMemcpyDeviceToHost,
                                    stream));
      FC_CUDA_CHECK(cudaStreamSynchronize(stream));
      FC_CHECK(false, op, ": indices must lie in [-1, ", plane, ") (-1: an empty bin; else a "
               "cell of one plane of dx shape ", tuple_str(dxa.shape), "), got ", value,
               " at flat position ", host[1], " of indices shape ", tuple_str(ia.shape));
    }
    FC_CUDA_CHECK(cudaMemsetAsync(dxp, 0, static_cast<size_t>(dx_size) * sizeof(T), stream));
    if (count == 0) return;
    // Stable by cell: each cell's positions stay in increasing order (roi, then bin).
    stable_sort_pairs(ws, keys, keys + count, values, values + count, count,
                      bits_for(static_cast<uint64_t>(dx_size)), stream);
    launch(&roi_sum_runs_kernel<T>, blocks_for(count), static_cast<const uint64_t*>(keys + count),
           static_cast<const int64_t*>(values + count), count, static_cast<uint64_t>(dx_size),
           dyp, dxp);
  });
}

}  // namespace

void bind_roi(py::module_& m) {
  m.def("roi_align_forward", &roi_align_forward_cuda, py::arg("x"), py::arg("rois"),
        py::arg("out"), py::arg("output_size"), py::arg("spatial_scale"),
        py::arg("sampling_ratio"), py::arg("aligned"), py::arg("alloc"), py::arg("stream"),
        "out (R, C, *output_size) <- RoI align of x over rois. GPU arrays; synchronizes once "
        "to validate the rois.");
  m.def("roi_align_backward", &roi_align_backward_cuda, py::arg("dy"), py::arg("rois"),
        py::arg("dx"), py::arg("spatial_scale"), py::arg("sampling_ratio"), py::arg("aligned"),
        py::arg("alloc"), py::arg("stream"),
        "dx (N, C, *spatial) <- the adjoint of roi_align_forward applied to dy, gathered per "
        "cell (deterministic). GPU arrays; synchronizes once.");
  m.def("roi_pool_forward", &roi_pool_forward_cuda, py::arg("x"), py::arg("rois"),
        py::arg("out"), py::arg("indices").none(true), py::arg("output_size"),
        py::arg("spatial_scale"), py::arg("alloc"), py::arg("stream"),
        "out (R, C, *output_size) <- RoI max pooling of x; indices (int64 or None) <- the flat "
        "cells of the maxima, -1 for empty bins. GPU arrays; synchronizes once.");
  m.def("roi_pool_backward", &roi_pool_backward_cuda, py::arg("dy"), py::arg("indices"),
        py::arg("rois"), py::arg("dx"), py::arg("alloc"), py::arg("stream"),
        "dx (N, C, *spatial) <- dy added at indices, summed per cell in the CPU's order. GPU "
        "arrays; synchronizes once.");
}

}  // namespace fastconv::cuda
