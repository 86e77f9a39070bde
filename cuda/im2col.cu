// CUDA im2col kernels: not yet written.
#include "fastconv_cuda/bindings.hpp"
#include "fastconv_cuda/common.hpp"

namespace fastconv::cuda {

void bind_im2col(py::module_& m) { (void)m; }

}  // namespace fastconv::cuda
