// Training-mode batch norm: the batch statistics, the normalization (optionally followed by
// a residual add and a ReLU, as at the end of a ResNet block) and the backward pass, each
// in two passes over one channel while it is still in cache, where the array version
// makes a dozen full-size temporaries. Sums run in double in a fixed order per channel,
// so results are deterministic and do not depend on the thread count. Only x, the
// per-channel mean and 1/std, and the output (for the ReLU's mask) are kept for the
// backward pass: the normalized x is recomputed there, as in torch.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

// x as (batch, channels, plane): channel c of image n is the run at (n * channels + c) * plane.
struct ChannelLayout {
  int64_t batch;
  int64_t channels;
  int64_t plane;

  int64_t at(int64_t n, int64_t c) const { return (n * channels + c) * plane; }
};

ChannelLayout channel_layout(const std::vector<int64_t>& shape, const char* op) {
  FC_CHECK(shape.size() >= 2, op, ": x must be (N, C, ...), got shape ", tuple_str(shape));
  ChannelLayout s{shape[0], shape[1], 1};
  for (size_t d = 2; d < shape.size(); ++d) s.plane *= shape[d];
  FC_CHECK(s.batch * s.plane > 1, op, ": expected more than 1 value per channel, got x shape ",
           tuple_str(shape));
  return s;
}

// The flags are template arguments so that every inner loop is branch-free and vectorizes.
template <typename T, bool with_residual, bool relu>
void forward_impl(const ChannelLayout& s, const T* x, const T* weight, const T* bias,
                  const T* residual, double eps, T* out, T* mean_out, T* var_out,
                  T* invstd_out) {
  const double count = double(s.batch * s.plane);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < s.channels; ++c) {
    double sum = 0;
    for (int64_t n = 0; n < s.batch; ++n) {
      const T* src = x + s.at(n, c);
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < s.plane; ++i) sum += double(src[i]);
    }
    const double mean = sum / count;
    // Centred second pass: no cancellation when the mean dwarfs the spread.
    double squares = 0;
    for (int64_t n = 0; n < s.batch; ++n) {
      const T* src = x + s.at(n, c);
#pragma omp simd reduction(+ : squares)
      for (int64_t i = 0; i < s.plane; ++i) {
        const double d = double(src[i]) - mean;
        squares += d * d;
      }
    }
    const double var = squares / count, invstd = 1.0 / std::sqrt(var + eps);
    mean_out[c] = T(mean);
    var_out[c] = T(var);
    invstd_out[c] = T(invstd);
    // (x - mean) * (invstd * w) + b in T, as torch's CPU kernel rounds it.
    const T m = T(mean), scale = T(weight ? invstd * double(weight[c]) : invstd);
    const T shift = bias ? bias[c] : T(0);
    for (int64_t n = 0; n < s.batch; ++n) {
      const T* src = x + s.at(n, c);
      const T* add = with_residual ? residual + s.at(n, c) : nullptr;
      T* dst = out + s.at(n, c);
#pragma omp simd
      for (int64_t i = 0; i < s.plane; ++i) {
        T v = (src[i] - m) * scale + shift;
        if constexpr (with_residual) v = v + add[i];
        // NaN stays NaN, as in torch.relu.
        if constexpr (relu) v = v < T(0) ? T(0) : v;
        dst[i] = v;
      }
    }
  }
}

// g_out: the incoming gradient; with `out` (the forward's output after its ReLU) it is first
// zeroed where out <= 0 (a NaN output passes it on, as torch's ReLU). grad_sum, the
// residual's gradient, is that masked gradient, written only when asked.
template <typename T, bool masked, bool with_sum>
void backward_impl(const ChannelLayout& s, const T* g_out, const T* x, const T* mean,
                   const T* invstd, const T* weight, const T* out, T* grad_x, T* grad_weight,
                   T* grad_bias, T* grad_sum) {
  const double count = double(s.batch * s.plane);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < s.channels; ++c) {
    const T m = mean[c];
    double sum_g = 0, sum_gx = 0;  // sum g and sum g * (x - mean)
    for (int64_t n = 0; n < s.batch; ++n) {
      const T* g = g_out + s.at(n, c);
      const T* src = x + s.at(n, c);
      const T* y = masked ? out + s.at(n, c) : nullptr;
      T* sum_out = with_sum ? grad_sum + s.at(n, c) : nullptr;
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t i = 0; i < s.plane; ++i) {
        T gi = g[i];
        if constexpr (masked) gi = y[i] <= T(0) ? T(0) : gi;
        if constexpr (with_sum) sum_out[i] = gi;
        sum_g += double(gi);
        sum_gx += double(gi) * double(src[i] - m);
      }
    }
    const double is = double(invstd[c]), sum_gxhat = sum_gx * is;
    if (grad_weight) grad_weight[c] = T(sum_gxhat);
    if (grad_bias) grad_bias[c] = T(sum_g);
    if (!grad_x) continue;
    // dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mean) * invstd.
    const T factor = T(weight ? double(weight[c]) * is : is);
    const T mean_g = T(sum_g / count), mean_gxhat = T(sum_gxhat / count), t_is = invstd[c];
    for (int64_t n = 0; n < s.batch; ++n) {
      const T* g = g_out + s.at(n, c);
      const T* src = x + s.at(n, c);
      const T* y = masked ? out + s.at(n, c) : nullptr;
      T* dst = grad_x + s.at(n, c);
#pragma omp simd
      for (int64_t i = 0; i < s.plane; ++i) {
        T gi = g[i];
        if constexpr (masked) gi = y[i] <= T(0) ? T(0) : gi;
        const T xhat = (src[i] - m) * t_is;
        dst[i] = (gi - mean_g - xhat * mean_gxhat) * factor;
      }
    }
  }
}

template <typename T>
const T* optional_input(const std::optional<py::array>& a, const char* name) {
  return a ? input_ptr<T>(*a, name) : nullptr;
}

template <typename T>
T* optional_output(std::optional<py::array>& a, const char* name) {
  return a ? output_ptr<T>(*a, name) : nullptr;
}

void forward_py(const py::array& x, const std::optional<py::array>& weight,
                const std::optional<py::array>& bias, const std::optional<py::array>& residual,
                bool relu, double eps, py::array& out, py::array& mean, py::array& var,
                py::array& invstd) {
  const std::vector<int64_t> shape = shape_of(x);
  const ChannelLayout s = channel_layout(shape, "batch_norm_forward");
  FC_CHECK(eps >= 0 && std::isfinite(eps), "batch_norm_forward: eps must be a finite float >= 0, "
           "got ", eps);
  const std::vector<int64_t> per_channel{s.channels};
  for (const auto* a : {&weight, &bias}) {
    if (*a) check_shape(**a, per_channel, a == &weight ? "weight" : "bias");
  }
  if (residual) check_shape(*residual, shape, "residual");
  check_shape(out, shape, "out");
  check_shape(mean, per_channel, "mean");
  check_shape(var, per_channel, "var");
  check_shape(invstd, per_channel, "invstd");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* xp = input_ptr<T>(x, "x");
    const T* wp = optional_input<T>(weight, "weight");
    const T* bp = optional_input<T>(bias, "bias");
    const T* rp = optional_input<T>(residual, "residual");
    T* op = output_ptr<T>(out, "out");
    T* mp = output_ptr<T>(mean, "mean");
    T* vp = output_ptr<T>(var, "var");
    T* ip = output_ptr<T>(invstd, "invstd");
    py::gil_scoped_release release;
    dispatch_flags(rp != nullptr, relu, [&](auto with_residual, auto with_relu) {
      forward_impl<T, decltype(with_residual)::value, decltype(with_relu)::value>(
          s, xp, wp, bp, rp, eps, op, mp, vp, ip);
    });
  });
}

void backward_py(const py::array& grad, const py::array& x, const py::array& mean,
                 const py::array& invstd, const std::optional<py::array>& weight,
                 const std::optional<py::array>& out, std::optional<py::array> grad_x,
                 std::optional<py::array> grad_weight, std::optional<py::array> grad_bias,
                 std::optional<py::array> grad_sum) {
  const std::vector<int64_t> shape = shape_of(x);
  const ChannelLayout s = channel_layout(shape, "batch_norm_backward");
  const std::vector<int64_t> per_channel{s.channels};
  check_shape(grad, shape, "grad");
  check_shape(mean, per_channel, "mean");
  check_shape(invstd, per_channel, "invstd");
  if (weight) check_shape(*weight, per_channel, "weight");
  if (out) check_shape(*out, shape, "out");
  if (grad_x) check_shape(*grad_x, shape, "grad_x");
  if (grad_weight) check_shape(*grad_weight, per_channel, "grad_weight");
  if (grad_bias) check_shape(*grad_bias, per_channel, "grad_bias");
  if (grad_sum) check_shape(*grad_sum, shape, "grad_sum");
  dispatch_float(float_dtype(x, "x"), [&](auto zero) {
    using T = decltype(zero);
    const T* gp = input_ptr<T>(grad, "grad");
    const T* xp = input_ptr<T>(x, "x");
    const T* mp = input_ptr<T>(mean, "mean");
    const T* ip = input_ptr<T>(invstd, "invstd");
    const T* wp = optional_input<T>(weight, "weight");
    const T* op = optional_input<T>(out, "out");
    T* gxp = optional_output<T>(grad_x, "grad_x");
    T* gwp = optional_output<T>(grad_weight, "grad_weight");
    T* gbp = optional_output<T>(grad_bias, "grad_bias");
    T* gsp = optional_output<T>(grad_sum, "grad_sum");
    py::gil_scoped_release release;
    dispatch_flags(op != nullptr, gsp != nullptr, [&](auto masked, auto with_sum) {
      backward_impl<T, decltype(masked)::value, decltype(with_sum)::value>(
          s, gp, xp, mp, ip, wp, op, gxp, gwp, gbp, gsp);
    });
  });
}

}  // namespace

void bind_batch_norm(py::module_& m) {
  m.def("batch_norm_forward", &forward_py, py::arg("x"), py::arg("weight").none(true),
        py::arg("bias").none(true), py::arg("residual").none(true), py::arg("relu"),
        py::arg("eps"), py::arg("out"), py::arg("mean"), py::arg("var"), py::arg("invstd"),
        "Training-mode batch norm of x (N, C, ...) with the batch statistics: out <- "
        "(x - mean) * invstd * weight + bias (+ residual) (then max(., 0) with relu); mean, "
        "var (biased) and invstd = 1 / sqrt(var + eps) (C,) are written too.");
  m.def("batch_norm_backward", &backward_py, py::arg("grad"), py::arg("x"), py::arg("mean"),
        py::arg("invstd"), py::arg("weight").none(true), py::arg("out").none(true),
        py::arg("grad_x").none(true), py::arg("grad_weight").none(true),
        py::arg("grad_bias").none(true), py::arg("grad_sum").none(true),
        "Gradients of batch_norm_forward given the gradient of its output (masked where "
        "`out`, the forward's output, is <= 0 when its ReLU was on): whichever of "
        "grad_x (N, C, ...), grad_weight and grad_bias (C,), and grad_sum (the masked "
        "gradient, the residual's) are given.");
}

}  // namespace fastconv
