// Binds the arithmetic-peak probe of the selected instruction-set path.
#include <pybind11/pybind11.h>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/peak.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

void bind_peak(py::module_& m) {
  m.def("measure_fma_peak", [](double seconds) {
    FC_CHECK(seconds > 0 && seconds <= 60, "measure_fma_peak: seconds must be in (0, 60], got ",
             seconds);
    const auto measure = for_cpu_path(avx512::fma_peak_gflops, avx2::fma_peak_gflops,
                                      baseline::fma_peak_gflops);
    py::gil_scoped_release release;
    return measure(seconds);
  }, py::arg("seconds") = 0.2,
        "float32 GFLOP/s of a register-only multiply-add loop on all OpenMP threads, using the "
        "selected instruction-set path, run for about `seconds`.");
}

}  // namespace fastconv
