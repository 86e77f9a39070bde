// fastconv._cuda: the GPU kernels. Registration lives with each op family; this file adds
// what the Python layer needs to decide whether the GPU can be used at all.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "fastconv_cuda/binding.hpp"

namespace py = pybind11;

namespace {

// (device count, reason when 0). Never throws: no driver or no device is an answer, not an
// error, so `import fastconv` and fastconv.cuda.is_available() work on any machine.
std::pair<int, std::string> device_status() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky status so later calls start clean
    return {0, std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)};
  }
  if (count == 0) return {0, "no CUDA device found"};
  return {count, ""};
}

py::dict build_info() {
  py::dict info;
  info["cuda_runtime"] = CUDART_VERSION;  // e.g. 13000 for 13.0, linked statically
  info["nvcc"] = FASTCONV_NVCC_VERSION;
  info["architectures"] = FASTCONV_CUDA_ARCHITECTURES;
  int driver = 0;
  info["driver"] = cudaDriverGetVersion(&driver) == cudaSuccess ? driver : 0;
  const auto [count, reason] = device_status();
  py::list devices;
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) continue;
    py::dict dev;
    dev["name"] = std::string(prop.name);
    dev["compute_capability"] = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    dev["memory_bytes"] = static_cast<int64_t>(prop.totalGlobalMem);
    dev["multiprocessors"] = prop.multiProcessorCount;
    devices.append(dev);
  }
  info["devices"] = devices;
  info["device_status"] = reason;
  return info;
}

// FASTCONV_CUDA_SYNC's check after each call: waits for `stream` and raises RuntimeError
// naming `op` if anything on it failed (an illegal address inside a kernel, say).
void check_stream(uintptr_t stream, const std::string& op) {
  cudaError_t err = cudaSuccess;
  {
    py::gil_scoped_release release;
    err = cudaStreamSynchronize(fastconv::cuda::as_stream(stream));
  }
  if (err == cudaSuccess) err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(op + ": a CUDA kernel failed: " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + "); the CUDA context may be unusable "
                             "from here on");
  }
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastconv CUDA kernels (device pointers, the caller's stream)";
  fastconv::cuda::bind_conv(m);
  fastconv::cuda::bind_im2col(m);
  fastconv::cuda::bind_pool(m);
  fastconv::cuda::bind_boxes(m);
  fastconv::cuda::bind_roi(m);
  m.def("device_status", &device_status,
        "(number of CUDA devices, reason when there are none); never raises.");
  m.def("check_stream", &check_stream, py::arg("stream"), py::arg("op"),
        "Synchronize `stream` and raise RuntimeError naming `op` if a kernel on it failed.");
  m.def("build_info", &build_info,
        "CUDA runtime and nvcc versions, target architectures, driver and devices.");
}
