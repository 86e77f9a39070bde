"""Box IoU, box format conversion, non-max suppression and Soft-NMS on NumPy or CuPy arrays.

Boxes are (N, 4) float32/float64 arrays of (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2.
Argument kinds, dtypes and shapes are checked here; the values (finite, not inverted,
no NaN score) are checked by the C++ kernels in the same pass that reads them. Box ops have
no window geometry to prepare, so unlike the other families they call the kernels of the
arrays' device directly, without a plan.

Every op also takes CuPy arrays (or any `__cuda_array_interface__` object) and then runs on
the GPU, on CuPy's current stream, returning CuPy arrays. GPU `box_iou`/`box_convert` read one
validation flag back (one stream synchronization); GPU `nms`/`batched_nms` read the result
length back (one synchronization) unless `fixed_size=True`, which never synchronizes;
GPU `soft_nms` reads its result length back.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from .._backend import array_module, device_of, empty_like, float_arrays, index_array, kernels
from .._geometry import as_int, as_real

FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_boxes(op: str, name: str, boxes: np.ndarray) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: {name} must have shape (N, 4), got shape {boxes.shape}")


def _check_length(op: str, name: str, a: np.ndarray, boxes: np.ndarray) -> None:
    if a.ndim != 1 or a.shape[0] != boxes.shape[0]:
        raise ValueError(f"{op}: {name} shape {a.shape} must be (N,) for boxes shape "
                         f"{boxes.shape}")


def _iou_threshold(op: str, value: object) -> float:
    thr = as_real(op, "iou_threshold", value)
    if not math.isfinite(thr):
        raise ValueError(f"{op}: iou_threshold must be finite, got {thr}")
    return thr


def _score_threshold(op: str, value: object) -> Optional[float]:
    if value is None:
        return None
    thr = as_real(op, "score_threshold", value)
    if math.isnan(thr):
        raise ValueError(f"{op}: score_threshold must not be NaN")
    return thr


def _max_output(op: str, value: object) -> Optional[int]:
    if value is None:
        return None
    value = as_int(value, f"{op}: max_output")
    if value < 0:
        raise ValueError(f"{op}: max_output must be >= 0, got {value}")
    # Anything past int64 keeps every box anyway.
    return min(value, 2**63 - 1)


def _fixed_size(op: str, boxes, max_output: Optional[int]):
    """Empty (indices (M,), count (1,)) int64 arrays of `boxes`' kind for a fixed-size result."""
    if max_output is None:
        raise ValueError(f"{op}: fixed_size=True needs max_output (the result's length)")
    xp = array_module(boxes)
    return xp.empty(max_output, dtype=np.int64), xp.empty(1, dtype=np.int64)


def _pad(keep: np.ndarray, indices: np.ndarray, count: np.ndarray) -> tuple:
    """A CPU result in the fixed-size form: indices padded with -1, count its length."""
    indices.fill(-1)
    indices[:len(keep)] = keep
    count[0] = len(keep)
    return indices, count


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4): an (N, M) array.

    The IoU of two empty (zero-area) boxes is 0.
    """
    a, b = float_arrays("box_iou", a=a, b=b)
    _check_boxes("box_iou", "a", a)
    _check_boxes("box_iou", "b", b)
    out = empty_like(a, (a.shape[0], b.shape[0]), a.dtype)
    kernels(device_of(a)).box_iou(a, b, out)
    return out


def box_convert(boxes: np.ndarray, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Convert boxes (N, 4) between "xyxy", "xywh" (corner, size) and "cxcywh" (center, size).

    Widths and heights must be non-negative; every value must be finite.
    """
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise ValueError(f"box_convert: {name} must be one of {', '.join(map(repr, FORMATS))},"
                             f" got {fmt!r}")
    (boxes,) = float_arrays("box_convert", boxes=boxes)
    _check_boxes("box_convert", "boxes", boxes)
    out = empty_like(boxes, boxes.shape, boxes.dtype)
    kernels(device_of(boxes)).box_convert(boxes, out, in_fmt, out_fmt)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5, *,
        score_threshold: Optional[float] = None,
        max_output: Optional[int] = None, fixed_size: bool = False):
    """Greedy non-max suppression; returns int64 indices of the kept boxes.

    Boxes with score <= score_threshold are dropped; then the highest-scoring box is kept
    and every remaining box with IoU >= iou_threshold with it is discarded, repeatedly.
    The result is ordered by decreasing score, equal scores lower index first, and holds
    at most max_output indices. Thresholds are rounded to the boxes' dtype first.

    On GPU arrays the whole computation stays on the device; returning the variable-length
    result reads its length back (one stream synchronization). With `fixed_size=True`
    (needs max_output = M) it returns `(indices, count)` instead: indices (M,) int64 padded
    with -1 and count (1,) int64, both arrays of the input's kind; on the GPU nothing
    synchronizes, and invalid values (non-finite or inverted boxes, NaN scores) give
    count -1 and all indices -1 rather than an exception.
    """
    thr = _iou_threshold("nms", iou_threshold)
    st = _score_threshold("nms", score_threshold)
    mo = _max_output("nms", max_output)
    boxes, scores = float_arrays("nms", boxes=boxes, scores=scores)
    _check_boxes("nms", "boxes", boxes)
    _check_length("nms", "scores", scores, boxes)
    if not fixed_size:
        return kernels(device_of(boxes)).nms(boxes, scores, thr, st, mo)
    keep, count = _fixed_size("nms", boxes, mo)
    if device_of(boxes) == "cpu":
        return _pad(kernels("cpu").nms(boxes, scores, thr, st, mo), keep, count)
    kernels(device_of(boxes)).nms_fixed(boxes, scores, thr, st, mo, keep, count)
    return keep, count


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                iou_threshold: float = 0.5, *, score_threshold: Optional[float] = None,
                max_output: Optional[int] = None, fixed_size: bool = False):
    """`nms` applied independently to the boxes of each label (any integer dtype).

    Returns int64 indices ordered by decreasing score (equal scores: lower index first),
    at most max_output of them over all labels. GPU arrays and `fixed_size` as in `nms`
    (labels then must be a GPU integer array too).
    """
    op = "batched_nms"
    thr = _iou_threshold(op, iou_threshold)
    st = _score_threshold(op, score_threshold)
    mo = _max_output(op, max_output)
    boxes, scores = float_arrays(op, boxes=boxes, scores=scores)
    if device_of(boxes) == "cuda":
        labels = index_array(op, "labels", labels, like=boxes)
    elif not isinstance(labels, np.ndarray):
        raise TypeError(f"{op}: labels must be a numpy.ndarray, got {type(labels).__name__}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{op}: labels must have an integer dtype, got {labels.dtype} "
                        f"(shape {labels.shape})")
    _check_boxes(op, "boxes", boxes)
    _check_length(op, "scores", scores, boxes)
    _check_length(op, "labels", labels, boxes)
    labels = array_module(boxes).ascontiguousarray(labels, dtype=np.int64)
    if not fixed_size:
        return kernels(device_of(boxes)).batched_nms(boxes, scores, labels, thr, st, mo)
    keep, count = _fixed_size(op, boxes, mo)
    if device_of(boxes) == "cpu":
        return _pad(kernels("cpu").batched_nms(boxes, scores, labels, thr, st, mo), keep, count)
    kernels(device_of(boxes)).batched_nms_fixed(boxes, scores, labels, thr, st, mo, keep, count)
    return keep, count


def soft_nms(boxes: np.ndarray, scores: np.ndarray, *, sigma: float = 0.5,
             method: str = "gaussian", iou_threshold: float = 0.3,
             score_threshold: Optional[float] = 0.001,
             max_output: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Soft-NMS (Bodla et al. 2017): returns (int64 indices, rescored scores), both in the
    order kept, which is decreasing rescored score.

    Repeatedly keeps the box of highest current score (equal scores: lower index first) and
    multiplies the score of every remaining box by a weight of its IoU with the kept box:
    method "linear": 1 - IoU where IoU >= iou_threshold (else 1); "gaussian":
    exp(-IoU^2 / sigma). Boxes scoring below score_threshold, initially or after a
    rescoring, are dropped (None keeps every box); at most max_output are kept. Scores
    must be finite. IoUs are in the boxes' dtype and thresholds are rounded to it; weights
    are computed in float64 and rescored scores rounded back to the scores' dtype.
    """
    op = "soft_nms"
    if not isinstance(method, str) or method not in ("gaussian", "linear"):
        raise ValueError(f"{op}: method must be 'gaussian' or 'linear', got {method!r}")
    sig = as_real(op, "sigma", sigma)
    if not (math.isfinite(sig) and sig > 0):
        raise ValueError(f"{op}: sigma must be finite and positive, got {sig}")
    thr = _iou_threshold(op, iou_threshold)
    st = _score_threshold(op, score_threshold)
    mo = _max_output(op, max_output)
    boxes, scores = float_arrays(op, boxes=boxes, scores=scores)
    _check_boxes(op, "boxes", boxes)
    _check_length(op, "scores", scores, boxes)
    return kernels(device_of(boxes)).soft_nms(boxes, scores, sig, method, thr, st, mo)
