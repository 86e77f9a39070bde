"""A region-based detector in the manner of Fast R-CNN: the image goes through the
backbone once, every proposed region is cut out of the feature map with RoI align, and a
small fully connected head classifies each region (the K classes or background) and
regresses its box as deltas from the proposal.

Proposals: the simple method of this module is a fixed set of anchor boxes over the
feature map (every cell of the stride-s map, each of A anchor shapes, centred on the cell):
no learned proposal network (Faster R-CNN's RPN), no segmentation (R-CNN's selective
search). The head learns to reject the anchors that hold no object and to move the others
onto the objects.

* `anchor_boxes` lays the anchors out; `encode_deltas` / `decode_deltas` are Fast R-CNN's
  box parameterization; `assign_proposals` labels proposals by IoU with the ground truth,
  `sample_proposals` picks a training minibatch of them.
* `fast_rcnn_loss`: cross-entropy over the sampled regions + smooth L1 on the deltas of
  the regions that hold an object.
* `FastRCNN`: the network (backbone, RoI align, head), its training targets and `detect`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import nn
from ..nn import functional as F
from ..ops.boxes import batched_nms, box_iou
from ..tensor import Tensor, float_tensor
from ._inputs import anchor_shapes, detect_in_batches, host_array, positive_int

__all__ = ["FastRCNN", "anchor_boxes", "assign_proposals", "decode_deltas", "encode_deltas",
           "fast_rcnn_loss", "sample_proposals"]

DELTA_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# torchvision's clamp of dw, dh before exp: a box at most 1000/16 times its proposal.
MAX_LOG_SCALE = float(np.log(1000.0 / 16))


def anchor_boxes(grid_size: Tuple[int, int], shapes: Any) -> np.ndarray:
    """Anchors over a feature map of grid_size (H, W) cells: (H * W * A, 4) xyxy fractions
    of the image, every cell's A shapes (w, h) (fractions of the image) centred on the
    cell's centre ((j + 0.5) / W, (i + 0.5) / H); ordered cell by cell (row-major), the
    shapes of one cell together."""
    op = "anchor_boxes"
    h, w = (positive_int(op, "grid_size", n) for n in grid_size)
    a = anchor_shapes(op, shapes)
    cy, cx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    centres = np.stack((cx.ravel(), cy.ravel()), axis=1)[:, None, :]     # (H W, 1, 2)
    half = a[None, :, :] / 2                                              # (1, A, 2)
    return np.concatenate((centres - half, centres + half), axis=2).reshape(-1, 4)


def encode_deltas(proposals: Any, boxes: Any,
                  weights: Sequence[float] = DELTA_WEIGHTS) -> np.ndarray:
    """Fast R-CNN's regression targets (R, 4) of boxes (R, 4) relative to proposals (R, 4),
    both xyxy with positive sides: (wx (gx - px) / pw, wy (gy - py) / ph, ww log(gw / pw),
    wh log(gh / ph)) from centres (x, y) and sizes (w, h); weights (wx, wy, ww, wh) as
    torchvision's Fast R-CNN (10, 10, 5, 5) scale the targets to about unit size."""
    p = _xywh("encode_deltas", "proposals", proposals)
    g = _xywh("encode_deltas", "boxes", boxes)
    if p.shape != g.shape:
        raise ValueError(f"encode_deltas: proposals {p.shape} and boxes {g.shape} must pair "
                         "up row by row")
    if ((p[:, 2:] <= 0) | (g[:, 2:] <= 0)).any():
        raise ValueError("encode_deltas: proposals and boxes need positive widths and heights")
    wx, wy, ww, wh = weights
    return np.stack((wx * (g[:, 0] - p[:, 0]) / p[:, 2], wy * (g[:, 1] - p[:, 1]) / p[:, 3],
                     ww * np.log(g[:, 2] / p[:, 2]), wh * np.log(g[:, 3] / p[:, 3])), axis=1)


def decode_deltas(proposals: Any, deltas: Any,
                  weights: Sequence[float] = DELTA_WEIGHTS) -> np.ndarray:
    """The inverse of `encode_deltas`: boxes (R, 4) xyxy from proposals (R, 4) and deltas
    (R, 4); the size deltas are clamped at log(1000 / 16) (as torchvision) so that a wild
    prediction cannot overflow."""
    p = _xywh("decode_deltas", "proposals", proposals)
    d = host_array("decode_deltas", "deltas", deltas).reshape(-1, 4)
    if d.shape != p.shape:
        raise ValueError(f"decode_deltas: deltas {d.shape} must pair up with proposals "
                         f"{p.shape}")
    wx, wy, ww, wh = weights
    cx = p[:, 0] + d[:, 0] / wx * p[:, 2]
    cy = p[:, 1] + d[:, 1] / wy * p[:, 3]
    w = p[:, 2] * np.exp(np.minimum(d[:, 2] / ww, MAX_LOG_SCALE))
    h = p[:, 3] * np.exp(np.minimum(d[:, 3] / wh, MAX_LOG_SCALE))
    return np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), axis=1)


def assign_proposals(proposals: Any, boxes: Any, labels: Any, num_classes: int, *,
                     positive_iou: float = 0.5, negative_iou: float = 0.5,
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Training labels of proposals (R, 4) against one image's ground truth boxes (M, 4),
    labels (M,): (classes (R,) int64, matched (R,) int64). A proposal whose best IoU with
    a ground-truth box is >= positive_iou takes that box's class (matched = its index); one
    below negative_iou is background (class num_classes, matched -1); one in between is
    ignored (class -1). Without ground truth every proposal is background."""
    op = "assign_proposals"
    p = _plain_boxes(op, "proposals", proposals)
    g = _plain_boxes(op, "boxes", boxes)
    lab = host_array(op, "labels", labels, kind="i").reshape(-1)
    if len(lab) != len(g):
        raise ValueError(f"{op}: labels shape {lab.shape} must be ({len(g)},) for boxes "
                         f"shape {g.shape}")
    if not 0 <= negative_iou <= positive_iou <= 1:
        raise ValueError(f"{op}: need 0 <= negative_iou <= positive_iou <= 1, got "
                         f"{negative_iou}, {positive_iou}")
    classes = np.full(len(p), num_classes, dtype=np.int64)
    matched = np.full(len(p), -1, dtype=np.int64)
    if len(g) == 0 or len(p) == 0:
        return classes, matched
    iou = box_iou(p, g)
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(len(p)), best]
    positive = best_iou >= positive_iou
    classes[positive] = lab[best[positive]]
    matched[positive] = best[positive]
    classes[~positive & (best_iou >= negative_iou)] = -1
    return classes, matched


def sample_proposals(classes: Any, num_samples: int, positive_fraction: float,
                     rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """Indices of a training minibatch of proposals: up to positive_fraction x
    num_samples of those holding an object (classes in [0, num_classes)), the rest
    background (class num_classes), each drawn without replacement by `rng`; ignored
    proposals (class -1) never. Fewer come back when there are not enough."""
    c = host_array("sample_proposals", "classes", classes, kind="i").reshape(-1)
    positives = np.nonzero((c >= 0) & (c < num_classes))[0]
    negatives = np.nonzero(c == num_classes)[0]
    n_pos = min(len(positives), int(num_samples * positive_fraction))
    n_neg = min(len(negatives), num_samples - n_pos)
    return np.concatenate((rng.choice(positives, n_pos, replace=False),
                           rng.choice(negatives, n_neg, replace=False)))


def fast_rcnn_loss(class_logits: Any, box_deltas: Any, classes: Any, targets: Any, *,
                   beta: float = 1.0) -> Tensor:
    """Fast R-CNN's multi-task loss over R sampled regions (a scalar Tensor):

        mean_r cross_entropy(class_logits_r, classes_r)
        + sum_{r with an object} smooth_l1(box_deltas[r, classes_r] - targets_r, beta) / R

    class_logits (R, K + 1) (class K = background), box_deltas (R, K, 4) (one box per
    class, as Fast R-CNN), classes (R,) ints in [0, K], targets (R, 4) the `encode_deltas`
    of each region's ground truth (rows of background regions are ignored). The box term
    is divided by all R regions, not the positives (torchvision's normalization), so
    background regions dilute it as in the paper's lambda = 1 with balanced sampling.
    """
    op = "fast_rcnn_loss"
    logits = float_tensor(f"{op}: class_logits", class_logits)
    deltas = float_tensor(f"{op}: box_deltas", box_deltas)
    r, k1 = logits.shape if logits.ndim == 2 else (None, None)
    if r is None or deltas.shape != (r, k1 - 1, 4):
        raise ValueError(f"{op}: class_logits must be (R, K + 1) and box_deltas (R, K, 4), "
                         f"got {logits.shape} and {deltas.shape}")
    c = host_array(op, "classes", classes, kind="i").reshape(-1)
    t = host_array(op, "targets", targets)
    if c.shape != (r,) or t.shape != (r, 4):
        raise ValueError(f"{op}: classes must be ({r},) and targets ({r}, 4), got {c.shape} "
                         f"and {t.shape}")
    if ((c < 0) | (c > k1 - 1)).any():
        raise ValueError(f"{op}: classes must be in [0, {k1 - 1}] ({k1 - 1} = background)")
    loss = F.cross_entropy(logits, c)
    positive = np.nonzero(c < k1 - 1)[0]
    if len(positive):
        picked = deltas[positive, c[positive]]
        box = F.smooth_l1_loss(picked, Tensor(t[positive].astype(deltas.dtype)),
                               reduction="sum", beta=beta)
        loss = loss + box / max(r, 1)
    return loss


class FastRCNN(nn.Module):
    """A Fast R-CNN style detector of fastconv.nn layers for images (N, in_channels, H, W):

        backbone: space-to-depth `block` x `block`, then per width in `channels` a 3x3 conv,
            batch norm and LeakyReLU(0.1), with a 2x2 max pool after all but the last;
            feature stride = block x 2 ** (len(channels) - 1)
        RoI align of each region to roi_size x roi_size (sampling ratio 2, aligned)
        head: Linear -> ReLU -> Linear -> ReLU (hidden units), then a classifier over
            K + 1 classes (K = background) and a box regressor of K x 4 deltas

    Proposals are the fixed `anchor_boxes` of `shapes` (A, 2) (w, h fractions of the image)
    over the feature map; forward(images, rois) takes one (R_i, 4) array of xyxy fractions
    per image and returns (class_logits (R, K + 1), box_deltas (R, K, 4)) over the images'
    regions in order. `detect` runs every anchor through the head. `shapes` and
    `image_size` are buffers (saved in the state dict).
    """

    def __init__(self, num_classes: int, shapes: Any, *,
                 channels: Sequence[int] = (32, 64, 128), block: int = 4, roi_size: int = 4,
                 hidden: int = 256, in_channels: int = 3,
                 image_size: Tuple[int, int] = (128, 128)) -> None:
        super().__init__()
        op = "FastRCNN"
        self.num_classes = positive_int(op, "num_classes", num_classes)
        self.block = positive_int(op, "block", block)
        self.roi_size = positive_int(op, "roi_size", roi_size)
        widths = [positive_int(op, "channels", c) for c in channels]
        layers: List[nn.Module] = []
        previous = self.block ** 2 * positive_int(op, "in_channels", in_channels)
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.LeakyReLU(0.1)]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.features = nn.Sequential(*layers)
        self.stride = self.block * 2 ** (len(widths) - 1)
        self.roi_align = nn.RoIAlign((self.roi_size, self.roi_size), 1.0 / self.stride,
                                     sampling_ratio=2, aligned=True)
        self.head = nn.Sequential(nn.Flatten(),
                                  nn.Linear(previous * self.roi_size ** 2, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, self.num_classes + 1)
        self.regressor = nn.Linear(hidden, 4 * self.num_classes)
        self.register_buffer("shapes", anchor_shapes(op, shapes).astype(np.float32))
        self.register_buffer("image_size", np.array(image_size, dtype=np.int64))

    def proposals(self) -> np.ndarray:
        """The anchor proposals of one image of image_size: (H/stride * W/stride * A, 4)."""
        h, w = (int(n) // self.stride for n in self.image_size)
        return anchor_boxes((h, w), self.shapes)

    def forward(self, images: Tensor, rois: Sequence[Any]) -> Tuple[Tensor, Tensor]:
        n, _, h, w = images.shape
        if len(rois) != n:
            raise ValueError(f"FastRCNN: rois must hold one (R_i, 4) array per image, got "
                             f"{len(rois)} for {n} images")
        k = self.block
        blocks = images.reshape(n, -1, h // k, k, w // k, k).permute(0, 1, 3, 5, 2, 4)
        features = self.features(blocks.reshape(n, -1, h // k, w // k))
        scale = np.array([w, h, w, h], dtype=np.float64)
        regions = self.roi_align(features, [np.asarray(r, dtype=np.float64).reshape(-1, 4)
                                            * scale for r in rois])
        hidden = self.head(regions)
        deltas = self.regressor(hidden)
        return self.classifier(hidden), deltas.reshape(deltas.shape[0], self.num_classes, 4)

    def training_targets(self, boxes: Sequence[Any], labels: Sequence[Any],
                         rng: np.random.Generator, *, samples_per_image: int = 64,
                         positive_fraction: float = 0.25, positive_iou: float = 0.5,
                         negative_iou: float = 0.5,
                         ) -> Tuple[List[np.ndarray], np.ndarray, np.ndarray]:
        """Per image a sampled minibatch of regions (the anchors plus the ground-truth boxes
        themselves, as Fast R-CNN adds them), labelled by `assign_proposals` and drawn by
        `sample_proposals`: (rois per image, classes (R,), delta targets (R, 4))."""
        anchors = self.proposals()
        rois, classes, targets = [], [], []
        for g, lab in zip(boxes, labels):
            g = np.asarray(g, dtype=np.float64).reshape(-1, 4)
            candidates = np.concatenate((anchors, g))
            cls, matched = assign_proposals(candidates, g, lab, self.num_classes,
                                            positive_iou=positive_iou,
                                            negative_iou=negative_iou)
            pick = sample_proposals(cls, samples_per_image, positive_fraction, rng,
                                    self.num_classes)
            t = np.zeros((len(pick), 4))
            hit = matched[pick] >= 0
            # Degenerate ground truth (a 1-pixel sliver) keeps a positive size for the log.
            gt = g[matched[pick][hit]]
            t[hit] = encode_deltas(candidates[pick][hit], _at_least(gt, 1e-3))
            rois.append(candidates[pick])
            classes.append(cls[pick])
            targets.append(t)
        return rois, np.concatenate(classes), np.concatenate(targets)

    def detect(self, images: Any, *, score_threshold: float = 0.05,
               iou_threshold: float = 0.5, max_output: Optional[int] = 100,
               batch_size: int = 16) -> List[Dict[str, np.ndarray]]:
        """Detections of images (N, C, H, W): every anchor through the head (eval mode, no
        graph), each class's box decoded from its deltas and scored by its softmax
        probability; scores <= score_threshold dropped, non-max suppression per class,
        boxes clipped to the image. One dict per image: "boxes", "scores", "labels"."""
        anchors = self.proposals()
        k = self.num_classes
        repeated = np.repeat(anchors, k, axis=0)
        labels = np.tile(np.arange(k), len(anchors))

        def per_batch(batch: np.ndarray) -> List[Dict[str, np.ndarray]]:
            logits, deltas = self(Tensor(batch), [anchors] * len(batch))
            probs = F.softmax(logits, dim=1).numpy()[:, :k].reshape(len(batch), -1)
            out = []
            for p, d in zip(probs, deltas.numpy().reshape(len(batch), -1, 4)):
                keep = np.nonzero(p > score_threshold)[0]
                boxes = np.clip(decode_deltas(repeated[keep], d[keep]), 0, 1)
                order = batched_nms(boxes, p[keep].astype(np.float64), labels[keep],
                                    iou_threshold, max_output=max_output)
                out.append({"boxes": boxes[order], "scores": p[keep][order],
                            "labels": labels[keep][order]})
            return out
        return detect_in_batches(self, images, batch_size, per_batch)


def _xywh(op: str, name: str, boxes: Any) -> np.ndarray:
    b = _plain_boxes(op, name, boxes)
    return np.concatenate(((b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]), axis=1)


def _plain_boxes(op: str, name: str, boxes: Any) -> np.ndarray:
    """(R, 4) finite xyxy boxes, not inverted (anchors may leave the image)."""
    b = host_array(op, name, boxes)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{op}: {name} must have shape (R, 4), got shape {b.shape}")
    if not np.isfinite(b).all() or ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise ValueError(f"{op}: {name} must be finite with x1 <= x2 and y1 <= y2")
    return b


def _at_least(boxes: np.ndarray, size: float) -> np.ndarray:
    """Boxes grown about their centres to sides of at least `size`."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum(boxes[:, 2:] - boxes[:, :2], size) / 2
    return np.concatenate((centre - half, centre + half), axis=1)
