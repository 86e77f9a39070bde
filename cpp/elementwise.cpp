// Elementwise maps for the network layer, on every thread where NumPy runs one: the
// per-channel affine map of eval-mode batch norm, optionally followed by a residual add and
// a ReLU (one pass where NumPy would make up to four; same arithmetic, no contraction),
// tanh (vectorized per instruction set in simd/activations.inl), the backward passes of
// relu, tanh and sigmoid, and the in-place sum of two gradients.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <string>
#include <type_traits>

#include "fastconv/activations.hpp"
#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

// out = x * scale[c] + shift[c], then + residual, then max(., 0): the ops of the unfused
// sequence in their order, each rounded, so the results are bitwise those of batch norm,
// the add and the ReLU run one after another.
template <typename T, bool with_residual, bool relu>
void channel_affine_impl(const T* x, const T* scale, const T* shift, const T* residual, T* out,
                         int64_t planes, int64_t channels, int64_t plane) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T s = scale[p % channels], t = shift[p % channels];
    const T* src = x + p * plane;
    const T* add = with_residual ? residual + p * plane : nullptr;
    T* dst = out + p * plane;
#pragma omp simd
    for (int64_t i = 0; i < plane; ++i) {
      T v = src[i] * s + t;
      if constexpr (with_residual) v = v + add[i];
      // NaN stays NaN, as in torch.relu and np.maximum.
      if constexpr (relu) v = v < T(0) ? T(0) : v;
      dst[i] = v;
    }
  }
}

void channel_affine_py(const py::array& x, const py::array& scale, const py::array& shift,
                       py::array& out, const std::optional<py::array>& residual, bool relu) {
  const std::vector<int64_t> shape = shape_of(x);
  FC_CHECK(shape.size() >= 2, "channel_affine: x must be (N, C, ...), got shape ",
           tuple_str(shape));
  const int64_t channels = shape[1];
  check_shape(scale, {channels}, "scale");
  check_shape(shift, {channels}, "shift");
  check_shape(out, shape, "out");
  if (residual) check_shape(*residual, shape, "residual");
  int64_t plane = 1;
  for (size_t d = 2; d < shape.size(); ++d) plane *= shape[d];
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    const T* sp = input_ptr<T>(scale, "scale");
    const T* tp = input_ptr<T>(shift, "shift");
    const T* rp = residual ? input_ptr<T>(*residual, "residual") : nullptr;
    T* op = output_ptr<T>(out, "out");
    const int64_t planes = shape[0] * channels;
    py::gil_scoped_release release;
    dispatch_flags(rp != nullptr, relu, [&](auto with_residual, auto with_relu) {
      channel_affine_impl<T, decltype(with_residual)::value, decltype(with_relu)::value>(
          xp, sp, tp, rp, op, planes, channels, plane);
    });
  });
}

// Values per parallel job: large enough that a job outweighs waking a thread.
constexpr int64_t kElementwiseChunk = int64_t(1) << 15;

// body(start, stop) over [0, count) in chunks of kElementwiseChunk, one job each.
template <typename Body>
void for_each_chunk(int64_t count, const Body& body) {
  const int64_t chunks = (count + kElementwiseChunk - 1) / kElementwiseChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t start = chunk * kElementwiseChunk;
    body(start, std::min(count, start + kElementwiseChunk));
  }
}

template <typename T>
void tanh_run(const T* x, T* y, int64_t count) {
  static const auto kernel = [] {
    if constexpr (std::is_same_v<T, float>) {
      return for_cpu_path(avx512::tanh_f32, avx2::tanh_f32, baseline::tanh_f32);
    } else {
      return for_cpu_path(avx512::tanh_f64, avx2::tanh_f64, baseline::tanh_f64);
    }
  }();
  for_each_chunk(count, [&](int64_t start, int64_t stop) {
    kernel(x + start, y + start, stop - start);
  });
}

// Activations whose derivative is a function of their output y, so that backward keeps
// only y: relu (0 where y <= 0), tanh (1 - y^2), sigmoid (y (1 - y)).
enum class Activation { relu, tanh, sigmoid };

// dx = dy * f'(y), with the NumPy expressions' operations in their order (bitwise equal).
template <typename T, Activation kind>
void activation_backward_run(const T* dy, const T* y, T* dx, int64_t count) {
  for_each_chunk(count, [&](int64_t start, int64_t stop) {
#pragma omp simd
    for (int64_t i = start; i < stop; ++i) {
      if constexpr (kind == Activation::relu) {
        // dy read unconditionally, so the choice is a vector blend, not a branch per value
        // (half of them mispredicted on real activations). NaN passes dy on, as torch.
        const T g = dy[i];
        dx[i] = y[i] <= T(0) ? T(0) : g;
      } else if constexpr (kind == Activation::tanh) {
        dx[i] = dy[i] * (T(1) - y[i] * y[i]);
      } else {
        dx[i] = dy[i] * y[i] * (T(1) - y[i]);
      }
    }
  });
}

void activation_backward_py(const std::string& kind, const py::array& dy, const py::array& y,
                            py::array& out) {
  const std::vector<int64_t> shape = shape_of(y);
  check_shape(dy, shape, "dy");
  check_shape(out, shape, "out");
  FC_CHECK(kind == "relu" || kind == "tanh" || kind == "sigmoid",
           "activation_backward: kind must be 'relu', 'tanh' or 'sigmoid', got '", kind, "'");
  const int64_t count = y.size();
  dispatch_float(float_dtype(y, "y"), [&](auto zero) {
    using T = decltype(zero);
    const T* dyp = input_ptr<T>(dy, "dy");
    const T* yp = input_ptr<T>(y, "y");
    T* op = output_ptr<T>(out, "out");
    py::gil_scoped_release release;
    if (kind == "relu") {
      activation_backward_run<T, Activation::relu>(dyp, yp, op, count);
    } else if (kind == "tanh") {
      activation_backward_run<T, Activation::tanh>(dyp, yp, op, count);
    } else {
      activation_backward_run<T, Activation::sigmoid>(dyp, yp, op, count);
    }
  });
}

void add_into_py(py::array& total, const py::array& x) {
  const std::vector<int64_t> shape = shape_of(total);
  check_shape(x, shape, "x");
  const int64_t count = total.size();
  dispatch_float(float_dtype(total, "total"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    T* tp = output_ptr<T>(total, "total");
    py::gil_scoped_release release;
    for_each_chunk(count, [&](int64_t start, int64_t stop) {
#pragma omp simd
      for (int64_t i = start; i < stop; ++i) tp[i] += xp[i];
    });
  });
}

void tanh_py(const py::array& x, py::array& out) {
  const std::vector<int64_t> shape = shape_of(x);
  check_shape(out, shape, "out");
  const int64_t count = x.size();
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
        py::arg("out"), py::arg("residual") = py::none(), py::arg("relu") = false,
        "out (N, C, ...) <- x * scale[c] + shift[c] (+ residual, same shape as x) (then "
        "max(., 0) with relu); out may be x or residual itself.");
  m.def("activation_backward", &activation_backward_py, py::arg("kind"), py::arg("dy"),
        py::arg("y"), py::arg("out"),
        "out <- dy * f'(x) for f = kind ('relu', 'tanh', 'sigmoid') given the forward's "
        "output y = f(x), any shape (C-contiguous); out may be dy itself.");
  m.def("add_into", &add_into_py, py::arg("total"), py::arg("x"),
        "total <- total + x elementwise, same shape and dtype (C-contiguous), on every "
        "thread.");
  m.def("tanh", &tanh_py, py::arg("x"), py::arg("out"),
        "out <- tanh(x) elementwise, any shape (C-contiguous); out may be x itself.");
}

}  // namespace fastconv
