"""Argument checks the detection modules share: boxes as fractions of the image, class
labels, anchors, grid sizes and loss reductions."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from .._backend import is_gpu
from ..tensor import Tensor, no_grad

REDUCTIONS = ("none", "sum", "mean")


def host_array(op: str, name: str, value: Any, kind: str = "f") -> np.ndarray:
    """`value` as a NumPy array of real numbers (float64 for kind "f", int64 for "i")."""
    if isinstance(value, Tensor):
        value = value.data
    if is_gpu(value):
        value = value.get()
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{op}: {name} must be an array, got {type(value).__name__} "
                        f"({error})") from None
    # An empty list comes out float64: no value in it can be wrong.
    if (a.dtype.kind not in ("iu" if kind == "i" else "iuf") or a.dtype == bool) \
            and not (a.size == 0 and a.dtype.kind == "f"):
        what = "integers" if kind == "i" else "real numbers"
        raise TypeError(f"{op}: {name} must hold {what}, got dtype {a.dtype} (shape "
                        f"{a.shape})")
    return a.astype(np.int64 if kind == "i" else np.float64)


def fraction_boxes(op: str, boxes: Any, name: str = "boxes") -> np.ndarray:
    """(M, 4) float64 xyxy boxes inside the image: 0 <= x1 <= x2 <= 1, 0 <= y1 <= y2 <= 1."""
    b = host_array(op, name, boxes)
    if b.size == 0 and b.ndim <= 2:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{op}: {name} must have shape (M, 4) (x1, y1, x2, y2), got shape "
                         f"{b.shape}")
    if not np.isfinite(b).all():
        raise ValueError(f"{op}: {name} must be finite (shape {b.shape})")
    outside = np.nonzero(((b < 0) | (b > 1)).any(axis=1))[0]
    if outside.size:
        i = int(outside[0])
        raise ValueError(f"{op}: {name}[{i}] = {b[i].tolist()} leaves the image: boxes are "
                         "fractions of the image in [0, 1]")
    inverted = np.nonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[0]
    if inverted.size:
        i = int(inverted[0])
        raise ValueError(f"{op}: {name}[{i}] = {b[i].tolist()} is inverted: need x1 <= x2 "
                         "and y1 <= y2")
    return b


def class_labels(op: str, labels: Any, count: int, num_classes: int,
                 allow_background: bool = False) -> np.ndarray:
    """(count,) int64 labels in [0, num_classes) (or -1, "no object", when allowed)."""
    a = host_array(op, "labels", labels, kind="i")
    if a.size == 0 and count == 0:
        a = a.reshape(0)
    if a.shape != (count,):
        raise ValueError(f"{op}: labels must have shape ({count},) for {count} boxes, got "
                         f"shape {a.shape}")
    low = -1 if allow_background else 0
    bad = np.nonzero((a < low) | (a >= num_classes))[0]
    if bad.size:
        allowed = f"[0, {num_classes})" + (" or -1 (no object)" if allow_background else "")
        raise ValueError(f"{op}: labels[{int(bad[0])}] = {int(a[bad[0]])} is not in "
                         f"{allowed}")
    return a


def positive_int(op: str, name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value}")
    return int(value)


def grid(op: str, grid_size: Any) -> Tuple[int, int]:
    """(S_h, S_w) from an int or a pair of ints, each >= 1."""
    pair = grid_size if isinstance(grid_size, (tuple, list)) else (grid_size, grid_size)
    if len(pair) != 2:
        raise ValueError(f"{op}: grid_size must be an int or (S_h, S_w), got {grid_size!r}")
    return positive_int(op, "grid_size", pair[0]), positive_int(op, "grid_size", pair[1])


def anchor_shapes(op: str, anchors: Any) -> np.ndarray:
    """(B, 2) float64 anchor (w, h), positive and finite."""
    a = host_array(op, "anchors", anchors)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 1:
        raise ValueError(f"{op}: anchors must have shape (B, 2) (w, h) with B >= 1, got "
                         f"shape {a.shape}")
    if not (np.isfinite(a).all() and (a > 0).all()):
        raise ValueError(f"{op}: anchors must be positive and finite, got {a.tolist()}")
    return a


def check_reduction(op: str, value: Any) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {value!r}")
    return value


def reduce_rows(loss: Tensor, how: str) -> Tensor:
    """Per-row losses reduced: as they are ("none"), summed, or summed / rows ("mean")."""
    if how == "none":
        return loss
    total = loss.sum()
    return total if how == "sum" else total / max(loss.data.size, 1)


Detections = List[Dict[str, np.ndarray]]


def detect_in_batches(model: Any, images: Any, batch_size: int,
                      per_batch: Callable[[np.ndarray], Detections]) -> Detections:
    """The detections per_batch(batch) gives for each batch of `batch_size` host images,
    concatenated: `model` in eval mode without a graph, its training mode restored after."""
    was_training = model.training
    model.eval()
    out: Detections = []
    try:
        with no_grad():
            for start in range(0, len(images), batch_size):
                out += per_batch(np.asarray(images[start:start + batch_size]))
    finally:
        model.train(was_training)
    return out
