// fastconv._cpu: the CPU kernels. Registration lives with each op family; this file adds
// the shared geometry formula and the build information.
#include <omp.h>
#include <pthread.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/cpu_features.hpp"
#include "fastconv/geometry.hpp"

namespace py = pybind11;

namespace {

// The shared size formula, exposed so the Python layer's copy can be tested against it.
std::vector<int64_t> output_size(const std::vector<int64_t>& in, const std::vector<int64_t>& kernel,
                                 const std::vector<int64_t>& stride,
                                 const std::vector<int64_t>& pad_before,
                                 const std::vector<int64_t>& pad_after,
                                 const std::vector<int64_t>& dilation, bool ceil_mode, bool pool) {
  return fastconv::make_window_geom("output_size", 1, 1, in, kernel, stride, pad_before,
                                    pad_after, dilation, ceil_mode,
                                    pool ? fastconv::PadLimit::kPool : fastconv::PadLimit::kConv)
      .out;
}

// GNU OpenMP's thread pool does not survive fork(): the child's main thread would wait
// forever at its first parallel region for pool threads that exist only in the parent
// (multiprocessing's default start method on Linux). The child's main thread therefore runs
// the kernels on one thread; results do not depend on the thread count. Threads the child
// starts later get their own pool and the full thread count.
void run_single_threaded_after_fork() { omp_set_num_threads(1); }

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  pthread_atfork(nullptr, nullptr, &run_single_threaded_after_fork);
  m.doc() = "fastconv CPU kernels (C++17, OpenMP)";
  m.def("output_size", &output_size, py::arg("input_size"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"), py::arg("dilation"),
        py::arg("ceil_mode"), py::arg("pool"),
        "Validated output size of a sliding-window op (explicit per-dim geometry).");
  fastconv::bind_conv(m);
  fastconv::bind_im2col(m);
  fastconv::bind_pool(m);
  fastconv::bind_boxes(m);
  fastconv::bind_roi(m);
  fastconv::bind_matmul(m);
  fastconv::bind_elementwise(m);
  fastconv::bind_batch_norm(m);
  fastconv::bind_optim(m);
  fastconv::bind_peak(m);
  fastconv::bind_host_cache(m);
  m.def("build_info", [] {
    py::dict info;
    info["compiler"] = FASTCONV_COMPILER;
    info["cpu_path"] = fastconv::isa_name(fastconv::cpu_isa());
    info["max_threads"] = omp_get_max_threads();
    info["openmp"] = _OPENMP;
    info["cuda_status"] = FASTCONV_CUDA_STATUS;
    return info;
  }, "Compiler, selected CPU instruction-set path, OpenMP threads and CUDA build status.");
}
