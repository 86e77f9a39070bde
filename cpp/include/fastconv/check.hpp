// Precondition checks for the C++ side. Every bound function re-checks what the Python
// layer already validated, so the module is safe when called directly: a violated
// precondition throws, pybind11 turns std::invalid_argument into ValueError, and
// TypeError is raised through pybind11::type_error.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <cstdint>

namespace fastconv {

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  detail::append(os, parts...);
  return os.str();
}

// "(2, 3, 4)": shapes and per-dim parameters in messages read as Python tuples.
inline std::string tuple_str(const std::vector<int64_t>& v) {
  std::ostringstream os;
  os << '(';
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  if (v.size() == 1) os << ',';
  os << ')';
  return os.str();
}

}  // namespace fastconv

#define FC_CHECK(cond, ...)                                                 \
  do {                                                                      \
    if (!(cond)) throw std::invalid_argument(::fastconv::concat(__VA_ARGS__)); \
  } while (0)
