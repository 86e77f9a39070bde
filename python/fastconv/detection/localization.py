"""Classification with localization and landmark detection, as the course defines them.

One object per image: the target y = [pc, bx, by, bh, bw, c_1 .. c_K] (is there an object;
its midpoint, height and width as fractions of the image; one-hot class) and the loss that
counts only pc when there is no object. Landmarks: K (x, y) points as fractions of the
image, a head that predicts them and their squared-error loss.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..nn import Linear, Module
from ..tensor import Tensor, float_tensor
from ._inputs import (check_reduction, class_labels, fraction_boxes, positive_int,
                      reduce_rows)

__all__ = ["LandmarkHead", "landmark_loss", "localization_loss", "localization_target"]


def localization_target(boxes: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Targets of classification with localization: y (M, 5 + num_classes) float64.

    boxes (M, 4) xyxy fractions of the image in [0, 1]; labels (M,) ints in
    [0, num_classes) or -1 ("no object"). Row i is [1, bx, by, bh, bw, one-hot label]: the
    midpoint ((x1 + x2) / 2, (y1 + y2) / 2), the height y2 - y1 and the width x2 - x1; a
    row with label -1 is all 0 (its box is still checked).
    """
    op = "localization_target"
    k = positive_int(op, "num_classes", num_classes)
    b = fraction_boxes(op, boxes)
    lab = class_labels(op, labels, len(b), k, allow_background=True)
    y = np.zeros((len(b), 5 + k))
    obj = lab >= 0
    y[obj, 0] = 1.0
    y[obj, 1] = (b[obj, 0] + b[obj, 2]) / 2
    y[obj, 2] = (b[obj, 1] + b[obj, 3]) / 2
    y[obj, 3] = b[obj, 3] - b[obj, 1]
    y[obj, 4] = b[obj, 2] - b[obj, 0]
    y[np.nonzero(obj)[0], 5 + lab[obj]] = 1.0
    return y


def localization_loss(y_hat: Any, y: Any, reduction: str = "mean") -> Tensor:
    """The course's loss of classification with localization, per row (..., 5 + K):

        sum_i (y_hat_i - y_i)^2   when y[..., 0] == 1 (an object: every entry counts)
        (y_hat_0 - y_0)^2         when y[..., 0] == 0 (no object: only pc counts)

    y_hat (Tensor or array) and y (the target, a constant) share their shape; pc must be
    0 or 1. reduction "none" gives the losses of shape y.shape[:-1], "sum" their sum,
    "mean" the sum over the number of rows.
    """
    op = "localization_loss"
    how = check_reduction(op, reduction)
    pred = float_tensor(f"{op}: y_hat", y_hat)
    target = _target(op, y, pred)
    if pred.ndim < 1 or pred.shape[-1] < 6:
        raise ValueError(f"{op}: y_hat must be (..., 5 + K) with K >= 1 classes, got shape "
                         f"{pred.shape}")
    pc = target.data[..., 0]
    if not np.isin(pc, (0, 1)).all():
        raise ValueError(f"{op}: y[..., 0] (pc) must be 0 or 1")
    # Entry 0 always counts; the others only where there is an object.
    mask = np.broadcast_to(pc[..., None], target.shape).copy()
    mask[..., 0] = 1
    diff = pred - target
    return reduce_rows((diff * diff * Tensor(mask.astype(pred.dtype))).sum(-1), how)


def landmark_loss(y_hat: Any, y: Any, visible: Optional[Any] = None,
                  reduction: str = "mean") -> Tensor:
    """Squared-error loss of K landmarks per row: y_hat and y (..., K, 2) as (x, y)
    fractions of the image; per row sum_k visible_k ((x_hat_k - x_k)^2 + (y_hat_k -
    y_k)^2). visible (..., K) of 0/1 (default all 1) leaves out landmarks the image does
    not show. reduction "none" gives y.shape[:-2], "sum" the sum, "mean" the sum over rows.
    """
    op = "landmark_loss"
    how = check_reduction(op, reduction)
    pred = float_tensor(f"{op}: y_hat", y_hat)
    target = _target(op, y, pred)
    if pred.ndim < 2 or pred.shape[-1] != 2:
        raise ValueError(f"{op}: y_hat must be (..., K, 2) landmarks, got shape {pred.shape}")
    diff = pred - target
    per_point = (diff * diff).sum(-1)
    if visible is not None:
        v = np.asarray(visible.data if isinstance(visible, Tensor) else visible)
        if v.shape != pred.shape[:-1]:
            raise ValueError(f"{op}: visible must have shape {pred.shape[:-1]} for y_hat "
                             f"shape {pred.shape}, got {v.shape}")
        if not np.isin(v, (0, 1)).all():
            raise ValueError(f"{op}: visible must hold 0 or 1")
        per_point = per_point * Tensor(v.astype(pred.dtype))
    return reduce_rows(per_point.sum(-1), how)


class LandmarkHead(Module):
    """Landmark regression on a feature vector: x (N, in_features) -> (N, K, 2), the (x, y)
    of each of the K = num_points landmarks as fractions of the image (a Linear to 2K
    outputs, squashed into (0, 1) by a sigmoid). Train it with `landmark_loss`."""

    def __init__(self, in_features: int, num_points: int) -> None:
        super().__init__()
        self.num_points = positive_int("LandmarkHead", "num_points", num_points)
        self.fc = Linear(in_features, 2 * self.num_points)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x).sigmoid().reshape(x.shape[0], self.num_points, 2)

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}"


def _target(op: str, y: Any, pred: Tensor) -> Tensor:
    """The target as a constant Tensor of pred's dtype and shape."""
    data = y.data if isinstance(y, Tensor) else np.asarray(y)
    if data.shape != pred.shape:
        raise ValueError(f"{op}: y shape {tuple(data.shape)} must equal y_hat shape "
                         f"{pred.shape}")
    return Tensor(data.astype(pred.dtype))
