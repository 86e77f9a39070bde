// CUDA im2col / col2im for any number of spatial dims (up to kMaxDims), float32 and
// float64. Kernels: fastconv_cuda/im2col_kernels.cuh (one thread per output element,
// col2im as a gather without atomics). This file validates the arguments with the CPU
// module's geometry code and launches on the caller's stream.
#include "fastconv/geometry.hpp"
#include "fastconv_cuda/binding.hpp"
#include "fastconv_cuda/im2col_kernels.cuh"
#include "fastconv_cuda/launch.cuh"

namespace fastconv::cuda {

namespace {

void im2col_py(py::handle x, py::handle cols, const Dims& kernel, const Dims& stride,
               const Dims& pad_before, const Dims& pad_after, const Dims& dilation,
               py::object alloc, uintptr_t stream) {
  (void)alloc;  // no temporary memory needed
  const DeviceArray xa = device_array(x, "x"), ca = device_array(cols, "cols");
  const WindowGeom g = make_image_geom("im2col", xa.shape, kernel, stride, pad_before, pad_after,
                                  dilation);
  const ConvParams p = window_params("im2col", g);
  check_shape(ca, {p.N, p.R, p.out_plane}, "cols");
  dispatch_float(xa, "x", [&](auto zero) {
    using T = decltype(zero);
    const T* src = input_ptr<T>(xa, "x");
    T* dst = output_ptr<T>(ca, "cols");
    im2col_run<T>(p, src, dst, StreamLauncher{as_stream(stream)});
  });
}

void col2im_py(py::handle cols, py::handle x, const Dims& kernel, const Dims& stride,
               const Dims& pad_before, const Dims& pad_after, const Dims& dilation,
               py::object alloc, uintptr_t stream) {
  (void)alloc;
  const DeviceArray ca = device_array(cols, "cols"), xa = device_array(x, "output");
  const WindowGeom g = make_image_geom("col2im", xa.shape, kernel, stride, pad_before, pad_after,
                                  dilation);
  const ConvParams p = window_params("col2im", g);
  check_shape(ca, {p.N, p.R, p.out_plane}, "cols");
  dispatch_float(ca, "cols", [&](auto zero) {
    using T = decltype(zero);
    const T* src = input_ptr<T>(ca, "cols");
    T* dst = output_ptr<T>(xa, "output");
    col2im_run<T>(p, src, dst, StreamLauncher{as_stream(stream)});
  });
}

}  // namespace

void bind_im2col(py::module_& m) {
  m.def("im2col", &im2col_py, py::arg("x"), py::arg("cols"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"), py::arg("dilation"),
        py::arg("alloc"), py::arg("stream"),
        "cols (N, C*prod(kernel), L) <- windows of x (N, C, *spatial); GPU arrays, on `stream`.");
  m.def("col2im", &col2im_py, py::arg("cols"), py::arg("output"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"), py::arg("dilation"),
        py::arg("alloc"), py::arg("stream"),
        "output (N, C, *spatial) <- sum of overlapping columns (adjoint of im2col).");
}

}  // namespace fastconv::cuda
