// fastconv._cpu: the CPU kernels. Registration lives with each op family.
#include <omp.h>
#include <pybind11/pybind11.h>

#include "fastconv/bindings.hpp"
#include "fastconv/cpu_features.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "fastconv CPU kernels (C++17, OpenMP)";
  fastconv::bind_geometry(m);
  fastconv::bind_conv(m);
  fastconv::bind_im2col(m);
  fastconv::bind_pool(m);
  fastconv::bind_boxes(m);
  fastconv::bind_matmul(m);
  fastconv::bind_elementwise(m);
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
