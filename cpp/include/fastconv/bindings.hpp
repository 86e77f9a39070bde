// Each op family binds its own functions; module.cpp only calls these.
#pragma once

#include <pybind11/pybind11.h>

namespace fastconv {
void bind_conv(pybind11::module_& m);
void bind_im2col(pybind11::module_& m);
void bind_pool(pybind11::module_& m);
void bind_boxes(pybind11::module_& m);
void bind_roi(pybind11::module_& m);
void bind_matmul(pybind11::module_& m);
void bind_elementwise(pybind11::module_& m);
void bind_batch_norm(pybind11::module_& m);
void bind_optim(pybind11::module_& m);
void bind_peak(pybind11::module_& m);
void bind_host_cache(pybind11::module_& m);
}  // namespace fastconv
