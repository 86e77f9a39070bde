// CUDA convolution: forward, backward input and backward weight for any number of spatial
// dims (up to kMaxDims), groups (depthwise included), float32 and float64.
//
// The kernels and their launch plans live in fastconv_cuda/conv_kernels.cuh (implicit GEMM
// with no column matrix, split-K weight gradient summed in a fixed order, direct kernels for
// thin groups; see its header comment). This file validates the arguments exactly as the CPU
// bindings do (same geometry code, same messages), converts the geometry to the kernels'
// fixed-capacity ConvParams and launches on the caller's stream, with temporary memory
// (row tables, split-K partials) from the caller's allocator.
#include <optional>
#include <string>

#include "fastconv/geometry.hpp"
#include "fastconv_cuda/binding.hpp"
#include "fastconv_cuda/conv_kernels.cuh"
#include "fastconv_cuda/launch.cuh"

namespace fastconv::cuda {

namespace {

ConvParams conv_params(const char* op, const ConvGeom& g) {
  ConvParams p = window_params(op, g.win);
  p.K = g.out_channels;
  p.G = g.groups;
  p.Cg = g.group_in;
  p.Kg = g.group_out;
  p.R = g.rows;
  return p;
}

void conv_forward_py(py::handle x, py::handle w, py::object bias, py::handle out,
                     const Dims& stride, const Dims& pad_before, const Dims& pad_after,
                     const Dims& dilation, int64_t groups, py::object alloc, uintptr_t stream) {
  const DeviceArray xa = device_array(x, "x"), wa = device_array(w, "w");
  const DeviceArray oa = device_array(out, "out");
  const ConvGeom g = make_conv_geom("conv", xa.shape, wa.shape, stride, pad_before, pad_after,
                                    dilation, groups);
  std::optional<DeviceArray> ba;
  if (!bias.is_none()) {
    ba = device_array(bias, "bias");
    check_shape(*ba, {g.out_channels}, "bias");
  }
  check_shape(oa, g.out_shape(), "out");
  const ConvParams p = conv_params("conv", g);
  dispatch_float(xa, "x", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(xa, "x");
    const T* wp = input_ptr<T>(wa, "w");
    const T* bp = ba ? input_ptr<T>(*ba, "bias") : nullptr;
    T* yp = output_ptr<T>(oa, "out");
    Workspace ws(alloc);
    conv_forward_run<T>(p, xp, wp, bp, yp, ws, StreamLauncher{as_stream(stream)});
  });
}

void conv_backward_input_py(py::handle dy, py::handle w, py::handle dx, const Dims& stride,
                            const Dims& pad_before, const Dims& pad_after, const Dims& dilation,
                            int64_t groups, py::object alloc, uintptr_t stream) {
  const DeviceArray dya = device_array(dy, "dy"), wa = device_array(w, "w");
  const DeviceArray dxa = device_array(dx, "out");
  const ConvGeom g = make_conv_geom("conv_backward_input", dxa.shape, wa.shape, stride,
                                    pad_before, pad_after, dilation, groups);
  check_shape(dya, g.out_shape(), "dy");
  const ConvParams p = conv_params("conv_backward_input", g);
  dispatch_float(dya, "dy", [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dya, "dy");
    const T* wp = input_ptr<T>(wa, "w");
    T* dxp = output_ptr<T>(dxa, "out");
    Workspace ws(alloc);
    conv_backward_input_run<T>(p, dyp, wp, dxp, ws, StreamLauncher{as_stream(stream)});
  });
}

void conv_backward_weight_py(py::handle x, py::handle dy, py::handle dw, const Dims& stride,
                             const Dims& pad_before, const Dims& pad_after,
                             const Dims& dilation, int64_t groups, py::object alloc,
                             uintptr_t stream) {
  const DeviceArray xa = device_array(x, "x"), dya = device_array(dy, "dy");
  const DeviceArray dwa = device_array(dw, "out");
  const ConvGeom g = make_conv_geom("conv_backward_weight", xa.shape, dwa.shape, stride,
                                    pad_before, pad_after, dilation, groups);
  check_shape(dya, g.out_shape(), "dy");
  const ConvParams p = conv_params("conv_backward_weight", g);
  dispatch_float(xa, "x", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(xa, "x");
    const T* dyp = input_ptr<T>(dya, "dy");
    T* dwp = output_ptr<T>(dwa, "out");
    Workspace ws(alloc);
    conv_backward_weight_run<T>(p, xp, dyp, dwp, ws, StreamLauncher{as_stream(stream)});
  });
}

// Test hook: forces the kernel family so every path can be checked on the same cases.
std::string set_conv_path(const std::string& name) {
  static const char* const names[] = {"auto", "gemm", "gemm_wide", "gemm_large", "direct"};
  const std::string previous = names[static_cast<int>(conv_path_override())];
  for (int i = 0; i < 5; ++i) {
    if (name == names[i]) {
      conv_path_override() = static_cast<ConvPath>(i);
      return previous;
    }
  }
  FC_CHECK(false, "_set_conv_path: path must be 'auto', 'gemm', 'gemm_wide', 'gemm_large' or 'direct', got '",
           name, "'");
  return previous;
}

}  // namespace

void bind_conv(py::module_& m) {
  m.def("conv_forward", &conv_forward_py, py::arg("x"), py::arg("w"), py::arg("bias").none(true),
        py::arg("out"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("dilation"), py::arg("groups"), py::arg("alloc"), py::arg("stream"),
        "out (N, K, *out_spatial) <- cross-correlation of x (N, C, *spatial) with w "
        "(K, C/groups, *kernel), plus bias (K,) when given; GPU arrays, on `stream`.");
  m.def("conv_backward_input", &conv_backward_input_py, py::arg("dy"), py::arg("w"),
        py::arg("out"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("dilation"), py::arg("groups"), py::arg("alloc"), py::arg("stream"),
        "out (N, C, *spatial) <- gradient of conv with respect to its input.");
  m.def("conv_backward_weight", &conv_backward_weight_py, py::arg("x"), py::arg("dy"),
        py::arg("out"), py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"),
        py::arg("dilation"), py::arg("groups"), py::arg("alloc"), py::arg("stream"),
        "out (K, C/groups, *kernel) <- gradient of conv with respect to its weight.");
  m.def("_set_conv_path", &set_conv_path, py::arg("path"),
        "Testing: force the conv kernels ('auto', 'gemm' (64x64 tiles), 'gemm_wide' (64x128), 'gemm_large' (128x128), 'direct'); returns "
        "the previous setting.");
}

}  // namespace fastconv::cuda
