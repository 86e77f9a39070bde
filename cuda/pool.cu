// CUDA max and average pooling: argument checks (the CPU's geometry code and messages) and
// launches on the caller's stream. The kernels and the launch plans of the forward passes and
// the average adjoint are in fastconv_cuda/pool_kernels.cuh (see its header comment);
// max_pool_backward is orchestrated here, since it sorts (CUB) and reads a status back.
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>

#include "fastconv/geometry.hpp"
#include "fastconv_cuda/binding.hpp"
#include "fastconv_cuda/launch.cuh"
#include "fastconv_cuda/pool_kernels.cuh"
#include "radix_sort.cuh"

namespace fastconv::cuda {

namespace {

// The CPU's make_plan checks (same geometry code, same messages), then the device window;
// `out_shape` receives (N, C, *out).
DeviceWindow pool_window(const char* op, const Dims& x_shape, const Dims& kernel,
                         const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                         bool ceil_mode, const char* x_name, Dims* out_shape) {
  FC_CHECK(x_shape.size() >= 3, op, ": ", x_name,
           " must be (N, C, *spatial) with at least one spatial dim, got shape ",
           tuple_str(x_shape));
  const Dims in(x_shape.begin() + 2, x_shape.end());
  const WindowGeom g = make_window_geom(op, x_shape[0], x_shape[1], in, kernel, stride,
                                        pad_before, pad_after, Dims(in.size(), 1), ceil_mode,
                                        PadLimit::kPool);
  *out_shape = {g.batch, g.channels};
  out_shape->insert(out_shape->end(), g.out.begin(), g.out.end());
  return device_window(op, g);
}

void max_pool_forward_cuda(py::handle x, py::handle out, std::optional<py::handle> indices,
                           const Dims& kernel, const Dims& stride, const Dims& pad_before,
                           const Dims& pad_after, bool ceil_mode, py::object alloc,
                           uintptr_t stream) {
  (void)alloc;
  const DeviceArray xa = device_array(x, "x"), ya = device_array(out, "out");
  Dims out_shape;
  const DeviceWindow g = pool_window("max_pool", xa.shape, kernel, stride, pad_before,
                                     pad_after, ceil_mode, "x", &out_shape);
  check_shape(ya, out_shape, "out");
  std::optional<DeviceArray> ia;
  if (indices && !indices->is_none()) {
    ia = device_array(*indices, "indices");
    check_shape(*ia, out_shape, "indices");
  }
  dispatch_float(xa, "x", [&](auto zero) {
    using T = decltype(zero);
    max_pool_forward_run<T>(g, input_ptr<T>(xa, "x"), output_ptr<T>(ya, "out"),
                            ia ? output_ptr<int64_t>(*ia, "indices") : nullptr,
                            StreamLauncher{as_stream(stream)});
  });
}

void avg_pool_forward_cuda(py::handle x, py::handle out, const Dims& kernel, const Dims& stride,
                           const Dims& pad_before, const Dims& pad_after, bool ceil_mode,
                           bool count_include_pad, py::object alloc, uintptr_t stream) {
  (void)alloc;
  const DeviceArray xa = device_array(x, "x"), ya = device_array(out, "out");
  Dims out_shape;
  const DeviceWindow g = pool_window("avg_pool", xa.shape, kernel, stride, pad_before,
                                     pad_after, ceil_mode, "x", &out_shape);
  check_shape(ya, out_shape, "out");
  dispatch_float(xa, "x", [&](auto zero) {
    using T = decltype(zero);
    avg_pool_forward_run<T>(g, input_ptr<T>(xa, "x"), output_ptr<T>(ya, "out"),
                            count_include_pad, StreamLauncher{as_stream(stream)});
  });
}

void avg_pool_backward_cuda(py::handle dy, py::handle dx, const Dims& kernel,
                            const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                            bool ceil_mode, bool count_include_pad, py::object alloc,
                            uintptr_t stream) {
  (void)alloc;
  const DeviceArray dya = device_array(dy, "dy"), dxa = device_array(dx, "dx");
  Dims out_shape;
  const DeviceWindow g = pool_window("avg_pool_backward", dxa.shape, kernel, stride,
                                     pad_before, pad_after, ceil_mode, "dx", &out_shape);
  check_shape(dya, out_shape, "dy");
  dispatch_float(dya, "dy", [&](auto zero) {
    using T = decltype(zero);
    avg_pool_backward_run<T>(g, input_ptr<T>(dya, "dy"), output_ptr<T>(dxa, "dx"),
                             count_include_pad, StreamLauncher{as_stream(stream)});
  });
}

void max_pool_backward_cuda(py::handle dy, py::handle indices, py::handle dx, py::object alloc,
                            uintptr_t stream_handle) {
  const DeviceArray dya = device_array(dy, "dy"), ia = device_array(indices, "indices"),
                    dxa = device_array(dx, "dx");
  const Dims& dy_shape = dya.shape;
  const Dims& dx_shape = dxa.shape;
  const ScatterPlanes s = make_scatter_planes("max_pool_backward", dy_shape, dx_shape);
  check_shape(ia, dy_shape, "indices");
  const int64_t planes = s.planes, in_plane = s.in_plane, out_plane = s.out_plane;
  const int64_t count = planes * out_plane, dx_size = planes * in_plane;
  const int64_t* ip = input_ptr<int64_t>(ia, "indices");
  const cudaStream_t stream = as_stream(stream_handle);
  Workspace ws(alloc);

  // Hit counters are 32-bit; with fewer positions than 2^32 they cannot wrap.
  FC_CHECK(count < (int64_t(1) << 32), "max_pool_backward: dy has ", count,
           " elements; the CUDA kernel takes fewer than 2^32");
  unsigned* hits = ws.get<unsigned>(dx_size);
  // status[0]: first bad position (0x7f bytes: a sentinel above any position, for
  // atomicMin); status[1]: number of queued positions.
  long long* status = ws.get<long long>(2);
  FC_CUDA_CHECK(cudaMemsetAsync(status, 0x7f, sizeof(long long), stream));
  FC_CUDA_CHECK(cudaMemsetAsync(status + 1, 0, sizeof(long long), stream));
  FC_CUDA_CHECK(cudaMemsetAsync(hits, 0, static_cast<size_t>(dx_size) * sizeof(unsigned),
                                stream));
  const StreamLauncher launch{stream};
  launch(&count_hits_kernel, blocks_for(count), ip, count, out_plane, in_plane, status, hits);
  // The queue of (key, value) pairs for the positions of multi-hit cells (worst case: all).
  uint64_t* keys = ws.get<uint64_t>(count);
  int64_t* values = ws.get<int64_t>(count);
  dispatch_float(dya, "dy", [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dya, "dy");
    T* dxp = output_ptr<T>(dxa, "dx");
    FC_CUDA_CHECK(cudaMemsetAsync(dxp, 0, static_cast<size_t>(dx_size) * sizeof(T), stream));
    launch(&store_single_hits_kernel<T>, blocks_for(count), ip, count, out_plane, in_plane,
           static_cast<const unsigned*>(hits), dyp, dxp,
           reinterpret_cast<unsigned long long*>(status + 1), keys, values);
    // One read brings back the first bad index and the queue length: the op's only sync.
    // As on the CPU, a bad index raises ValueError; dx (the op's output) may then hold
    // partial results, but nothing outside it is ever written.
    long long host[2] = {0, 0};
    {
      py::gil_scoped_release release;
      FC_CUDA_CHECK(cudaMemcpyAsync(host, status, sizeof host, cudaMemcpyDeviceToHost, stream));
      FC_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    const long long bad = host[0], queued = host[1];
    if (bad < count) {
      int64_t value = 0;
      FC_CUDA_CHECK(cudaMemcpyAsync(&value, ip + bad, sizeof value, cudaMemcpyDeviceToHost,
                                    stream));
      FC_CUDA_CHECK(cudaStreamSynchronize(stream));
      FC_CHECK(false, "max_pool_backward: indices must lie in [0, ", in_plane,
               ") (the spatial size of one plane of dx shape ", tuple_str(dx_shape), "), got ",
               value, " at flat position ", bad, " of indices shape ", tuple_str(dy_shape));
    }
    if (queued == 0) return;
    // Sort by position, then stably by cell: each cell's run lists its positions in
    // increasing order, the CPU's summation order.
    uint64_t* keys2 = ws.get<uint64_t>(queued);
    int64_t* values2 = ws.get<int64_t>(queued);
    stable_sort_pairs(ws, keys, keys2, values, values2, queued,
                      bits_for(static_cast<uint64_t>(count - 1)), stream);
    launch(&swap_pairs_kernel, blocks_for(queued), static_cast<const uint64_t*>(keys2),
           static_cast<const int64_t*>(values2), static_cast<int64_t>(queued), keys, values);
    stable_sort_pairs(ws, keys, keys2, values, values2, queued,
                      bits_for(static_cast<uint64_t>(dx_size - 1)), stream);
    launch(&sum_runs_kernel<T>, blocks_for(queued), static_cast<const uint64_t*>(keys2),
           static_cast<const int64_t*>(values2), static_cast<int64_t>(queued),
           static_cast<uint64_t>(dx_size), dyp, dxp);
  });
}

}  // namespace

void bind_pool(py::module_& m) {
  m.def("max_pool_forward", &max_pool_forward_cuda, py::arg("x"), py::arg("out"),
        py::arg("indices").none(true), py::arg("kernel_size"), py::arg("stride"),
        py::arg("pad_before"), py::arg("pad_after"), py::arg("ceil_mode"), py::arg("alloc"),
        py::arg("stream"),
        "out (N, C, *out_spatial) <- window maxima of x (N, C, *spatial); indices (int64, same "
        "shape, or None) <- their flat offsets within each (n, c) plane. GPU arrays.");
  m.def("avg_pool_forward", &avg_pool_forward_cuda, py::arg("x"), py::arg("out"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("alloc"), py::arg("stream"),
        "out (N, C, *out_spatial) <- window means of x (N, C, *spatial). GPU arrays.");
  m.def("max_pool_backward", &max_pool_backward_cuda, py::arg("dy"), py::arg("indices"),
        py::arg("dx"), py::arg("alloc"), py::arg("stream"),
        "dx (N, C, *spatial) <- dy (N, C, *out_spatial) added at indices per plane, summed in "
        "the CPU's order. Synchronizes the stream once to validate the indices.");
  m.def("avg_pool_backward", &avg_pool_backward_cuda, py::arg("dy"), py::arg("dx"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("alloc"), py::arg("stream"),
        "dx (N, C, *spatial) <- gradient of avg_pool_forward (its exact adjoint). GPU arrays.");
}

}  // namespace fastconv::cuda
