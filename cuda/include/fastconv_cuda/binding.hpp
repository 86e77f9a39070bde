// The Python side of the CUDA module: device arrays read from __cuda_array_interface__ (so
// any producer works: CuPy, PyTorch, Numba), dtype and shape checks, temporary memory from
// the caller's allocator, and the registration function of each op family.
//
// Conventions: every bound function takes the arguments of its fastconv._cpu twin, with
// arrays as objects exposing __cuda_array_interface__, followed by the caller's context:
// `alloc` (nbytes -> GPU array, for temporary memory; see Workspace) and `stream` (an
// integer cudaStream_t). Kernels run on that stream; nothing synchronizes unless the
// result's size lives on the device and the function's contract says so. Geometry arrives as
// plain integers and is re-validated with the CPU module's code (fastconv/geometry.hpp).
#pragma once

#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastconv/check.hpp"
#include "fastconv_cuda/launch.cuh"

namespace fastconv::cuda {

namespace py = pybind11;
using Dims = std::vector<int64_t>;

enum class ScalarType { kFloat32, kFloat64, kInt64, kOther };

// One argument, as described by its __cuda_array_interface__ (v2 or later), checked to be
// C-contiguous and to live on the current device.
struct DeviceArray {
  void* data = nullptr;
  Dims shape;
  ScalarType type = ScalarType::kOther;
  std::string typestr;  // e.g. "<f4", for messages
  bool readonly = false;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
};

inline ScalarType scalar_type(const std::string& typestr) {
  // '<' little-endian or '|' not applicable; CUDA devices are little-endian.
  if (typestr == "<f4") return ScalarType::kFloat32;
  if (typestr == "<f8") return ScalarType::kFloat64;
  if (typestr == "<i8") return ScalarType::kInt64;
  return ScalarType::kOther;
}

inline int64_t itemsize(const std::string& typestr) {
  return typestr.size() >= 3 ? std::stoll(typestr.substr(2)) : 0;
}

inline DeviceArray device_array(py::handle obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__")) {
    throw py::type_error(concat(name, " must be a GPU array (an object with "
                                "__cuda_array_interface__), got ",
                                py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>()));
  }
  const py::dict cai = obj.attr("__cuda_array_interface__");
  DeviceArray a;
  a.shape = cai["shape"].cast<Dims>();
  a.typestr = cai["typestr"].cast<std::string>();
  a.type = scalar_type(a.typestr);
  const auto data = cai["data"].cast<std::pair<uintptr_t, bool>>();
  a.data = reinterpret_cast<void*>(data.first);
  a.readonly = data.second;
  FC_CHECK(!cai.contains("mask") || cai["mask"].is_none(), name, " must not be a masked array");
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    // C-contiguous means each stride equals the product of the later extents times the item
    // size; dims of extent 1 may carry any stride.
    const Dims strides = cai["strides"].cast<Dims>();
    int64_t expected = itemsize(a.typestr);
    for (int64_t d = static_cast<int64_t>(a.shape.size()) - 1; d >= 0; --d) {
      FC_CHECK(a.shape[d] == 1 || strides[d] == expected, name, " must be C-contiguous (shape ",
               tuple_str(a.shape), ", strides ", tuple_str(strides), ")");
      expected *= a.shape[d];
    }
  }
  if (a.data != nullptr) {
    cudaPointerAttributes attr{};
    FC_CUDA_CHECK(cudaPointerGetAttributes(&attr, a.data));
    int current = 0;
    FC_CUDA_CHECK(cudaGetDevice(&current));
    FC_CHECK(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged, name,
             " must be in device memory");
    FC_CHECK(attr.device == current, name, " is on device ", attr.device,
             " but the current device is ", current, "; run the op under that device");
  }
  return a;
}

inline const char* type_label(ScalarType t) {
  switch (t) {
    case ScalarType::kFloat32: return "float32";
    case ScalarType::kFloat64: return "float64";
    case ScalarType::kInt64: return "int64";
    default: return "another dtype";
  }
}

template <typename T>
constexpr ScalarType scalar_type_of() {
  if constexpr (std::is_same_v<T, float>) return ScalarType::kFloat32;
  if constexpr (std::is_same_v<T, double>) return ScalarType::kFloat64;
  return ScalarType::kInt64;
}

template <typename T>
void check_type(const DeviceArray& a, const char* name) {
  if (a.type != scalar_type_of<T>()) {
    throw py::type_error(concat(name, " must have dtype ", type_label(scalar_type_of<T>()),
                                " like the other arguments, got ", a.typestr));
  }
}

template <typename T>
const T* input_ptr(const DeviceArray& a, const char* name) {
  check_type<T>(a, name);
  return static_cast<const T*>(a.data);
}

template <typename T>
T* output_ptr(const DeviceArray& a, const char* name) {
  check_type<T>(a, name);
  FC_CHECK(!a.readonly, name, " must be writeable");
  return static_cast<T*>(a.data);
}

inline void check_shape(const DeviceArray& a, const Dims& expected, const char* name) {
  FC_CHECK(a.shape == expected, name, " has shape ", tuple_str(a.shape), ", expected ",
           tuple_str(expected));
}

// Calls f(float{}) or f(double{}) according to the dtype of `a`.
template <typename F>
decltype(auto) dispatch_float(const DeviceArray& a, const char* name, F&& f) {
  if (a.type == ScalarType::kFloat32) return f(float{});
  if (a.type == ScalarType::kFloat64) return f(double{});
  throw py::type_error(concat(name, " must be float32 or float64, got ", a.typestr));
}

// Temporary device memory from the caller's allocator: `alloc(nbytes)` returns a GPU array
// (CuPy's pool in practice). Blocks live as long as this object; CuPy's pool is
// stream-ordered, so releasing them right after the launches that use them is safe.
class Workspace {
 public:
  explicit Workspace(py::object alloc) : alloc_(std::move(alloc)) {}

  template <typename T>
  T* get(int64_t count) {
    const int64_t bytes = std::max<int64_t>(1, count) * static_cast<int64_t>(sizeof(T));
    py::object block = alloc_(bytes);
    const DeviceArray a = device_array(block, "workspace");
    FC_CHECK(a.numel() * itemsize(a.typestr) >= bytes, "allocator returned ",
             a.numel() * itemsize(a.typestr), " bytes, asked for ", bytes);
    blocks_.push_back(std::move(block));
    return static_cast<T*>(a.data);
  }

 private:
  py::object alloc_;
  std::vector<py::object> blocks_;
};

// One registration function per op family (<family>.cu); module.cpp calls them all.
void bind_conv(py::module_& m);
void bind_im2col(py::module_& m);
void bind_pool(py::module_& m);
void bind_boxes(py::module_& m);
void bind_roi(py::module_& m);

}  // namespace fastconv::cuda
