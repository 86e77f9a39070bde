#include "fastconv/bindings.hpp"

namespace fastconv {
void bind_boxes(pybind11::module_&) {}
}  // namespace fastconv
