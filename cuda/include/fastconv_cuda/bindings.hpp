// Each CUDA op family binds its own functions; module.cpp only calls these.
#pragma once

#include <pybind11/pybind11.h>

namespace fastconv::cuda {
void bind_conv(pybind11::module_& m);
void bind_im2col(pybind11::module_& m);
void bind_pool(pybind11::module_& m);
void bind_boxes(pybind11::module_& m);
}  // namespace fastconv::cuda
