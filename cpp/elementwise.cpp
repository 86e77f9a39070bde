// Per-channel elementwise maps for the network layer's inference path (eval-mode batch
// norm): one pass over x on every thread, where NumPy would make two single-threaded passes
// and a temporary. Same arithmetic as NumPy's x * scale + shift (no contraction).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

template <typename T>
void channel_affine_impl(const T* x, const T* scale, const T* shift, T* out, int64_t planes,
                         int64_t channels, int64_t plane) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T s = scale[p % channels], t = shift[p % channels];
    const T* src = x + p * plane;
    T* dst = out + p * plane;
#pragma omp simd
    for (int64_t i = 0; i < plane; ++i) dst[i] = src[i] * s + t;
  }
}

void channel_affine_py(const py::array& x, const py::array& scale, const py::array& shift,
                       py::array& out) {
  const std::vector<int64_t> shape = shape_of(x);
  FC_CHECK(shape.size() >= 2, "channel_affine: x must be (N, C, ...), got shape ",
           tuple_str(shape));
  const int64_t channels = shape[1];
  check_shape(scale, {channels}, "scale");
  check_shape(shift, {channels}, "shift");
  check_shape(out, shape, "out");
  int64_t plane = 1;
  for (size_t d = 2; d < shape.size(); ++d) plane *= shape[d];
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    const T* sp = input_ptr<T>(scale, "scale");
    const T* tp = input_ptr<T>(shift, "shift");
    T* op = output_ptr<T>(out, "out");
    py::gil_scoped_release release;
    channel_affine_impl(xp, sp, tp, op, shape[0] * channels, channels, plane);
  });
}

}  // namespace

void bind_elementwise(py::module_& m) {
  m.def("channel_affine", &channel_affine_py, py::arg("x"), py::arg("scale"), py::arg("shift"),
        py::arg("out"),
        "out (N, C, ...) <- x * scale[c] + shift[c]; out may be x itself.");
}

}  // namespace fastconv
