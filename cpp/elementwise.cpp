// Elementwise maps for the network layer, on every thread where NumPy runs one: the
// per-channel affine map of eval-mode batch norm (one pass, where NumPy would make two and
// a temporary; same arithmetic as NumPy's x * scale + shift, no contraction) and tanh
// (vectorized per instruction set in simd/activations.inl).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>

#include "fastconv/activations.hpp"
#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/gemm.hpp"
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

// Values per parallel job: large enough that a job outweighs waking a thread.
constexpr int64_t kTanhChunk = int64_t(1) << 15;

// The build of the instruction set the GEMM uses (cpu_features.cpp), so that
// FASTCONV_DISABLE_CPU_FEATURES steers both.
template <typename T>
void tanh_run(const T* x, T* y, int64_t count) {
  static const auto kernel = [] {
    const char* isa = gemm_kernels().isa;
    if constexpr (std::is_same_v<T, float>) {
      if (std::strcmp(isa, "avx512") == 0) return avx512::tanh_f32;
      if (std::strcmp(isa, "avx2") == 0) return avx2::tanh_f32;
      return baseline::tanh_f32;
    } else {
      if (std::strcmp(isa, "avx512") == 0) return avx512::tanh_f64;
      if (std::strcmp(isa, "avx2") == 0) return avx2::tanh_f64;
      return baseline::tanh_f64;
    }
  }();
  const int64_t chunks = (count + kTanhChunk - 1) / kTanhChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t start = chunk * kTanhChunk;
    kernel(x + start, y + start, std::min(kTanhChunk, count - start));
  }
}

void tanh_py(const py::array& x, py::array& out) {
  const std::vector<int64_t> shape = shape_of(x);
  check_shape(out, shape, "out");
  int64_t count = 1;
  for (int64_t extent : shape) count *= extent;
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    T* op = output_ptr<T>(out, "out");
    py::gil_scoped_release release;
    tanh_run(xp, op, count);
  });
}

}  // namespace

void bind_elementwise(py::module_& m) {
  m.def("channel_affine", &channel_affine_py, py::arg("x"), py::arg("scale"), py::arg("shift"),
        py::arg("out"),
        "out (N, C, ...) <- x * scale[c] + shift[c]; out may be x itself.");
  m.def("tanh", &tanh_py, py::arg("x"), py::arg("out"),
        "out <- tanh(x) elementwise, any shape (C-contiguous); out may be x itself.");
}

}  // namespace fastconv
