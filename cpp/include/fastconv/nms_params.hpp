// The scalar arguments of nms / batched_nms and their checks, shared by the CPU and CUDA
// modules so both reject the same values with the same messages.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>

#include "fastconv/check.hpp"

namespace fastconv {

struct NmsParams {
  double iou_threshold;                   // suppress at IoU >= this
  std::optional<double> score_threshold;  // drop boxes scoring <= this
  std::optional<int64_t> max_output;      // keep at most this many
};

inline void check_nms_params(const char* op, const NmsParams& p) {
  FC_CHECK(std::isfinite(p.iou_threshold), op, ": iou_threshold must be finite, got ",
           p.iou_threshold);
  FC_CHECK(!p.score_threshold || !std::isnan(*p.score_threshold), op,
           ": score_threshold must not be NaN");
  FC_CHECK(!p.max_output || *p.max_output >= 0, op, ": max_output must be >= 0, got ",
           p.max_output.value_or(0));
}

}  // namespace fastconv
