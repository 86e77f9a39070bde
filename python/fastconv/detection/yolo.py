"""YOLO as the course puts it together: a grid of S_h x S_w cells, B anchor boxes per cell,
and per (cell, anchor) the vector [pc, bx, by, bh, bw, c_1 .. c_K].

* `yolo_encode` builds the target y (S_h, S_w, B, 5 + K) of one image: each object goes
  to the cell of its midpoint and to the anchor whose shape has the highest IoU with it.
* `yolo_decode` turns y (or a network's prediction in that form) back into boxes: score =
  pc x class probability, drop score <= 0.6, non-max suppression per class at IoU 0.5.
* `yolo_activate` converts a network's raw head output into that form; `yolo_loss` is the
  loss the YOLO example trains the raw output with (its terms are documented there).
* `kmeans_anchors` picks the anchor shapes from training boxes (k-means, IoU distance);
  `YOLO` is the small network of the example (fastconv.nn layers, head (S, S, B, 5 + K)).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import nn
from .._backend import array_module, float_arrays
from ..nn import functional as F
from ..ops.boxes import batched_nms
from ..tensor import Tensor, float_tensor
from ._inputs import (anchor_shapes, check_reduction, class_labels, detect_in_batches,
                      fraction_boxes, grid, host_array, positive_int, reduce_rows)

__all__ = ["YOLO", "kmeans_anchors", "shape_iou", "yolo_activate", "yolo_decode",
           "yolo_encode", "yolo_loss"]


def shape_iou(wh: Any, anchors: Any) -> np.ndarray:
    """IoU of box shapes with anchor shapes, both centred on one point: (M, 2) (w, h) and
    (B, 2) -> (M, B), min(w) min(h) / (w h + w_a h_a - min(w) min(h)); 0 when both are
    empty."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], a[None, :, 0]) * np.minimum(wh[:, None, 1], a[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (a[:, 0] * a[:, 1])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def yolo_encode(boxes: Any, labels: Any, *, grid_size: Any, anchors: Any,
                num_classes: int) -> np.ndarray:
    """The YOLO target of one image: y (S_h, S_w, B, 5 + num_classes) float64.

    boxes (M, 4) xyxy as fractions of the image in [0, 1]; labels (M,) ints in
    [0, num_classes); grid_size an int or (S_h, S_w); anchors (B, 2) (w, h) as fractions
    of the image. Each box goes to the cell (i, j) holding its midpoint (row i along y,
    column j along x; a midpoint on the far edge goes to the last cell) and to the anchor
    whose shape has the highest IoU with the box's (`shape_iou`; ties to the lower index).
    There y[i, j, b] = [1, bx, by, bh, bw, one-hot label]: bx, by the midpoint's offset
    inside the cell in [0, 1) (1 only on the far edge), bh, bw the box's height and width
    in cell units (may exceed 1). Every other entry is 0. A second box on a taken (cell,
    anchor) raises ValueError naming both boxes.
    """
    op = "yolo_encode"
    k = positive_int(op, "num_classes", num_classes)
    s_h, s_w = grid(op, grid_size)
    a = anchor_shapes(op, anchors)
    b = fraction_boxes(op, boxes)
    lab = class_labels(op, labels, len(b), k)
    y = np.zeros((s_h, s_w, len(a), 5 + k))
    cx, cy = (b[:, 0] + b[:, 2]) / 2 * s_w, (b[:, 1] + b[:, 3]) / 2 * s_h
    col = np.minimum(np.floor(cx), s_w - 1).astype(np.int64)
    row = np.minimum(np.floor(cy), s_h - 1).astype(np.int64)
    best = shape_iou(b[:, 2:] - b[:, :2], a).argmax(axis=1)
    owner: Dict[Tuple[int, int, int], int] = {}
    for m, key in enumerate(zip(row.tolist(), col.tolist(), best.tolist())):
        if key in owner:
            first = owner[key]
            raise ValueError(f"{op}: boxes {first} {b[first].tolist()} and {m} "
                             f"{b[m].tolist()} both go to cell {key[:2]}, anchor {key[2]} "
                             "(use more anchors or a finer grid)")
        owner[key] = m
    y[row, col, best, 0] = 1.0
    y[row, col, best, 1] = cx - col
    y[row, col, best, 2] = cy - row
    y[row, col, best, 3] = (b[:, 3] - b[:, 1]) * s_h
    y[row, col, best, 4] = (b[:, 2] - b[:, 0]) * s_w
    y[row, col, best, 5 + lab] = 1.0
    return y


def yolo_decode(y: Any, *, anchors: Optional[Any] = None, score_threshold: float = 0.6,
                iou_threshold: float = 0.5, max_output: Optional[int] = None,
                ) -> Tuple[Any, Any, Any]:
    """Detections of one image from y (S_h, S_w, B, 5 + K) in `yolo_encode`'s form (a
    network's output converted by `yolo_activate`): (boxes (D, 4) xyxy fractions of the
    image, scores (D,), labels (D,) int64), NumPy or CuPy as y.

    Computed in y's dtype (float32 or float64): per (cell, anchor) score = pc x the largest
    class value and label = its index; boxes with score <= score_threshold are dropped (the
    course's pc <= 0.6), then non-max suppression runs per class (batched_nms: discard
    IoU >= iou_threshold with a kept box), at most max_output kept, in decreasing score
    order. Boxes are not clipped to the image. `anchors` (B, 2), when given, only checks B.
    decode(encode(boxes)) gives the boxes back (of classes whose boxes overlap less than
    iou_threshold).
    """
    op = "yolo_decode"
    (data,) = float_arrays(op, y=y.data if isinstance(y, Tensor) else y)
    if data.ndim != 4 or data.shape[-1] < 6:
        raise ValueError(f"{op}: y must be (S_h, S_w, B, 5 + K) with K >= 1, got shape "
                         f"{data.shape}")
    if anchors is not None and len(anchor_shapes(op, anchors)) != data.shape[2]:
        raise ValueError(f"{op}: y has {data.shape[2]} anchors per cell (shape {data.shape}) "
                         f"but anchors has {len(anchor_shapes(op, anchors))}")
    xp = array_module(data)
    s_h, s_w = data.shape[:2]
    if bool((data[..., 3:5] < 0).any()):
        raise ValueError(f"{op}: y[..., 3:5] (bh, bw) must be >= 0: convert a raw head "
                         "output with yolo_activate first")
    classes = data[..., 5:]
    scores = (data[..., 0] * classes.max(axis=-1)).reshape(-1)
    labels = classes.argmax(axis=-1).reshape(-1).astype(np.int64)
    rows = xp.arange(s_h, dtype=data.dtype).reshape(s_h, 1, 1)
    cols = xp.arange(s_w, dtype=data.dtype).reshape(1, s_w, 1)
    cx = (cols + data[..., 1]) / s_w
    cy = (rows + data[..., 2]) / s_h
    half_h, half_w = data[..., 3] / (2 * s_h), data[..., 4] / (2 * s_w)
    boxes = xp.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), axis=-1)
    boxes = boxes.reshape(-1, 4).astype(data.dtype, copy=False)
    keep = xp.nonzero(scores > score_threshold)[0]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = batched_nms(boxes, scores, labels, iou_threshold, max_output=max_output)
    return boxes[order], scores[order], labels[order]


def yolo_activate(raw: Any, anchors: Any) -> Tensor:
    """A YOLO head's raw output t (..., S_h, S_w, B, 5 + K) in `yolo_encode`'s form
    (differentiable): pc = sigmoid(t_0), (bx, by) = sigmoid(t_1, t_2), (bh, bw) = (anchor
    height x S_h, anchor width x S_w) x exp(t_3, t_4) in cell units, and the class values
    softmax(t_5..). anchors (B, 2) (w, h) fractions of the image."""
    op = "yolo_activate"
    t = float_tensor(f"{op}: raw", raw)
    a = anchor_shapes(op, anchors)
    _check_head(op, t, a)
    s_h, s_w = t.shape[-4:-2]
    scale = Tensor((a[:, ::-1] * np.array([s_h, s_w])).astype(t.dtype))  # (B, 2): h, w
    xp = array_module(t.data)
    if not isinstance(t.data, np.ndarray):
        scale = Tensor(xp.asarray(scale.data))
    # Exponents past ~80 overflow float32 and mean nothing for a box; clamp them first.
    parts = [t[..., 0:3].sigmoid(), t[..., 3:5].clamp(max=30.0).exp() * scale,
             t[..., 5:].softmax(-1)]
    return F.concat(parts, dim=-1)


def yolo_loss(y_hat: Any, y: Any, anchors: Any, *, lambda_coord: float = 5.0,
              lambda_noobj: float = 0.5, reduction: str = "mean") -> Tensor:
    """The loss the YOLO example trains with (YOLOv2's terms, YOLOv3's logistic
    objectness), on the raw head output t = y_hat (..., S_h, S_w, B, 5 + K) and the target
    y of `yolo_encode` (same shape; a constant). Per image, summed over every (cell,
    anchor); obj = y[..., 0] (1 where an object was assigned), noobj = 1 - obj:

        obj   * softplus(-t_0)                               objectness, BCE towards 1
        noobj * lambda_noobj * softplus(t_0)                 BCE towards 0
        obj   * lambda_coord * [(sigmoid(t_1) - bx)^2 + (sigmoid(t_2) - by)^2]
        obj   * lambda_coord * [(t_3 - log(bh / a_h))^2 + (t_4 - log(bw / a_w))^2]
        obj   * -sum_c y_c log softmax(t_5..)_c              class cross-entropy

    a_h, a_w: the anchor's height and width in cell units (anchors (B, 2) (w, h) are
    fractions of the image); box sizes below 1e-9 cells count as 1e-9. The objectness terms
    use the logistic loss instead of the course's squared error so that a confident wrong
    pc still gets a gradient; sizes are compared in log space, which weighs a small box's
    error as much as a big one's. reduction: "none" (one loss per image, shape
    y_hat.shape[:-4]), "sum", or "mean" (sum / images). The gradient is computed with the
    loss, in closed form.
    """
    op = "yolo_loss"
    how = check_reduction(op, reduction)
    t = float_tensor(f"{op}: y_hat", y_hat)
    a = anchor_shapes(op, anchors)
    _check_head(op, t, a)
    target = host_array(op, "y", y)
    if target.shape != t.shape:
        raise ValueError(f"{op}: y shape {target.shape} must equal y_hat shape {t.shape}")
    obj = target[..., 0]
    if not np.isin(obj, (0, 1)).all():
        raise ValueError(f"{op}: y[..., 0] (pc) must be 0 or 1")
    for name, value in (("lambda_coord", lambda_coord), ("lambda_noobj", lambda_noobj)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
            raise ValueError(f"{op}: {name} must be a finite number >= 0, got {value!r}")
    raw = np.asarray(t.numpy(), dtype=np.float64)
    s_h, s_w = t.shape[-4:-2]
    cells = a[:, ::-1] * np.array([s_h, s_w])  # (B, 2): anchor (h, w) in cells
    size = np.log(np.maximum(target[..., 3:5], 1e-9) / cells)
    noobj = 1.0 - obj
    t0 = raw[..., 0]
    p0 = _sigmoid(t0)
    xy = _sigmoid(raw[..., 1:3])
    log_p = raw[..., 5:] - raw[..., 5:].max(axis=-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=-1, keepdims=True))
    d_xy = (xy - target[..., 1:3]) * obj[..., None]
    d_wh = (raw[..., 3:5] - size) * obj[..., None]
    cell_loss = (obj * _softplus(-t0) + lambda_noobj * noobj * _softplus(t0)
                 + lambda_coord * ((d_xy ** 2).sum(-1) + (d_wh ** 2).sum(-1))
                 - obj * (target[..., 5:] * log_p).sum(-1))
    grad = np.empty_like(raw)
    grad[..., 0] = obj * (p0 - 1) + lambda_noobj * noobj * p0
    grad[..., 1:3] = 2 * lambda_coord * d_xy * xy * (1 - xy)
    grad[..., 3:5] = 2 * lambda_coord * d_wh
    grad[..., 5:] = obj[..., None] * (np.exp(log_p) * target[..., 5:].sum(-1, keepdims=True)
                                      - target[..., 5:])
    per_image = cell_loss.sum(axis=(-1, -2, -3))
    xp = array_module(t.data)

    def backward(g: Any) -> tuple:
        g = np.asarray(g.get() if hasattr(g, "get") else g, dtype=np.float64)
        full = grad * g.reshape(g.shape + (1, 1, 1, 1))
        return (xp.asarray(full.astype(t.dtype)),)

    loss = Tensor._make(xp.asarray(per_image.astype(t.dtype)), [t], backward, "yolo_loss")
    return reduce_rows(loss, how)


def kmeans_anchors(wh: Any, k: int, *, seed: int = 0, iterations: int = 300) -> np.ndarray:
    """k anchor shapes (k, 2) (w, h) by k-means on box shapes with the distance
    1 - `shape_iou` (YOLOv2's dimension clusters), sorted by area.

    wh (M, 2) box widths and heights (any unit; the anchors come in the same), M >= k,
    positive. Centres start by k-means++ seeding (a generator seeded with `seed`) and move
    to the mean shape of their boxes until no box changes cluster (at most `iterations`
    rounds); a cluster left empty keeps its centre.
    """
    op = "kmeans_anchors"
    k = positive_int(op, "k", k)
    w = host_array(op, "wh", wh)
    if w.ndim != 2 or w.shape[1] != 2:
        raise ValueError(f"{op}: wh must have shape (M, 2) (w, h), got shape {w.shape}")
    if len(w) < k:
        raise ValueError(f"{op}: need at least k = {k} boxes, got {len(w)}")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError(f"{op}: box widths and heights must be positive and finite")
    rng = np.random.default_rng(seed)
    centres = w[[rng.integers(len(w))]]
    while len(centres) < k:
        d = 1 - shape_iou(w, centres).max(axis=1)
        p = d ** 2
        pick = rng.choice(len(w), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(w))
        centres = np.concatenate((centres, w[[pick]]))
    assign = None
    for _ in range(positive_int(op, "iterations", iterations)):
        new = shape_iou(w, centres).argmax(axis=1)
        if assign is not None and (new == assign).all():
            break
        assign = new
        for c in range(k):
            if (assign == c).any():
                centres[c] = w[assign == c].mean(axis=0)
    return centres[np.argsort(centres[:, 0] * centres[:, 1], kind="stable")]


class YOLO(nn.Module):
    """A small YOLO network of fastconv.nn layers for images (N, in_channels, H, W):

        space-to-depth 2x2 (the image's 2x2 pixel blocks become channels: the full
            resolution reaches the first convolution at a quarter of the positions)
        per width c in `channels`: 3x3 conv, batch norm, LeakyReLU(0.1), then 2x2 max pool
            after all but the last `unpooled` of them
        a 1x1 conv to B x (5 + K) outputs

    forward(x) gives the raw head output (N, S_h, S_w, B, 5 + K), S = H / stride with
    stride = 2 ** (1 + pooled stages); train it with `yolo_loss`, read it with
    `yolo_activate` + `yolo_decode` (`detect` does both). anchors (B, 2) (w, h) are
    fractions of the image and a buffer of the model (saved in its state dict, as is
    image_size, the (H, W) it was made for, and the layout `from_state_dict` needs).
    """

    def __init__(self, num_classes: int, anchors: Any, *,
                 channels: Sequence[int] = (32, 64, 64, 128, 128), unpooled: int = 2,
                 block: int = 2, batch_norm: bool = True, in_channels: int = 3,
                 image_size: Tuple[int, int] = (128, 128)) -> None:
        super().__init__()
        op = "YOLO"
        self.num_classes = positive_int(op, "num_classes", num_classes)
        a = anchor_shapes(op, anchors)
        widths = [positive_int(op, "channels", c) for c in channels]
        if not 0 <= unpooled <= len(widths):
            raise ValueError(f"{op}: unpooled must be in [0, {len(widths)}], got {unpooled}")
        layers: List[nn.Module] = []
        self.block = positive_int(op, "block", block)
        previous = self.block ** 2 * positive_int(op, "in_channels", in_channels)
        for index, width in enumerate(widths):
            layers.append(nn.Conv2d(previous, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.1))
            if index < len(widths) - unpooled:
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(previous, len(a) * (5 + self.num_classes), 1)
        self.stride = self.block * 2 ** (len(widths) - unpooled)
        self.register_buffer("anchors", a.astype(np.float32))
        self.register_buffer("image_size", np.array(image_size, dtype=np.int64))
        # What the state dict cannot show otherwise (where the pools are), so that
        # `from_state_dict` rebuilds the network from a saved file alone.
        self.register_buffer("architecture", np.array(
            [in_channels, self.block, unpooled, int(bool(batch_norm))], dtype=np.int64))

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any]) -> "YOLO":
        """The network a `state_dict()` (or a file read by nn.load) was saved from, with
        its weights loaded."""
        for key in ("anchors", "image_size", "architecture", "head.weight"):
            if key not in state:
                raise ValueError(f"YOLO.from_state_dict: no {key!r} in the state dict (not a "
                                 "fastconv.detection.YOLO checkpoint?)")
        in_channels, block, unpooled, batch_norm = (int(v) for v in state["architecture"])
        anchors = np.asarray(state["anchors"], dtype=np.float64)
        outputs = int(np.asarray(state["head.weight"]).shape[0])
        widths = [int(np.asarray(v).shape[0]) for k, v in state.items()
                  if k.startswith("features.") and k.endswith(".weight")
                  and np.asarray(v).ndim == 4]
        model = cls(outputs // len(anchors) - 5, anchors, channels=widths, unpooled=unpooled,
                    block=block, batch_norm=bool(batch_norm), in_channels=in_channels,
                    image_size=tuple(int(v) for v in state["image_size"]))
        model.load_state_dict(state)
        return model

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        if h % self.stride or w % self.stride:
            raise ValueError(f"YOLO: image sides {h}x{w} must be multiples of the stride "
                             f"{self.stride}")
        k = self.block
        blocks = x.reshape(n, c, h // k, k, w // k, k).permute(0, 1, 3, 5, 2, 4)
        out = self.head(self.features(blocks.reshape(n, k * k * c, h // k, w // k)))
        s_h, s_w = out.shape[2:]
        return out.reshape(n, self.num_anchors, 5 + self.num_classes, s_h, s_w) \
            .permute(0, 3, 4, 1, 2)

    def detect(self, images: Any, *, score_threshold: float = 0.6,
               iou_threshold: float = 0.5, max_output: Optional[int] = None,
               batch_size: int = 64) -> List[Dict[str, np.ndarray]]:
        """Detections of images (N, C, H, W) (float, as trained), one dict per image with
        "boxes" (D, 4) xyxy fractions clipped to the image, "scores" (D,), "labels" (D,):
        the network in eval mode without a graph, then yolo_activate and yolo_decode."""
        def per_batch(batch: np.ndarray) -> List[Dict[str, np.ndarray]]:
            out = []
            for one in yolo_activate(self(Tensor(batch)), self.anchors).numpy():
                boxes, scores, labels = yolo_decode(one, score_threshold=score_threshold,
                                                    iou_threshold=iou_threshold,
                                                    max_output=max_output)
                out.append({"boxes": np.clip(boxes, 0, 1), "scores": scores,
                            "labels": labels})
            return out
        return detect_in_batches(self, images, batch_size, per_batch)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, anchors={self.num_anchors}, "
                f"stride={self.stride}")


def _check_head(op: str, t: Tensor, anchors: np.ndarray) -> None:
    if t.ndim < 4 or t.shape[-1] < 6 or t.shape[-2] != len(anchors):
        raise ValueError(f"{op}: the head output must be (..., S_h, S_w, B, 5 + K) with "
                         f"B = {len(anchors)} anchors and K >= 1, got shape {t.shape}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow."""
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)
