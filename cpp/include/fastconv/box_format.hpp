// The box formats of box_convert, parsed once for the CPU and CUDA modules alike.
#pragma once

#include <stdexcept>
#include <string>

#include "fastconv/check.hpp"

namespace fastconv {

enum class Fmt { kXyxy, kXywh, kCxcywh };

inline Fmt parse_fmt(const std::string& s, const char* name) {
  if (s == "xyxy") return Fmt::kXyxy;
  if (s == "xywh") return Fmt::kXywh;
  if (s == "cxcywh") return Fmt::kCxcywh;
  throw std::invalid_argument(concat("box_convert: ", name, " must be one of 'xyxy', 'xywh', "
                                     "'cxcywh', got '", s, "'"));
}

inline const char* fmt_name(Fmt f) {
  return f == Fmt::kXyxy ? "xyxy" : f == Fmt::kXywh ? "xywh" : "cxcywh";
}

}  // namespace fastconv
