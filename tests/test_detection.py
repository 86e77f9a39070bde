"""fastconv.detection (localization, landmarks, YOLO, the region-based head),
nn.convolutionalize, fastconv.datasets.shapes, fastconv.data.DataLoader and the functions
the detectors need (F.binary_cross_entropy, F.smooth_l1_loss, F.leaky_relu / LeakyReLU).

Oracles: the seed's worked cases by hand, plain NumPy written from the formulas in
DESIGN.md 3c and the docstrings (loops over cells and windows), central finite
differences, explicit crops through the original classifier, and PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, data, datasets, detection, nn
from fastconv.detection import region
from fastconv.nn import functional as F
from _cases import gradcheck

torch = pytest.importorskip("torch")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def random_boxes(rng: np.random.Generator, n: int, low: float = 0.02,
                 high: float = 0.3) -> np.ndarray:
    """n boxes inside the unit square, sides in [low, high]."""
    size = rng.uniform(low, high, (n, 2))
    corner = rng.random((n, 2)) * (1 - size)
    return np.concatenate((corner, corner + size), axis=1)


# ----------------------------------------------------------------------------- localization


def test_localization_target_is_the_seeds_y() -> None:
    # A car (class 1 of pedestrian, car, motorcycle) in the lower middle, then no object.
    boxes = np.array([[0.3, 0.6, 0.7, 0.8], [0.1, 0.1, 0.2, 0.2]])
    y = detection.localization_target(boxes, [1, -1], 3)
    np.testing.assert_allclose(y[0], [1, 0.5, 0.7, 0.2, 0.4, 0, 1, 0])
    np.testing.assert_array_equal(y[1], np.zeros(8))
    assert y.dtype == np.float64
    assert detection.localization_target(np.zeros((0, 4)), [], 3).shape == (0, 8)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_localization_loss_is_the_seeds_case_formula(reduction: str) -> None:
    rng = np.random.default_rng(1)
    y = detection.localization_target(random_boxes(rng, 6), [0, -1, 2, -1, 1, 0], 3)
    y_hat = rng.random((6, 8))
    expected = np.array([((y_hat[i] - y[i]) ** 2).sum() if y[i, 0] == 1
                         else (y_hat[i, 0] - y[i, 0]) ** 2 for i in range(6)])
    out = detection.localization_loss(Tensor(y_hat), y, reduction=reduction)
    want = {"none": expected, "sum": expected.sum(), "mean": expected.mean()}[reduction]
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)
    assert gradcheck(lambda t: detection.localization_loss(t, y, reduction=reduction),
                     [y_hat]) <= 1
    # Leading dims are rows too: (2, 3, 8) gives (2, 3) losses.
    grid = detection.localization_loss(Tensor(y_hat.reshape(2, 3, 8)), y.reshape(2, 3, 8),
                                       reduction="none")
    np.testing.assert_allclose(grid.numpy(), expected.reshape(2, 3), rtol=1e-12)


def test_landmark_loss_and_head() -> None:
    rng = np.random.default_rng(2)
    y_hat, y = rng.random((4, 64, 2)), rng.random((4, 64, 2))
    visible = (rng.random((4, 64)) < 0.8).astype(np.float64)
    expected = (((y_hat - y) ** 2).sum(-1) * visible).sum(-1)
    out = detection.landmark_loss(Tensor(y_hat), y, visible, reduction="none")
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(detection.landmark_loss(Tensor(y_hat), y).item(),
                               ((y_hat - y) ** 2).sum() / 4, rtol=1e-12)
    assert gradcheck(lambda t: detection.landmark_loss(t, y[:2, :5], visible[:2, :5]),
                     [y_hat[:2, :5]]) <= 1
    fastconv.manual_seed(0)
    head = detection.LandmarkHead(16, 64)
    points = head(Tensor(rng.standard_normal((3, 16)).astype(np.float32)))
    assert points.shape == (3, 64, 2)
    assert ((points.numpy() > 0) & (points.numpy() < 1)).all()
    with pytest.raises(ValueError, match="visible must have shape"):
        detection.landmark_loss(Tensor(y_hat), y, visible[:, :3])


# ----------------------------------------------------------------------------- YOLO encode


def test_yolo_encode_the_seeds_3x3_grid_with_two_anchors() -> None:
    # A pedestrian (tall: anchor 1) and a car (wide: anchor 2) with midpoints in the
    # centre cell; classes pedestrian, car, motorcycle.
    anchors = np.array([[0.1, 0.3], [0.4, 0.15]])
    pedestrian = [0.45, 0.35, 0.55, 0.65]
    car = [0.35, 0.45, 0.65, 0.6]
    y = detection.yolo_encode(np.array([pedestrian, car]), [0, 1], grid_size=3,
                              anchors=anchors, num_classes=3)
    assert y.shape == (3, 3, 2, 8) and y.reshape(3, 3, 16).shape == (3, 3, 16)
    np.testing.assert_allclose(y[1, 1, 0], [1, 0.5, 0.5, 0.9, 0.3, 1, 0, 0])
    np.testing.assert_allclose(y[1, 1, 1], [1, 0.5, 0.575, 0.45, 0.9, 0, 1, 0])
    y[1, 1] = 0
    assert not y.any()


def test_19x19_grid_with_5_anchors_and_3_classes_has_19x19x40_outputs() -> None:
    anchors = detection.kmeans_anchors(random_boxes(np.random.default_rng(3), 40)[:, 2:], 5)
    y = detection.yolo_encode(np.array([[0.2, 0.2, 0.4, 0.5]]), [2], grid_size=19,
                              anchors=anchors, num_classes=3)
    assert y.shape == (19, 19, 5, 8) and y.reshape(19, 19, -1).shape == (19, 19, 40)
    fastconv.manual_seed(0)
    model = detection.YOLO(3, anchors, channels=(8, 8, 8, 8), unpooled=2, block=4,
                           image_size=(304, 304))
    assert model.head.out_channels == 40 and model.stride == 16
    with fastconv.no_grad():
        out = model(Tensor(np.zeros((1, 3, 304, 304), np.float32)))
    assert out.shape == (1, 19, 19, 5, 8)


def encode_by_hand(boxes: np.ndarray, labels: np.ndarray, s: int, anchors: np.ndarray,
                   k: int) -> np.ndarray:
    """yolo_encode from DESIGN.md 3c, one box at a time."""
    y = np.zeros((s, s, len(anchors), 5 + k))
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        i, j = min(int(cy * s), s - 1), min(int(cx * s), s - 1)
        ious = [min(w, aw) * min(h, ah) / (w * h + aw * ah - min(w, aw) * min(h, ah))
                for aw, ah in anchors]
        b = int(np.argmax(ious))
        assert y[i, j, b, 0] == 0
        y[i, j, b, :5] = [1, cx * s - j, cy * s - i, h * s, w * s]
        y[i, j, b, 5 + label] = 1
    return y


def spread_boxes(rng: np.random.Generator, s: int, count: int, k: int):
    """Boxes with midpoints in distinct cells and, per class, IoU < 0.5 with each other."""
    cells = rng.choice(s * s, count, replace=False)
    half = rng.uniform(0.1, 0.45, (count, 2)) / s
    centre = (np.stack((cells % s, cells // s), axis=1) + rng.uniform(0.1, 0.9, (count, 2))) / s
    boxes = np.clip(np.concatenate((centre - half, centre + half), axis=1), 0, 1)
    return boxes, rng.integers(0, k, count)


@pytest.mark.parametrize("seed", range(4))
def test_yolo_encode_equals_the_definition_and_decode_gives_the_boxes_back(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s, k = 7, 4
    anchors = rng.uniform(0.03, 0.15, (3, 2))
    boxes, labels = spread_boxes(rng, s, 12, k)
    y = detection.yolo_encode(boxes, labels, grid_size=s, anchors=anchors, num_classes=k)
    np.testing.assert_allclose(y, encode_by_hand(boxes, labels, s, anchors, k), atol=1e-12)
    for dtype in (np.float64, np.float32):
        got_boxes, scores, got_labels = detection.yolo_decode(y.astype(dtype), anchors=anchors)
        assert got_boxes.dtype == dtype and scores.dtype == dtype
        assert got_labels.dtype == np.int64
        order = np.lexsort(got_boxes.T[::-1])
        want = np.lexsort(boxes.T[::-1])
        np.testing.assert_allclose(got_boxes[order], boxes[want], atol=1e-6)
        np.testing.assert_array_equal(got_labels[order], labels[want])
        np.testing.assert_array_equal(scores, 1)


def test_yolo_encode_midpoints_on_the_far_edge_and_rectangular_grids() -> None:
    anchors = np.array([[0.2, 0.2]])
    y = detection.yolo_encode(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.1, 0.3]]),
                              [0, 1], grid_size=(2, 4), anchors=anchors, num_classes=2)
    assert y.shape == (2, 4, 1, 7)
    np.testing.assert_allclose(y[1, 3, 0], [1, 1, 1, 0, 0, 1, 0])
    np.testing.assert_allclose(y[0, 0, 0], [1, 0.2, 0.3, 0.6, 0.4, 0, 1])
    # Equal scores: the lower (cell, anchor) index first.
    boxes, _, labels = detection.yolo_decode(y, score_threshold=0.5)
    np.testing.assert_allclose(boxes, [[0, 0, 0.1, 0.3], [1, 1, 1, 1]], atol=1e-12)
    np.testing.assert_array_equal(labels, [1, 0])


def test_yolo_encode_names_both_boxes_that_claim_one_cell_and_anchor() -> None:
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.6, 0.6], [0.12, 0.12, 0.28, 0.3]])
    with pytest.raises(ValueError, match=r"boxes 0 \[0\.1, .*\] and 2 \[0\.12, .*cell "
                                         r"\(0, 0\), anchor 0"):
        detection.yolo_encode(boxes, [0, 1, 1], grid_size=3, anchors=[[0.2, 0.2]],
                              num_classes=2)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(boxes=[[0.1, 0.1, 1.2, 0.5]]), ValueError, r"boxes\[0\].*leaves the image"),
    (dict(boxes=[[-0.1, 0.1, 0.2, 0.5]]), ValueError, "leaves the image"),
    (dict(boxes=[[0.5, 0.1, 0.2, 0.5]]), ValueError, r"boxes\[0\].*inverted"),
    (dict(boxes=[[0.1, 0.1, 0.2, np.nan]]), ValueError, "finite"),
    (dict(boxes=[[0.1, 0.1, 0.2]]), ValueError, r"shape \(M, 4\).*\(1, 3\)"),
    (dict(anchors=[0.2, 0.2]), ValueError, r"anchors must have shape \(B, 2\)"),
    (dict(anchors=[[0.2, 0.0]]), ValueError, "anchors must be positive"),
    (dict(grid_size=0), ValueError, "grid_size must be >= 1"),
    (dict(grid_size=(3, 0)), ValueError, "grid_size must be >= 1"),
    (dict(grid_size=2.5), TypeError, "grid_size must be an int"),
    (dict(labels=[3]), ValueError, r"labels\[0\] = 3 is not in \[0, 3\)"),
    (dict(labels=[0, 1]), ValueError, r"labels must have shape \(1,\)"),
    (dict(num_classes=0), ValueError, "num_classes must be >= 1"),
])
def test_yolo_encode_bad_input(kwargs, error, match) -> None:
    args = dict(boxes=[[0.1, 0.1, 0.2, 0.5]], labels=[1], grid_size=3, anchors=[[0.2, 0.2]],
                num_classes=3)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        detection.yolo_encode(args.pop("boxes"), args.pop("labels"), **args)


# ----------------------------------------------------------------------------- YOLO decode


def test_yolo_decode_drops_pc_up_to_0_6_and_suppresses_iou_from_0_5_per_class() -> None:
    y = np.zeros((2, 2, 2, 7))

    def put(i, j, b, pc, box, label):
        x1, y1, x2, y2 = box
        y[i, j, b, :5] = [pc, (x1 + x2) - j, (y1 + y2) - i, 2 * (y2 - y1), 2 * (x2 - x1)]
        y[i, j, b, 5 + label] = 1

    put(0, 0, 0, 0.9, [0.1, 0.1, 0.4, 0.4], 0)   # kept
    put(0, 0, 1, 0.6, [0.0, 0.0, 0.2, 0.2], 1)   # pc = 0.6: dropped
    put(0, 1, 0, 0.61, [0.6, 0.1, 0.9, 0.4], 1)  # just above: kept
    # IoU with the first box exactly 0.5 (same height, 2/3 of the width overlapping
    # [0.1, 0.4] x [0.1, 0.4] -> [0.2, 0.5]: 0.2 / (0.3 + 0.3 - 0.2) = 0.5): suppressed.
    put(1, 0, 0, 0.8, [0.2, 0.1, 0.5, 0.4], 0)
    # The same box in another class: kept (suppression is per class).
    put(1, 0, 1, 0.7, [0.2, 0.1, 0.5, 0.4], 1)
    # IoU 1/3 with the first: kept.
    put(1, 1, 0, 0.65, [0.25, 0.1, 0.55, 0.4], 0)
    boxes, scores, labels = detection.yolo_decode(y)
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.65, 0.61])
    np.testing.assert_array_equal(labels, [0, 1, 0, 1])
    np.testing.assert_allclose(boxes[0], [0.1, 0.1, 0.4, 0.4], atol=1e-12)
    # The score is pc x the class value, not pc alone.
    y[..., 5:] *= 0.5
    assert len(detection.yolo_decode(y)[0]) == 0
    assert len(detection.yolo_decode(y, score_threshold=0.4)[0]) == 1     # 0.45 only
    _, scores, _ = detection.yolo_decode(y, score_threshold=0.3)
    np.testing.assert_allclose(scores, [0.45, 0.35, 0.325, 0.305])
    assert len(detection.yolo_decode(y, score_threshold=0.0, max_output=2)[0]) == 2


def test_yolo_decode_bad_input() -> None:
    with pytest.raises(ValueError, match="S_h, S_w, B, 5"):
        detection.yolo_decode(np.zeros((3, 3, 8)))
    with pytest.raises(ValueError, match="anchors has 3"):
        detection.yolo_decode(np.zeros((3, 3, 2, 8)), anchors=np.ones((3, 2)))
    with pytest.raises(ValueError, match="yolo_activate"):
        detection.yolo_decode(-np.ones((3, 3, 2, 8)))
    with pytest.raises(TypeError):
        detection.yolo_decode(np.zeros((3, 3, 2, 8), dtype=np.int64))


# ----------------------------------------------------------------------------- YOLO loss


def yolo_loss_by_hand(t: np.ndarray, y: np.ndarray, anchors: np.ndarray, lc: float,
                      ln: float) -> np.ndarray:
    """yolo_loss's documented terms, one (image, cell, anchor) at a time."""
    n, s_h, s_w, b_count, _ = t.shape
    out = np.zeros(n)
    for idx in np.ndindex(n, s_h, s_w, b_count):
        v, target = t[idx], y[idx]
        if target[0] == 1:
            aw, ah = anchors[idx[3]] * [s_w, s_h]
            p = np.exp(v[5:]) / np.exp(v[5:]).sum()
            out[idx[0]] += (np.log(1 + np.exp(-v[0]))
                            + lc * ((sigmoid(v[1]) - target[1]) ** 2
                                    + (sigmoid(v[2]) - target[2]) ** 2
                                    + (v[3] - np.log(target[3] / ah)) ** 2
                                    + (v[4] - np.log(target[4] / aw)) ** 2)
                            - (target[5:] * np.log(p)).sum())
        else:
            out[idx[0]] += ln * np.log(1 + np.exp(v[0]))
    return out


def yolo_batch(rng: np.random.Generator, n: int = 3, s: int = 3, k: int = 3):
    anchors = rng.uniform(0.1, 0.4, (2, 2))
    y = np.stack([detection.yolo_encode(*spread_boxes(rng, s, 3, k), grid_size=s,
                                        anchors=anchors, num_classes=k) for _ in range(n)])
    return rng.standard_normal(y.shape) * 2, y, anchors


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_yolo_loss_is_its_documented_formula_with_exact_gradients(reduction: str) -> None:
    rng = np.random.default_rng(5)
    t, y, anchors = yolo_batch(rng)
    expected = yolo_loss_by_hand(t, y, anchors, 5.0, 0.5)
    out = detection.yolo_loss(Tensor(t), y, anchors, reduction=reduction)
    want = {"none": expected, "sum": expected.sum(), "mean": expected.mean()}[reduction]
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-10)
    assert gradcheck(lambda u: detection.yolo_loss(u, y, anchors, lambda_coord=2.0,
                                                   lambda_noobj=0.3, reduction=reduction),
                     [t], directions=6) <= 1
    other = detection.yolo_loss(Tensor(t), y, anchors, lambda_coord=2.0, lambda_noobj=0.3,
                                reduction="none")
    np.testing.assert_allclose(other.numpy(), yolo_loss_by_hand(t, y, anchors, 2.0, 0.3),
                               rtol=1e-10)


def test_yolo_loss_float32_and_bad_input() -> None:
    rng = np.random.default_rng(6)
    t, y, anchors = yolo_batch(rng)
    x = Tensor(t.astype(np.float32), requires_grad=True)
    loss = detection.yolo_loss(x, y, anchors)
    loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_allclose(loss.item(), yolo_loss_by_hand(t, y, anchors, 5, 0.5).mean(),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="must equal y_hat shape"):
        detection.yolo_loss(Tensor(t), y[:, :2], anchors)
    with pytest.raises(ValueError, match="B = 3 anchors"):
        detection.yolo_loss(Tensor(t), y, np.ones((3, 2)))
    bad = y.copy()
    bad[0, 0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="pc"):
        detection.yolo_loss(Tensor(t), bad, anchors)
    with pytest.raises(ValueError, match="reduction"):
        detection.yolo_loss(Tensor(t), y, anchors, reduction="max")


def test_yolo_activate_converts_the_head_output_to_the_encoded_form() -> None:
    rng = np.random.default_rng(7)
    t, _, anchors = yolo_batch(rng, n=2, s=4)
    y = detection.yolo_activate(Tensor(t), anchors).numpy()
    np.testing.assert_allclose(y[..., :3], sigmoid(t[..., :3]), rtol=1e-12)
    np.testing.assert_allclose(y[..., 3], anchors[:, 1] * 4 * np.exp(t[..., 3]), rtol=1e-12)
    np.testing.assert_allclose(y[..., 4], anchors[:, 0] * 4 * np.exp(t[..., 4]), rtol=1e-12)
    np.testing.assert_allclose(y[..., 5:].sum(-1), 1, rtol=1e-12)
    assert gradcheck(lambda u: detection.yolo_activate(u, anchors), [t[:1, :2]]) <= 1


def test_kmeans_anchors_finds_the_shape_clusters() -> None:
    rng = np.random.default_rng(8)
    centres = np.array([[0.05, 0.2], [0.2, 0.05], [0.3, 0.3]])
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    anchors = detection.kmeans_anchors(wh, 3, seed=1)
    order = np.argsort(centres.prod(1))
    np.testing.assert_allclose(np.sort(anchors, 0), np.sort(centres[order], 0), rtol=0.03)
    np.testing.assert_array_equal(anchors, detection.kmeans_anchors(wh, 3, seed=1))
    assert (np.diff(anchors.prod(1)) >= 0).all()
    with pytest.raises(ValueError, match="at least k = 4"):
        detection.kmeans_anchors(wh[:3], 4)
    with pytest.raises(ValueError, match="positive"):
        detection.kmeans_anchors(-wh, 2)


# ----------------------------------------------------------------------------- convolutionalize


def seed_classifier() -> nn.Sequential:
    """The seed's 14x14x3 classifier: 5x5 conv (16), 2x2 max pool, FC 400, FC 400, softmax 4."""
    fastconv.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(),
                         nn.Linear(400, 4), nn.Softmax(dim=1))


@pytest.mark.parametrize("side,grid", [(14, 1), (16, 2), (28, 8)])
def test_convolutionalize_the_seeds_classifier_equals_every_crop(side: int, grid: int) -> None:
    model = seed_classifier()
    sliding = nn.convolutionalize(model, (3, 14, 14))
    x = np.random.default_rng(side).standard_normal((2, 3, side, side))
    model.double()
    out = sliding(Tensor(x)).numpy()
    assert out.shape == (2, 4, grid, grid)
    for i in range(grid):
        for j in range(grid):
            crop = model(Tensor(x[:, :, 2 * i:2 * i + 14, 2 * j:2 * j + 14])).numpy()
            np.testing.assert_allclose(out[:, :, i, j], crop, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("side", [18, 28, 128])
def test_the_bench_cases_multiply_adds_are_nn_summarys(side: int) -> None:
    from fastconv.bench.cases import sliding_macs

    model = seed_classifier()
    grid = (side - 14) // 2 + 1
    crops, sliding = sliding_macs(side)
    assert crops == nn.summary(model, (3, 14, 14)).total_mult_adds * grid * grid
    assert sliding == nn.summary(nn.convolutionalize(model, (3, 14, 14)),
                                 (3, side, side)).total_mult_adds
    assert 1 < crops / sliding < 1.4  # the FC part, the same per window, dominates


def test_convolutionalize_shares_the_parameters_and_their_gradients() -> None:
    model = seed_classifier().double()
    sliding = nn.convolutionalize(model, (3, 14, 14))
    assert {id(p) for p in sliding.parameters()} == {id(p) for p in model.parameters()}
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16))
    sliding(Tensor(x)).sum().backward()
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    for i in range(2):
        for j in range(2):
            model(Tensor(x[:, :, 2 * i:2 * i + 14, 2 * j:2 * j + 14])).sum().backward()
    for got, p in zip(grads, model.parameters()):
        np.testing.assert_allclose(got, p.grad, rtol=1e-10, atol=1e-13)
    # Training the original changes the sliding network: one set of weights.
    model[4].weight.data[...] = 0
    assert not sliding[3].weight.data.any()
    assert nn.summary(sliding, (3, 28, 28), np.float64).total_mult_adds == (
        16 * 75 * 24 * 24 + 2 * 400 * 400 * 64 + 400 * 4 * 64)


class Classifier(nn.Module):
    """A torchvision-style classifier: features, an adaptive pool, then flatten + FC in
    forward; `swap` runs the children out of their registration order."""

    def __init__(self, swap: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3), nn.LeakyReLU(0.2),
                                      nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(36, 10), nn.Tanh(),
                                        nn.Linear(10, 3))
        self.swap = swap

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        if self.swap:
            x = x * 2
        return self.classifier(x.flatten(1))


def test_convolutionalize_a_module_with_its_own_forward_and_an_identity_pool() -> None:
    fastconv.manual_seed(1)
    model = Classifier().double()
    model.train()
    sliding = nn.convolutionalize(model, (2, 12, 12))
    assert model.training  # the modes are restored
    model.eval()
    sliding.eval()
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in sliding.modules())
    x = np.random.default_rng(1).standard_normal((1, 2, 16, 20))
    out = sliding(Tensor(x)).numpy()
    assert out.shape == (1, 3, 3, 5)
    for i in range(3):
        for j in range(5):
            crop = model(Tensor(x[:, :, 2 * i:2 * i + 12, 2 * j:2 * j + 12])).numpy()
            np.testing.assert_allclose(out[:, :, i, j], crop, rtol=1e-12)


def test_convolutionalize_1d() -> None:
    fastconv.manual_seed(2)
    model = nn.Sequential(nn.Conv1d(1, 3, 5, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 6, 2))
    model.double()
    sliding = nn.convolutionalize(model, (1, 15))
    x = np.random.default_rng(2).standard_normal((1, 1, 25))
    out = sliding(Tensor(x)).numpy()
    assert out.shape == (1, 2, 6)
    for i in range(6):
        np.testing.assert_allclose(out[:, :, i], model(Tensor(x[:, :, 2 * i:2 * i + 15])).numpy(),
                                   rtol=1e-12)


def test_convolutionalize_rejects_what_cannot_slide() -> None:
    fastconv.manual_seed(3)
    with pytest.raises(ValueError, match=r"avgpool \(AdaptiveAvgPool2d\) maps .* only an "
                                         "adaptive pool that is the identity"):
        nn.convolutionalize(Classifier(), (2, 14, 14))
    with pytest.raises(ValueError, match="registration order"):
        nn.convolutionalize(Classifier(swap=True), (2, 12, 12))
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match=r"layer 3 \(BatchNorm1d\) comes after the spatial "
                                         "part"):
        nn.convolutionalize(bn, (1, 4, 4))
    wrong = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(9, 4))
    with pytest.raises(ValueError, match="takes 9 features, the layer before gives 8"):
        nn.convolutionalize(wrong, (1, 4, 4))
    with pytest.raises(ValueError, match=r"does not run on a window of input_shape "
                                         r"\(14, 14\): .*Conv2d"):
        nn.convolutionalize(seed_classifier(), (14, 14))
    with pytest.raises(ValueError, match=r"\(C, \*spatial\)"):
        nn.convolutionalize(seed_classifier(), (14,))
    with pytest.raises(TypeError, match="fastconv.nn.Module"):
        nn.convolutionalize(lambda x: x, (3, 14, 14))


# ----------------------------------------------------------------------------- region head


def test_anchor_boxes_tile_the_feature_map() -> None:
    shapes = np.array([[0.1, 0.2], [0.3, 0.1]])
    a = region.anchor_boxes((2, 4), shapes)
    assert a.shape == (16, 4)
    # Cell (1, 2) (row 1, column 2): centre (0.625, 0.75); its second shape.
    np.testing.assert_allclose(a[(1 * 4 + 2) * 2 + 1], [0.475, 0.7, 0.775, 0.8])


def test_box_deltas_round_trip_and_match_the_formula() -> None:
    rng = np.random.default_rng(9)
    p, g = random_boxes(rng, 20), random_boxes(rng, 20)
    d = region.encode_deltas(p, g)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    np.testing.assert_allclose(d[:, 0], 10 * ((g[:, 0] + g[:, 2]) - (p[:, 0] + p[:, 2])) / 2 / pw)
    np.testing.assert_allclose(d[:, 3], 5 * np.log((g[:, 3] - g[:, 1]) / ph))
    np.testing.assert_allclose(region.decode_deltas(p, d), g, atol=1e-12)
    huge = region.decode_deltas(p[:1], [[0, 0, 1e6, 1e6]])
    assert np.isfinite(huge).all()


def test_assign_and_sample_proposals() -> None:
    gt = np.array([[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]])
    proposals = np.array([[0.0, 0.0, 0.4, 0.4],     # IoU 1 with box 0
                          [0.1, 0.0, 0.5, 0.4],     # IoU 0.6 with box 0
                          [0.2, 0.0, 0.6, 0.4],     # IoU 1/3
                          [0.55, 0.5, 0.95, 0.9],   # IoU 0.78 with box 1
                          [0.9, 0.0, 1.0, 0.1]])    # IoU 0
    classes, matched = region.assign_proposals(proposals, gt, [2, 0], 3,
                                               positive_iou=0.5, negative_iou=0.3)
    np.testing.assert_array_equal(classes, [2, 2, -1, 0, 3])
    np.testing.assert_array_equal(matched, [0, 0, -1, 1, -1])
    classes, _ = region.assign_proposals(proposals, np.zeros((0, 4)), [], 3)
    np.testing.assert_array_equal(classes, 3)
    rng = np.random.default_rng(0)
    many = np.array([0] * 10 + [4] * 50 + [-1] * 5)
    pick = region.sample_proposals(many, 16, 0.25, rng, 4)
    assert len(pick) == 16 and (many[pick] == 0).sum() == 4 and (many[pick] != -1).all()
    assert len(set(pick.tolist())) == 16


def test_fast_rcnn_loss_is_cross_entropy_plus_smooth_l1() -> None:
    rng = np.random.default_rng(10)
    r, k = 6, 3
    logits, deltas = rng.standard_normal((r, k + 1)), rng.standard_normal((r, k, 4))
    classes = np.array([0, 3, 2, 3, 1, 3])
    targets = rng.standard_normal((r, 4))
    out = region.fast_rcnn_loss(Tensor(logits), Tensor(deltas), classes, targets)
    tl = torch.tensor(logits)
    positive = classes < k
    ref = torch.nn.functional.cross_entropy(tl, torch.tensor(classes)) + \
        torch.nn.functional.smooth_l1_loss(
            torch.tensor(deltas[np.nonzero(positive)[0], classes[positive]]),
            torch.tensor(targets[positive]), reduction="sum") / r
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-12)
    assert gradcheck(lambda a, b: region.fast_rcnn_loss(a, b, classes, targets),
                     [logits, deltas]) <= 1
    with pytest.raises(ValueError, match=r"classes must be in \[0, 3\]"):
        region.fast_rcnn_loss(Tensor(logits), Tensor(deltas), classes + 1, targets)


def test_fast_rcnn_trains_end_to_end_on_a_few_images() -> None:
    shapes_data = datasets.shapes(8, size=64, seed=5)
    images = shapes_data.images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    wh = np.concatenate([b[:, 2:] - b[:, :2] for b in shapes_data.boxes])
    fastconv.manual_seed(0)
    model = region.FastRCNN(4, detection.kmeans_anchors(wh, 3), channels=(8, 16),
                            hidden=32, image_size=(64, 64))
    opt = fastconv.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(15):
        rois, classes, targets = model.training_targets(shapes_data.boxes, shapes_data.labels,
                                                        rng, samples_per_image=16)
        opt.zero_grad()
        logits, deltas = model(Tensor(images), rois)
        assert logits.shape == (len(classes), 5) and deltas.shape == (len(classes), 4, 4)
        loss = region.fast_rcnn_loss(logits, deltas, classes, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    first = model.features[0].weight.grad
    assert first is not None and np.abs(first).sum() > 0  # the backbone learns too
    found = model.detect(images[:2], score_threshold=0.0, max_output=5)
    assert len(found) == 2 and found[0]["boxes"].shape == (5, 4)
    assert ((found[0]["boxes"] >= 0) & (found[0]["boxes"] <= 1)).all()


# ----------------------------------------------------------------------------- data


def test_shapes_data_set() -> None:
    d = datasets.shapes(30, seed=4)
    assert d.images.shape == (30, 128, 128, 3) and d.images.dtype == np.uint8
    assert len(d.boxes) == len(d.labels) == 30
    counts = [len(b) for b in d.boxes]
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    labels = np.concatenate(d.labels)
    assert labels.dtype == np.int64 and set(labels.tolist()) <= {0, 1, 2, 3}
    for image, boxes in zip(d.images, d.boxes):
        assert ((boxes >= 0) & (boxes <= 1)).all()
        painted = (image != 255).any(-1)
        covered = np.zeros_like(painted)
        for x1, y1, x2, y2 in np.round(boxes * 128).astype(int):
            covered[y1:y2, x1:x2] = True
            # Every box edge touches its shape: no empty margin.
            assert painted[y1:y2, x1].any() and painted[y1:y2, x2 - 1].any()
            assert painted[y1, x1:x2].any() and painted[y2 - 1, x1:x2].any()
        assert not (painted & ~covered).any()
    sides = np.concatenate([b[:, 2:] - b[:, :2] for b in d.boxes]).max(1) * 128
    assert sides.min() >= 15 and sides.max() <= 49
    again = datasets.shapes(10, seed=4)
    np.testing.assert_array_equal(again.images, d.images[:10])
    assert all((a == b).all() for a, b in zip(again.boxes, d.boxes))
    assert not np.array_equal(datasets.shapes(3, seed=5).images, d.images[:3])
    assert datasets.shapes(2, size=64).images.shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match="size must be >= 48"):
        datasets.shapes(2, size=32)


def test_data_loader_batches_like_torch() -> None:
    x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    y = np.arange(23)
    for drop_last in (False, True):
        ours = data.DataLoader((x, y), batch_size=5, drop_last=drop_last)
        theirs = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=5,
            drop_last=drop_last)
        assert len(ours) == len(theirs)
        for (bx, by), (tx, ty) in zip(ours, theirs):
            np.testing.assert_array_equal(bx, tx.numpy())
            np.testing.assert_array_equal(by, ty.numpy())
    shuffled = data.DataLoader((x, y), batch_size=4, shuffle=True, seed=3)
    first = [by for _, by in shuffled]
    second = [by for _, by in shuffled]
    assert sorted(np.concatenate(first).tolist()) == list(range(23))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    again = data.DataLoader((x, y), batch_size=4, shuffle=True, seed=3)
    assert all(np.array_equal(a, b) for a, (_, b) in zip(first, again))
    for bx, by in data.DataLoader((x, y), batch_size=4, shuffle=True):
        np.testing.assert_array_equal(bx[:, 0], 2 * by)
    ragged = [np.zeros((i, 4)) for i in range(5)]
    batches = list(data.DataLoader(ragged, batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 1] and batches[1][1].shape == (3, 4)
    single = list(data.DataLoader(y, batch_size=10, drop_last=True))
    assert len(single) == 2 and isinstance(single[0], np.ndarray)
    with pytest.raises(ValueError, match="one length"):
        data.DataLoader((x, y[:5]))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.DataLoader(x, batch_size=0)


# ----------------------------------------------------------------------------- F additions


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_matches_torch(reduction: str, weighted: bool) -> None:
    rng = np.random.default_rng(11)
    x = rng.random((5, 3))
    x[0, :2] = [0.0, 1.0]                       # the clamped logs
    target = rng.random((5, 3))
    weight = rng.random((1, 3)) if weighted else None
    tx, tt = Tensor(x, requires_grad=True), Tensor(target, requires_grad=True)
    out = F.binary_cross_entropy(tx, tt, weight, reduction=reduction)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    rx = torch.tensor(x, requires_grad=True)
    rt = torch.tensor(target, requires_grad=True)
    ref = torch.nn.functional.binary_cross_entropy(
        rx, rt, None if weight is None else torch.tensor(weight), reduction=reduction)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12)
    # rtol 1e-8: the clamped entries' gradients are ~1e11, rounded in another order.
    np.testing.assert_allclose(tx.grad, rx.grad.numpy(), rtol=1e-8)
    # The target gradient uses the clamped logs: finite where torch's is +-inf.
    np.testing.assert_allclose(tt.grad[1:], rt.grad.numpy()[1:], rtol=1e-10)
    assert np.isfinite(tt.grad).all() and np.isinf(rt.grad.numpy()[0, :2]).all()
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        F.binary_cross_entropy(Tensor(x + 1), target)


@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_smooth_l1_loss_matches_torch(beta: float, reduction: str) -> None:
    rng = np.random.default_rng(12)
    x, target = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    tx, tt = Tensor(x, requires_grad=True), Tensor(target, requires_grad=True)
    out = F.smooth_l1_loss(tx, tt, reduction=reduction, beta=beta)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    rx = torch.tensor(x, requires_grad=True)
    rt = torch.tensor(target, requires_grad=True)
    ref = torch.nn.functional.smooth_l1_loss(rx, rt, reduction=reduction, beta=beta)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(tx.grad, rx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(tt.grad, rt.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="beta"):
        F.smooth_l1_loss(tx, tt, beta=-1)


@pytest.mark.parametrize("slope", [0.01, 0.1, 1.5])
def test_leaky_relu_matches_torch(slope: float) -> None:
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 4, 5))
    x[0, 0, :2] = 0.0                           # torch's gradient at 0 is the slope
    t = Tensor(x, requires_grad=True)
    out = nn.LeakyReLU(slope)(t)
    g = rng.standard_normal(x.shape)
    out.backward(g)
    r = torch.tensor(x, requires_grad=True)
    ref = torch.nn.LeakyReLU(slope)(r)
    ref.backward(torch.tensor(g))
    np.testing.assert_array_equal(out.numpy(), ref.detach().numpy())
    np.testing.assert_array_equal(t.grad, r.grad.numpy())
    plain = x.astype(np.float32)
    with fastconv.no_grad():
        same = nn.LeakyReLU(slope, inplace=True)(Tensor(plain))
    assert same.data is plain
    np.testing.assert_allclose(plain, ref.detach().numpy(), rtol=1e-6)
    assert "negative_slope=" in repr(nn.LeakyReLU(slope))


# ----------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def quick_yolo(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """`python -m fastconv train-yolo --quick` once for this module: (its stdout, the PNG
    grid, the saved model)."""
    for module in ("skimage", "matplotlib", "tqdm"):
        pytest.importorskip(module)
    from fastconv import cli

    folder = tmp_path_factory.mktemp("yolo")
    plot, model = folder / "yolo.png", folder / "yolo.safetensors"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["train-yolo", "--quick", "--no-progress", "--plot", str(plot),
                         "--model", str(model)]) == 0
    return out.getvalue(), plot, model


def test_train_yolo_quick_reaches_map_0_5_on_the_held_out_split(quick_yolo: tuple) -> None:
    out, plot, model = quick_yolo
    found = re.search(r"held-out mAP@0.5 \(VOC all points\) ([0-9.]+), COCO mAP@\[.5:.95\] "
                      r"([0-9.]+)", out)
    assert found, out
    map_50, coco = float(found.group(1)), float(found.group(2))
    assert map_50 >= 0.5, out
    assert 0 < coco < map_50
    assert plot.read_bytes()[:8] == PNG_MAGIC
    restored = detection.YOLO.from_state_dict(nn.load(str(model)))
    assert restored.num_classes == 4 and restored.stride == 16


def test_detect_prints_json_in_the_images_pixels_and_draws_a_png(
        quick_yolo: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from skimage import io as skio

    from fastconv import cli

    _, _, model = quick_yolo
    # A fresh image (no split's seed), twice as large as the model's input: boxes come back
    # in the image's own pixels.
    shapes = datasets.shapes(1, seed=7)
    image = shapes.images[0].repeat(2, axis=0).repeat(2, axis=1)
    path, drawn = tmp_path / "shapes.png", tmp_path / "boxes.png"
    skio.imsave(str(path), image, check_contrast=False)
    assert cli.main(["detect", str(model), str(path), "--output", str(drawn),
                     "--score-threshold", "0.1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["width"], result["height"]) == (256, 256)
    assert drawn.read_bytes()[:8] == PNG_MAGIC
    dets = result["detections"]
    assert dets and [d["score"] for d in dets] == sorted((d["score"] for d in dets),
                                                         reverse=True)
    for d in dets:
        assert d["score"] > 0.1 and d["class"] == datasets.SHAPE_CLASSES[d["label"]]
        np.testing.assert_allclose(d["box"], np.array(d["box_fraction"]) * 256, atol=0.1)
    # The quick model (mAP@0.5 about 0.6) finds at least half of the shapes: a detection
    # of the shape's class at IoU >= 0.5.
    boxes = np.array([d["box_fraction"] for d in dets])
    labels = np.array([d["label"] for d in dets])
    iou = fastconv.box_iou(shapes.boxes[0], boxes)
    found = [(iou[m][labels == label] >= 0.5).any() for m, label in enumerate(shapes.labels[0])]
    assert 2 * sum(found) >= len(found), (shapes.boxes[0], dets)
    with pytest.raises(ValueError, match="not a fastconv.detection.YOLO checkpoint"):
        nn.save(nn.Linear(2, 2), str(tmp_path / "linear.safetensors"))
        cli.main(["detect", str(tmp_path / "linear.safetensors"), str(path)])
