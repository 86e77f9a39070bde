// Optimizer steps over many parameters at once (torch's "foreach"/fused steps): one call
// and one parallel region per step instead of several NumPy passes and temporaries per
// parameter. Each element is updated with the operations of the array version in their
// order (no contraction), so the results are bitwise those of fastconv.optim's array path
// and do not depend on the thread count.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

// Elements per parallel job: large enough that a job outweighs waking a thread.
constexpr int64_t kStepChunk = int64_t(1) << 15;

// The (tensor, first element) jobs covering every tensor in chunks.
struct Chunk {
  int64_t tensor;
  int64_t start;
  int64_t stop;
};

std::vector<Chunk> chunks_of(const std::vector<int64_t>& sizes) {
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < static_cast<int64_t>(sizes.size()); ++t) {
    for (int64_t start = 0; start < sizes[t]; start += kStepChunk) {
      chunks.push_back({t, start, std::min(sizes[t], start + kStepChunk)});
    }
  }
  return chunks;
}

// Every list as long as `params`, every array of its parameter's shape and of one float
// dtype: returns that dtype and fills `sizes`.
DType check_lists(const char* op, const std::vector<py::array>& params,
                  const std::vector<std::pair<const char*, const std::vector<py::array>*>>& lists,
                  std::vector<int64_t>& sizes) {
  FC_CHECK(!params.empty(), op, ": no parameters");
  const DType dtype = float_dtype(params[0], "params[0]");
  for (const auto& [name, list] : lists) {
    FC_CHECK(list->size() == params.size(), op, ": ", name, " has ", list->size(),
             " arrays for ", params.size(), " parameters");
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const std::vector<int64_t> shape = shape_of(params[i]);
    FC_CHECK(float_dtype(params[i], "params") == dtype, op, ": params[", i, "] has dtype ",
             dtype_name(params[i]), ", params[0] ", dtype_name(params[0]));
    for (const auto& [name, list] : lists) check_shape((*list)[i], shape, name);
    int64_t size = 1;
    for (int64_t extent : shape) size *= extent;
    sizes.push_back(size);
  }
  return dtype;
}

template <typename T>
std::vector<T*> writable(std::vector<py::array>& arrays, const char* name) {
  std::vector<T*> out;
  for (py::array& a : arrays) out.push_back(output_ptr<T>(a, name));
  return out;
}

template <typename T>
std::vector<const T*> readable(const std::vector<py::array>& arrays, const char* name) {
  std::vector<const T*> out;
  for (const py::array& a : arrays) out.push_back(input_ptr<T>(a, name));
  return out;
}

struct SgdOptions {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
};

void sgd_py(std::vector<py::array> params, const std::vector<py::array>& grads,
            std::vector<py::array> buffers, const std::vector<bool>& fresh, double lr,
            double momentum, double dampening, double weight_decay, bool nesterov) {
  std::vector<int64_t> sizes;
  std::vector<std::pair<const char*, const std::vector<py::array>*>> lists{{"grads", &grads}};
  if (momentum != 0) lists.push_back({"buffers", &buffers});
  const DType dtype = check_lists("sgd_step", params, lists, sizes);
  FC_CHECK(momentum == 0 || fresh.size() == params.size(), "sgd_step: fresh has ",
           fresh.size(), " flags for ", params.size(), " parameters");
  const SgdOptions o{lr, momentum, dampening, weight_decay, nesterov};
  const std::vector<Chunk> chunks = chunks_of(sizes);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    const std::vector<T*> p = writable<T>(params, "params");
    const std::vector<const T*> g = readable<T>(grads, "grads");
    const std::vector<T*> b = o.momentum != 0 ? writable<T>(buffers, "buffers")
                                              : std::vector<T*>{};
    const T wd = T(o.weight_decay), m = T(o.momentum), keep = T(1 - o.dampening), lr_t = T(o.lr);
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < static_cast<int64_t>(chunks.size()); ++job) {
      const Chunk c = chunks[job];
      T* const pt = p[c.tensor];
      const T* const gt = g[c.tensor];
      T* const bt = o.momentum != 0 ? b[c.tensor] : nullptr;
      const bool first = o.momentum != 0 && fresh[c.tensor];
      for (int64_t i = c.start; i < c.stop; ++i) {
        T d = gt[i];
        if (o.weight_decay != 0) d = d + wd * pt[i];
        if (bt) {
          bt[i] = first ? d : bt[i] * m + keep * d;
          d = o.nesterov ? d + m * bt[i] : bt[i];
        }
        pt[i] = pt[i] - lr_t * d;
      }
    }
  });
}

void adam_py(std::vector<py::array> params, const std::vector<py::array>& grads,
             std::vector<py::array> exp_avgs, std::vector<py::array> exp_avg_sqs,
             const std::vector<int64_t>& steps, double lr, double beta1, double beta2,
             double eps, double weight_decay) {
  std::vector<int64_t> sizes;
  const DType dtype = check_lists(
      "adam_step", params, {{"grads", &grads}, {"exp_avgs", &exp_avgs},
                            {"exp_avg_sqs", &exp_avg_sqs}}, sizes);
  FC_CHECK(steps.size() == params.size(), "adam_step: steps has ", steps.size(),
           " counts for ", params.size(), " parameters");
  for (size_t i = 0; i < steps.size(); ++i) {
    FC_CHECK(steps[i] >= 1, "adam_step: steps[", i, "] must be >= 1, got ", steps[i]);
  }
  const std::vector<Chunk> chunks = chunks_of(sizes);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    const std::vector<T*> p = writable<T>(params, "params");
    const std::vector<const T*> g = readable<T>(grads, "grads");
    const std::vector<T*> m = writable<T>(exp_avgs, "exp_avgs");
    const std::vector<T*> v = writable<T>(exp_avg_sqs, "exp_avg_sqs");
    // The per-tensor scalars as the array version forms them (in double, then rounded).
    std::vector<T> step_size, correction2_sqrt;
    for (int64_t step : steps) {
      step_size.push_back(T(lr / (1 - std::pow(beta1, double(step)))));
      correction2_sqrt.push_back(T(std::pow(1 - std::pow(beta2, double(step)), 0.5)));
    }
    const T wd = T(weight_decay), b2 = T(beta2), one_minus_b2 = T(1 - beta2), eps_t = T(eps);
    const double w = 1 - beta1;
    // torch.lerp's two forms: anchored at the end for weights >= 0.5.
    const bool from_end = std::abs(w) >= 0.5;
    const T lerp_w = T(from_end ? 1 - w : w);
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < static_cast<int64_t>(chunks.size()); ++job) {
      const Chunk c = chunks[job];
      T* const pt = p[c.tensor];
      const T* const gt = g[c.tensor];
      T* const mt = m[c.tensor];
      T* const vt = v[c.tensor];
      const T size = step_size[c.tensor], root = correction2_sqrt[c.tensor];
      for (int64_t i = c.start; i < c.stop; ++i) {
        T d = gt[i];
        if (weight_decay != 0) d = d + wd * pt[i];
        mt[i] = from_end ? d - (d - mt[i]) * lerp_w : mt[i] + lerp_w * (d - mt[i]);
        vt[i] = vt[i] * b2 + one_minus_b2 * (d * d);
        T denom = std::sqrt(vt[i]);
        denom = denom / root;
        denom = denom + eps_t;
        pt[i] = pt[i] - size * (mt[i] / denom);
      }
    }
  });
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def("sgd_step", &sgd_py, py::arg("params"), py::arg("grads"), py::arg("buffers"),
        py::arg("fresh"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
        py::arg("weight_decay"), py::arg("nesterov"),
        "One SGD step over every (param, grad[, momentum buffer]) triple, in place: "
        "d = g + weight_decay * p; buf = d where fresh, else momentum * buf + (1 - "
        "dampening) * d; d = d + momentum * buf (nesterov) or buf; p -= lr * d. Buffers "
        "are ignored (may be empty) when momentum is 0.");
  m.def("adam_step", &adam_py, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_avg_sqs"), py::arg("steps"), py::arg("lr"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
        "One Adam step (torch.optim.Adam, amsgrad off, L2 decay) over every parameter in "
        "place; steps are the step counts after this step (>= 1), one per parameter.");
}

}  // namespace fastconv
