// The scalar arguments of nms / batched_nms / soft_nms and their checks, shared by the CPU
// and CUDA modules so both reject the same values with the same messages.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

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

// Soft-NMS (Bodla et al. 2017): repeatedly keep the box of highest current score (equal
// scores: lower index first) and multiply the score of every remaining box by a weight of
// its IoU with the kept one -- linear: 1 - iou where iou >= iou_threshold (else 1);
// gaussian: exp(-iou^2 / sigma). A box scoring below score_threshold, from the start or
// after a rescoring, is dropped. IoUs are computed in the box dtype (pair_iou), thresholds
// are rounded to it, weights are computed in double from the IoU and each rescored score
// is rounded back to the score dtype; a weight of exactly 1 (no overlap) leaves the score
// as it is.
enum class SoftNmsMethod { kLinear, kGaussian };

struct SoftNmsParams {
  SoftNmsMethod method;
  double sigma;
  double iou_threshold;                   // linear: rescore at IoU >= this
  std::optional<double> score_threshold;  // drop boxes scoring < this
  std::optional<int64_t> max_output;      // keep at most this many
};

inline SoftNmsMethod parse_soft_nms_method(const std::string& method) {
  if (method == "linear") return SoftNmsMethod::kLinear;
  FC_CHECK(method == "gaussian", "soft_nms: method must be 'gaussian' or 'linear', got '", method,
           "'");
  return SoftNmsMethod::kGaussian;
}

inline void check_soft_nms_params(const SoftNmsParams& p) {
  FC_CHECK(std::isfinite(p.sigma) && p.sigma > 0, "soft_nms: sigma must be finite and positive, "
           "got ", p.sigma);
  check_nms_params("soft_nms", NmsParams{p.iou_threshold, p.score_threshold, p.max_output});
}

}  // namespace fastconv
