// Argument unpacking shared by every binding: each array is checked for dtype,
// C-contiguity and (for outputs) writability, with messages that name the argument.
// Nothing is converted silently; the Python layer makes contiguous copies beforehand.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "fastconv/check.hpp"

namespace fastconv {

namespace py = pybind11;

enum class DType { kFloat32, kFloat64 };

inline std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

inline DType float_dtype(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return DType::kFloat32;
  if (a.dtype().is(py::dtype::of<double>())) return DType::kFloat64;
  throw py::type_error(concat(name, " must be float32 or float64, got ", dtype_name(a)));
}

template <typename T>
const char* dtype_label() {
  return sizeof(T) == 4 ? "float32" : "float64";
}

template <typename T>
void check_array(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(concat(name, " must have dtype ", dtype_label<T>(),
                                " like the other arguments, got ", dtype_name(a)));
  }
  FC_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous (shape ",
           tuple_str(shape_of(a)), ")");
}

template <typename T>
const T* input_ptr(const py::array& a, const char* name) {
  check_array<T>(a, name);
  return static_cast<const T*>(a.data());
}

template <typename T>
T* output_ptr(py::array& a, const char* name) {
  check_array<T>(a, name);
  FC_CHECK(a.writeable(), name, " must be writeable");
  return static_cast<T*>(a.mutable_data());
}

inline void check_ndim(const py::array& a, int64_t ndim, const char* name) {
  FC_CHECK(a.ndim() == ndim, name, " must have ", ndim, " dims, got shape ",
           tuple_str(shape_of(a)));
}

inline void check_shape(const py::array& a, const std::vector<int64_t>& expected,
                        const char* name) {
  FC_CHECK(shape_of(a) == expected, name, " has shape ", tuple_str(shape_of(a)), ", expected ",
           tuple_str(expected));
}

// Calls f with a value of type float or double according to `dtype`.
// An int64 index array (C-contiguous; writeable for outputs), as max-pool and RoI-pool
// indices are.
inline const int64_t* index_input(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<int64_t>())) {
    throw py::type_error(concat(name, " must have dtype int64, got ", dtype_name(a)));
  }
  FC_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous (shape ",
           tuple_str(shape_of(a)), ")");
  return static_cast<const int64_t*>(a.data());
}

inline int64_t* index_output(py::array& a, const char* name) {
  index_input(a, name);
  FC_CHECK(a.writeable(), name, " must be writeable");
  return static_cast<int64_t*>(a.mutable_data());
}

template <typename F>
decltype(auto) dispatch_float(DType dtype, F&& f) {
  if (dtype == DType::kFloat32) return f(float{});
  return f(double{});
}

// f(std::bool_constant<a>{}, std::bool_constant<b>{}): two run-time flags as template
// arguments, so that kernels branch on them at compile time.
template <typename F>
void dispatch_flags(bool a, bool b, F&& f) {
  if (a && b) {
    f(std::true_type{}, std::true_type{});
  } else if (a) {
    f(std::true_type{}, std::false_type{});
  } else if (b) {
    f(std::false_type{}, std::true_type{});
  } else {
    f(std::false_type{}, std::false_type{});
  }
}

}  // namespace fastconv
