#include "fastconv/bindings.hpp"

namespace fastconv {
void bind_pool(pybind11::module_&) {}
}  // namespace fastconv
