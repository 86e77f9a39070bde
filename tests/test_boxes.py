"""box_iou, box_convert, nms and batched_nms against the NumPy reference and against
independent implementations (pure-Python loops, torch tensor math), including boxes
constructed to sit exactly at the thresholds, and every documented error; and the CUDA
kernels (tests marked `cuda`) against the CPU kernels (exactly: same IEEE operations, same
order, no contraction), the NumPy reference, and torchvision where importable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastconv as fc
from fastconv import _cpu
from fastconv import reference as ref
from _cases import (BOX_FORMATS as FORMATS, BOX_SIZES as SIZES, assert_indices, clustered_boxes,
                    cp, cpu_and_cuda, gpu, host, random_boxes, random_scores, scalar_type)

DTYPES = [np.float32, np.float64]
NMS_SIZES = SIZES + [63, 64, 65, 127, 128, 129, 1000, 3000]


def nms_on(device, boxes, scores, thr, st=None, mo=None, labels=None):
    """nms (batched_nms when labels are given) on `device`; a GPU result must also equal
    the CPU's, in both its variable-length and its fixed-size form."""
    call = fc.nms if labels is None else fc.batched_nms
    args = (boxes, scores) + (() if labels is None else (labels,))
    cpu = call(*args, thr, score_threshold=st, max_output=mo)
    if device == "cpu":
        return cpu
    got = gpu_nms(boxes, scores, thr, st, mo, labels=labels)
    assert_indices(got, cpu)
    return got


# ----------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------
# Independent implementations
# ----------------------------------------------------------------------------------------

def py_iou(a, b, t):
    """One pair, with scalar arithmetic of type t (float or np.float32), no NumPy arrays."""
    ax1, ay1, ax2, ay2 = (t(v) for v in a)
    bx1, by1, bx2, by2 = (t(v) for v in b)
    w = max(t(0), min(ax2, bx2) - max(ax1, bx1))
    h = max(t(0), min(ay2, by2) - max(ay1, by1))
    inter = w * h
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else t(0)


def py_box_iou(a, b):
    t = scalar_type(a.dtype)
    return np.array([[py_iou(x, y, t) for y in b] for x in a], dtype=a.dtype).reshape(
        len(a), len(b))


def py_nms(boxes, scores, thr, score_threshold=None, max_output=None):
    """Textbook greedy NMS with a suppressed list and scalar arithmetic."""
    t = scalar_type(boxes.dtype)
    thr = t(thr)
    idx = [i for i in range(len(boxes))
           if score_threshold is None or not scores[i] <= t(score_threshold)]
    idx.sort(key=lambda i: (-float(scores[i]), i))
    suppressed = [False] * len(idx)
    keep = []
    for a in range(len(idx)):
        if suppressed[a]:
            continue
        if max_output is not None and len(keep) >= max_output:
            break
        keep.append(idx[a])
        for b in range(a + 1, len(idx)):
            if py_iou(boxes[idx[a]], boxes[idx[b]], t) >= thr:
                suppressed[b] = True
    return np.array(keep, dtype=np.int64)


def py_batched_nms(boxes, scores, labels, thr, score_threshold=None, max_output=None):
    keep = []
    for label in sorted(set(labels.tolist())):
        members = [i for i in range(len(boxes)) if labels[i] == label]
        sub = py_nms(boxes[members], scores[members], thr, score_threshold, max_output)
        keep += [members[k] for k in sub]
    keep.sort(key=lambda i: (-float(scores[i]), i))
    return np.array(keep[:max_output] if max_output is not None else keep, dtype=np.int64)


def torch_box_iou(a, b):
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    area_a = (ta[:, 2] - ta[:, 0]) * (ta[:, 3] - ta[:, 1])
    area_b = (tb[:, 2] - tb[:, 0]) * (tb[:, 3] - tb[:, 1])
    lt = torch.maximum(ta[:, None, :2], tb[None, :, :2])
    rb = torch.minimum(ta[:, None, 2:], tb[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0)
    return iou.numpy()


# ----------------------------------------------------------------------------------------
# box_iou
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(0, 0), (0, 3), (3, 0), (1, 1), (2, 50), (50, 2), (500, 500)])
def test_box_iou_matches_reference_and_torch(dtype, n, m):
    rng = np.random.default_rng(n * 1000 + m)
    a, b = random_boxes(rng, n, dtype), clustered_boxes(rng, m, dtype)
    got = fc.box_iou(a, b)
    assert got.shape == (n, m) and got.dtype == dtype
    np.testing.assert_array_equal(got, ref.box_iou(a, b))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got, torch_box_iou(a, b), rtol=tol, atol=tol)
    assert np.all((got >= 0) & (got <= 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_matches_python_loop(dtype):
    rng = np.random.default_rng(7)
    a, b = clustered_boxes(rng, 20, dtype, clusters=2), random_boxes(rng, 15, dtype)
    b[:3] = a[:3]  # identical boxes: IoU 1
    got = fc.box_iou(a, b)
    np.testing.assert_array_equal(got, py_box_iou(a, b))
    np.testing.assert_array_equal(np.diag(got[:3, :3]), np.ones(3, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_degenerate_and_exact_values(dtype):
    a = np.array([[0, 0, 1, 1], [2, 2, 2, 2], [0, 0, 1, 0], [5, 5, 6, 6]], dtype)
    b = np.array([[0, 0, 1, 0.5], [2, 2, 2, 2], [0, 0, 1, 0], [0, 0, 2, 2]], dtype)
    got = fc.box_iou(a, b)
    np.testing.assert_array_equal(got, ref.box_iou(a, b))
    assert got[0, 0] == 0.5  # exactly representable construction
    assert got[0, 3] == 0.25
    assert got[1, 1] == 0 and got[2, 2] == 0  # two empty boxes: 0, not NaN
    assert got[3, 0] == 0 and not np.isnan(got).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_huge_coordinates(dtype):
    rng = np.random.default_rng(3)
    b = (random_boxes(rng, 40, np.float64, scale=1.0, size=1.0) * 1e30).astype(dtype)
    got = fc.box_iou(b, b)
    np.testing.assert_array_equal(got, ref.box_iou(b, b))
    if dtype == np.float64:
        np.testing.assert_allclose(np.diag(got), 1.0)
        np.testing.assert_allclose(got, torch_box_iou(b, b), rtol=1e-12, atol=1e-12)


def test_box_iou_non_contiguous_input():
    rng = np.random.default_rng(11)
    a = random_boxes(rng, 30, np.float64)
    got = fc.box_iou(a[::2], np.asfortranarray(a))
    np.testing.assert_array_equal(got, ref.box_iou(a[::2], a))


# ----------------------------------------------------------------------------------------
# box_convert
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_box_convert_matches_reference(dtype, n, in_fmt, out_fmt):
    rng = np.random.default_rng(n)
    xyxy = random_boxes(rng, n, dtype)
    boxes = ref.box_convert(xyxy, "xyxy", in_fmt)
    got = fc.box_convert(boxes, in_fmt, out_fmt)
    assert got.shape == (n, 4) and got.dtype == dtype
    np.testing.assert_array_equal(got, ref.box_convert(boxes, in_fmt, out_fmt))
    # Independent: the definition of each format from float64 corners.
    x1, y1, x2, y2 = xyxy.astype(np.float64).T
    expected = {"xyxy": (x1, y1, x2, y2), "xywh": (x1, y1, x2 - x1, y2 - y1),
                "cxcywh": ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)}[out_fmt]
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got, np.stack(expected, axis=1).reshape(n, 4), atol=tol)


def test_box_convert_round_trip_and_copy():
    boxes = np.array([[1, 2, 4, 8], [0, 0, 0, 0]], np.float64)
    for fmt in FORMATS:
        np.testing.assert_array_equal(
            fc.box_convert(fc.box_convert(boxes, "xyxy", fmt), fmt, "xyxy"), boxes)
    out = fc.box_convert(boxes, "xyxy", "xyxy")
    assert out is not boxes
    np.testing.assert_array_equal(fc.box_convert(boxes, "xyxy", "cxcywh"),
                                  [[2.5, 5, 3, 6], [0, 0, 0, 0]])


# ----------------------------------------------------------------------------------------
# nms
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NMS_SIZES)
@pytest.mark.parametrize("clustered", [False, True])
def test_nms_matches_reference(device, dtype, n, clustered):
    rng = np.random.default_rng(100 + n + clustered)
    boxes = (clustered_boxes if clustered else random_boxes)(rng, n, dtype)
    scores = random_scores(rng, n, dtype)
    for _ in range(3):
        thr = float(rng.uniform(0.05, 0.95))
        st = None if rng.random() < 0.5 else float(rng.uniform(0, 0.5))
        mo = None if rng.random() < 0.5 else int(rng.integers(0, n + 3))
        got = nms_on(device, boxes, scores, thr, st, mo)
        assert_indices(got, ref.nms(boxes, scores, thr, st, mo))
        if n <= 50:
            assert_indices(got, py_nms(boxes, scores, thr, st, mo))
        # Kept boxes never overlap each other at or above the threshold.
        iou = fc.box_iou(boxes[got], boxes[got])
        np.fill_diagonal(iou, 0)
        assert not (iou >= scalar_type(dtype)(thr)).any()
        assert np.all(np.diff(scores[got].astype(np.float64)) <= 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_exactly_at_threshold(dtype):
    # IoU([0,0,1,1], [0,0,1,t]) = t exactly for these t.
    for t in (0.5, 0.25, 0.75):
        boxes = np.array([[0, 0, 1, 1], [0, 0, 1, t]], dtype)
        scores = np.array([0.9, 0.8], dtype)
        assert_indices(fc.nms(boxes, scores, t), [0])  # >= suppresses
        assert_indices(ref.nms(boxes, scores, t), [0])
        above = float(np.nextafter(dtype(t), dtype(1)))
        assert_indices(fc.nms(boxes, scores, above), [0, 1])
        assert_indices(ref.nms(boxes, scores, above), [0, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_threshold_equal_to_computed_iou(dtype):
    """Thresholds set to the exact IoU of random pairs: both sides suppress, one ulp up keeps."""
    rng = np.random.default_rng(5)
    for _ in range(30):
        boxes = clustered_boxes(rng, 2, dtype, clusters=1)
        scores = np.array([0.9, 0.1], dtype)
        iou = fc.box_iou(boxes[:1], boxes[1:])[0, 0]
        if iou == 0:
            continue
        for thr, expected in ((float(iou), [0]),
                              (float(np.nextafter(iou, dtype(2))), [0, 1])):
            assert_indices(fc.nms(boxes, scores, thr), expected)
            assert_indices(ref.nms(boxes, scores, thr), expected)


def test_nms_threshold_rounded_to_float32():
    # IoU is float32(0.3); a float64 threshold a hair above it rounds down to it in float32.
    h = np.float32(0.3)
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, h]], np.float32)
    iou = fc.box_iou(boxes[:1], boxes[1:])[0, 0]
    thr = float(iou) + float(np.spacing(iou)) / 4
    assert thr > float(iou) and np.float32(thr) == iou
    scores = np.array([1, 0.5], np.float32)
    assert_indices(fc.nms(boxes, scores, thr), [0])
    assert_indices(ref.nms(boxes, scores, thr), [0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_equal_scores_lower_index_first(dtype):
    rng = np.random.default_rng(9)
    boxes = random_boxes(rng, 50, dtype, scale=1000, size=1)  # almost no overlaps
    scores = np.full(50, 0.5, dtype)
    scores[::7] = 0.75
    got = fc.nms(boxes, scores, 0.5)
    assert_indices(got, ref.nms(boxes, scores, 0.5))
    assert_indices(got, py_nms(boxes, scores, 0.5))
    # Identical boxes with equal scores: only the lowest index survives.
    same = np.tile(np.array([[0, 0, 2, 2]], dtype), (5, 1))
    assert_indices(fc.nms(same, np.ones(5, dtype), 0.5), [0])
    assert_indices(fc.nms(same, np.array([1, 2, 2, 1, 2], dtype), 0.5), [1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_score_threshold_exact(dtype):
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], dtype)
    scores = np.array([0.25, 0.5, 0.75], dtype)
    assert_indices(fc.nms(boxes, scores, 0.5, score_threshold=0.5), [2])  # 0.5 dropped
    assert_indices(ref.nms(boxes, scores, 0.5, 0.5), [2])
    assert_indices(fc.nms(boxes, scores, 0.5, score_threshold=0.25), [2, 1])
    assert_indices(fc.nms(boxes, scores, 0.5, score_threshold=1.0), [])
    assert_indices(fc.nms(boxes, scores, 0.5, score_threshold=-np.inf), [2, 1, 0])
    inf_scores = np.array([-np.inf, np.inf, 0], dtype)
    assert_indices(fc.nms(boxes, inf_scores, 0.5), [1, 2, 0])
    assert_indices(fc.nms(boxes, inf_scores, 0.5, score_threshold=-np.inf), [1, 2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_degenerate_and_small_sets(dtype):
    empty = np.zeros((0, 4), dtype)
    assert_indices(fc.nms(empty, np.zeros(0, dtype)), [])
    assert_indices(fc.nms(empty, np.zeros(0, dtype), max_output=0), [])
    one = np.array([[1, 2, 3, 4]], dtype)
    assert_indices(fc.nms(one, np.array([0.3], dtype)), [0])
    # Zero-area boxes have IoU 0 with everything: all kept unless the threshold is <= 0.
    points = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 0]], dtype)
    s = np.array([0.1, 0.2, 0.3], dtype)
    assert_indices(fc.nms(points, s, 0.5), [2, 1, 0])
    assert_indices(fc.nms(points, s, 0.0), [2])
    assert_indices(ref.nms(points, s, 0.0), [2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_max_output(dtype):
    rng = np.random.default_rng(21)
    boxes = clustered_boxes(rng, 200, dtype)
    scores = random_scores(rng, 200, dtype)
    full = fc.nms(boxes, scores, 0.4)
    assert len(full) > 2
    assert_indices(fc.nms(boxes, scores, 0.4, max_output=0), [])
    assert_indices(fc.nms(boxes, scores, 0.4, max_output=1), full[:1])
    assert_indices(fc.nms(boxes, scores, 0.4, max_output=2), full[:2])
    assert_indices(fc.nms(boxes, scores, 0.4, max_output=1000), full)
    assert_indices(fc.nms(boxes, scores, 0.4, max_output=2**70), full)
    assert_indices(fc.nms(boxes, scores, 0.4, max_output=np.int32(2)), full[:2])


def test_nms_deterministic_and_huge_float64():
    rng = np.random.default_rng(33)
    boxes = clustered_boxes(rng, 2000, np.float32)
    scores = np.round(random_scores(rng, 2000, np.float32), 2)  # many ties
    first = fc.nms(boxes, scores, 0.5)
    for _ in range(3):
        assert_indices(fc.nms(boxes, scores, 0.5), first)
    assert_indices(first, ref.nms(boxes, scores, 0.5))
    big = clustered_boxes(rng, 300, np.float64) * 1e28
    s = random_scores(rng, 300, np.float64)
    assert_indices(fc.nms(big, s, 0.5), ref.nms(big, s, 0.5))
    assert_indices(fc.nms(big, s, 0.5), fc.nms(big / 1e28, s, 0.5))


# ----------------------------------------------------------------------------------------
# batched_nms
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NMS_SIZES)
@pytest.mark.parametrize("num_labels", [1, 3, 40])
def test_batched_nms_matches_reference(device, dtype, n, num_labels):
    rng = np.random.default_rng(n * 10 + num_labels)
    boxes = clustered_boxes(rng, n, dtype)
    scores = random_scores(rng, n, dtype)
    labels = rng.integers(-5, num_labels - 5, n)
    for _ in range(2):
        thr = float(rng.uniform(0.1, 0.9))
        st = None if rng.random() < 0.5 else float(rng.uniform(0, 0.5))
        mo = None if rng.random() < 0.5 else int(rng.integers(0, n + 3))
        got = nms_on(device, boxes, scores, thr, st, mo, labels)
        assert_indices(got, ref.batched_nms(boxes, scores, labels, thr, st, mo))
        if n <= 50:
            assert_indices(got, py_batched_nms(boxes, scores, labels, thr, st, mo))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_one_label_equals_nms(dtype):
    rng = np.random.default_rng(44)
    boxes = clustered_boxes(rng, 500, dtype)
    scores = np.round(random_scores(rng, 500, dtype), 2)
    for label_dtype in (np.int64, np.int8, np.uint16):
        labels = np.full(500, 3, label_dtype)
        for mo in (None, 0, 1, 7):
            assert_indices(fc.batched_nms(boxes, scores, labels, 0.45, max_output=mo),
                           fc.nms(boxes, scores, 0.45, max_output=mo))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_thousands_of_labels(dtype):
    rng = np.random.default_rng(55)
    n = 6000
    boxes = clustered_boxes(rng, n, dtype, clusters=4)
    scores = random_scores(rng, n, dtype)
    labels = rng.integers(0, 3000, n).astype(np.int32)
    got = fc.batched_nms(boxes, scores, labels, 0.5)
    assert_indices(got, ref.batched_nms(boxes, scores, labels, 0.5))
    got = fc.batched_nms(boxes, scores, labels, 0.5, score_threshold=0.3, max_output=500)
    assert_indices(got, ref.batched_nms(boxes, scores, labels, 0.5, 0.3, 500))
    # Every label distinct: nothing can be suppressed.
    distinct = np.arange(n, dtype=np.uint64)
    assert_indices(fc.batched_nms(boxes, scores, distinct, 0.5),
                   np.lexsort((np.arange(n), -scores)))


def huge_boxes_three_times():
    """Three copies of three boxes at 1e30 (the first two overlap, IoU 0.67), scores 9..1."""
    base = np.array([[1e30, 1e30, 2e30, 2e30], [1.2e30, 1e30, 2.2e30, 2e30],
                     [5e30, 5e30, 6e30, 6e30]])
    return np.concatenate([base, base, base]), np.arange(9, 0, -1).astype(np.float64)


def test_batched_nms_huge_coordinates_and_extreme_labels():
    # The coordinate-offset trick (shift each label by label * (max + 1)) loses every
    # distinction at 1e30 in float64; per-label grouping does not.
    boxes, scores = huge_boxes_three_times()
    labels = np.array([0, 0, 0, 1, 1, 1, 2**62, 2**62, -2**62])
    got = fc.batched_nms(boxes, scores, labels, 0.5)
    assert_indices(got, [0, 2, 3, 5, 6, 8])
    assert_indices(got, ref.batched_nms(boxes, scores, labels, 0.5))
    assert_indices(got, py_batched_nms(boxes, scores, labels, 0.5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_ties_across_labels(dtype):
    boxes = np.tile(np.array([[0, 0, 1, 1]], dtype), (6, 1))
    scores = np.array([0.5, 0.5, 0.9, 0.5, 0.9, 0.5], dtype)
    labels = np.array([2, 1, 2, 0, 1, 0])
    assert_indices(fc.batched_nms(boxes, scores, labels, 0.5), [2, 4, 3])
    assert_indices(fc.batched_nms(boxes, scores, labels, 0.5, max_output=2), [2, 4])
    assert_indices(fc.batched_nms(boxes[:0], scores[:0], labels[:0], 0.5), [])


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------

F = np.float32


def good(n=3, dtype=F):
    boxes = np.array([[0, 0, 1, 1], [1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]][:n], dtype)
    return boxes, np.linspace(0.2, 0.9, n).astype(dtype), np.arange(n)


@pytest.mark.parametrize("bad,pattern", [
    ([[0, 0, 1, 1], [0, np.nan, 1, 1]], r"boxes.*non-finite.*row 1"),
    ([[0, 0, 1, 1], [0, 0, np.inf, 1]], r"boxes.*non-finite.*row 1"),
    ([[0, 0, 1, 1], [0, 0, 1, 1], [2, 0, 1, 1]], r"boxes row 2 is inverted"),
    ([[0, 3, 1, 1]], r"boxes row 0 is inverted"),
])
def test_bad_box_values(bad, pattern):
    boxes = np.array(bad, F)
    scores = np.ones(len(boxes), F)
    labels = np.zeros(len(boxes), np.int64)
    with pytest.raises(ValueError, match=pattern):
        fc.nms(boxes, scores)
    with pytest.raises(ValueError, match=pattern):
        fc.batched_nms(boxes, scores, labels)
    with pytest.raises(ValueError, match=pattern.replace("boxes", "box_iou: b")):
        fc.box_iou(good()[0], boxes)
    with pytest.raises(ValueError, match=pattern.replace("boxes", "box_iou: a")):
        fc.box_iou(boxes, good()[0])
    with pytest.raises(ValueError, match=pattern):
        fc.box_convert(boxes, "xyxy", "xywh")


def test_bad_scores_and_lengths():
    boxes, scores, labels = good()
    with pytest.raises(ValueError, match=r"scores has NaN at index 1"):
        fc.nms(boxes, np.array([0, np.nan, 1], F))
    with pytest.raises(ValueError, match=r"scores has NaN"):
        fc.batched_nms(boxes, np.array([np.nan, 0, 1], F), labels)
    with pytest.raises(ValueError, match=r"scores shape \(2,\).*boxes shape \(3, 4\)"):
        fc.nms(boxes, scores[:2])
    with pytest.raises(ValueError, match=r"scores shape \(3, 1\).*boxes shape \(3, 4\)"):
        fc.nms(boxes, scores[:, None])
    with pytest.raises(ValueError, match=r"labels shape \(4,\).*boxes shape \(3, 4\)"):
        fc.batched_nms(boxes, scores, np.arange(4))
    with pytest.raises(ValueError, match=r"scores shape \(4,\).*boxes shape \(3, 4\)"):
        fc.batched_nms(boxes, np.ones(4, F), labels)


@pytest.mark.parametrize("shape", [(4,), (3, 3), (2, 4, 1), (0,)])
def test_bad_box_shapes(shape):
    bad = np.ones(shape, F)
    pat = r"boxes must have shape \(N, 4\), got shape " + str(shape).replace("(", r"\(") \
        .replace(")", r"\)")
    with pytest.raises(ValueError, match=pat):
        fc.nms(bad, np.ones(3, F))
    with pytest.raises(ValueError, match=pat):
        fc.batched_nms(bad, np.ones(3, F), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=pat):
        fc.box_convert(bad, "xyxy", "xywh")
    with pytest.raises(ValueError, match=r"box_iou: a must have shape \(N, 4\)"):
        fc.box_iou(bad, good()[0])
    with pytest.raises(ValueError, match=r"box_iou: b must have shape \(N, 4\)"):
        fc.box_iou(good()[0], bad)


def test_bad_dtypes():
    boxes, scores, labels = good()
    with pytest.raises(TypeError, match=r"boxes must be float32 or float64"):
        fc.nms(boxes.astype(np.int64), scores)
    with pytest.raises(TypeError, match=r"scores has dtype float64"):
        fc.nms(boxes, scores.astype(np.float64))
    with pytest.raises(TypeError, match=r"b has dtype float64"):
        fc.box_iou(boxes, boxes.astype(np.float64))
    with pytest.raises(TypeError, match=r"boxes must be a numpy.ndarray"):
        fc.nms(boxes.tolist(), scores)
    with pytest.raises(TypeError, match=r"labels must have an integer dtype, got float32"):
        fc.batched_nms(boxes, scores, labels.astype(F))
    with pytest.raises(TypeError, match=r"labels must have an integer dtype, got bool"):
        fc.batched_nms(boxes, scores, labels > 0)
    with pytest.raises(TypeError, match=r"labels must be a numpy.ndarray"):
        fc.batched_nms(boxes, scores, [0, 1, 2])
    with pytest.raises(TypeError, match=r"boxes must be float32 or float64"):
        fc.box_convert(boxes.astype(np.float16), "xyxy", "xywh")


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(iou_threshold=np.nan), ValueError, r"iou_threshold must be finite"),
    (dict(iou_threshold=np.inf), ValueError, r"iou_threshold must be finite"),
    (dict(iou_threshold="0.5"), TypeError, r"iou_threshold must be a real number"),
    (dict(iou_threshold=None), TypeError, r"iou_threshold must be a real number"),
    (dict(iou_threshold=True), TypeError, r"iou_threshold must be a real number"),
    (dict(score_threshold="a"), TypeError, r"score_threshold must be a real number"),
    (dict(score_threshold=np.nan), ValueError, r"score_threshold must not be NaN"),
    (dict(max_output=-1), ValueError, r"max_output must be >= 0, got -1"),
    (dict(max_output=1.5), TypeError, r"max_output must be an int"),
    (dict(max_output=True), TypeError, r"max_output must be an int"),
])
def test_bad_parameters(kwargs, exc, pattern):
    boxes, scores, labels = good()
    with pytest.raises(exc, match=r"nms: " + pattern):
        fc.nms(boxes, scores, **kwargs)
    with pytest.raises(exc, match=r"batched_nms: " + pattern):
        fc.batched_nms(boxes, scores, labels, **kwargs)


def test_box_convert_bad_formats_and_sizes():
    boxes = good()[0]
    with pytest.raises(ValueError, match=r"in_fmt must be one of 'xyxy', 'xywh', 'cxcywh'"):
        fc.box_convert(boxes, "xyxyx", "xywh")
    with pytest.raises(ValueError, match=r"out_fmt must be one of .*got 'XYWH'"):
        fc.box_convert(boxes, "xyxy", "XYWH")
    with pytest.raises(ValueError, match=r"out_fmt must be one of"):
        fc.box_convert(boxes, "xyxy", None)
    for fmt in ("xywh", "cxcywh"):
        neg = np.array([[0, 0, 1, 1], [0, 0, 1, -1]], F)
        with pytest.raises(ValueError, match=r"boxes row 1 has a negative width or height"):
            fc.box_convert(neg, fmt, "xyxy")
        nan = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [np.nan, 0, 1, 1]], F)
        with pytest.raises(ValueError, match=r"boxes has a non-finite value in row 2"):
            fc.box_convert(nan, fmt, "xyxy")


def test_cpu_module_rejects_bad_arguments_directly():
    boxes, scores, labels = good()
    out = np.empty((3, 3), F)
    with pytest.raises(ValueError, match=r"nms: boxes must have shape \(N, 4\)"):
        _cpu.nms(np.ones((3, 3), F), scores, 0.5)
    with pytest.raises(ValueError, match=r"nms: boxes must have shape \(N, 4\)"):
        _cpu.nms(np.ones(12, F), scores, 0.5)
    with pytest.raises(ValueError, match=r"scores shape \(2,\)"):
        _cpu.nms(boxes, scores[:2], 0.5)
    with pytest.raises(TypeError, match=r"scores must have dtype float32"):
        _cpu.nms(boxes, scores.astype(np.float64), 0.5)
    with pytest.raises(ValueError, match=r"boxes must be C-contiguous"):
        _cpu.nms(np.asfortranarray(boxes), scores, 0.5)
    with pytest.raises(ValueError, match=r"iou_threshold must be finite"):
        _cpu.nms(boxes, scores, float("nan"))
    with pytest.raises(ValueError, match=r"max_output must be >= 0"):
        _cpu.nms(boxes, scores, 0.5, None, -3)
    with pytest.raises(ValueError, match=r"score_threshold must not be NaN"):
        _cpu.nms(boxes, scores, 0.5, float("nan"))
    with pytest.raises(ValueError, match=r"boxes row 0 is inverted"):
        _cpu.nms(boxes[:, ::-1].copy(), scores, 0.5)
    with pytest.raises(ValueError, match=r"scores has NaN"):
        _cpu.nms(boxes, np.full(3, np.nan, F), 0.5)
    with pytest.raises(TypeError, match=r"labels must have dtype int64, got int32"):
        _cpu.batched_nms(boxes, scores, labels.astype(np.int32), 0.5)
    with pytest.raises(ValueError, match=r"labels shape \(2,\)"):
        _cpu.batched_nms(boxes, scores, labels[:2], 0.5)
    with pytest.raises(ValueError, match=r"labels must be C-contiguous"):
        _cpu.batched_nms(boxes, scores, np.arange(6)[::2], 0.5)
    with pytest.raises(ValueError, match=r"out has shape \(3, 3\), expected \(3, 2\)"):
        _cpu.box_iou(boxes, boxes[:2], out)
    with pytest.raises(TypeError, match=r"b must have dtype float32"):
        _cpu.box_iou(boxes, boxes.astype(np.float64), out)
    with pytest.raises(TypeError, match=r"a must be float32 or float64"):
        _cpu.box_iou(boxes.astype(np.int32), boxes, out)
    with pytest.raises(ValueError, match=r"box_iou: b must have shape \(N, 4\)"):
        _cpu.box_iou(boxes, np.ones((3, 2, 2), F), out)
    with pytest.raises(ValueError, match=r"out must be writeable"):
        ro = np.empty((3, 3), F)
        ro.flags.writeable = False
        _cpu.box_iou(boxes, boxes, ro)
    with pytest.raises(ValueError, match=r"in_fmt must be one of"):
        _cpu.box_convert(boxes, np.empty((3, 4), F), "xy", "xyxy")
    with pytest.raises(ValueError, match=r"out has shape \(2, 4\), expected \(3, 4\)"):
        _cpu.box_convert(boxes, np.empty((2, 4), F), "xyxy", "xyxy")
    with pytest.raises(TypeError, match=r"out must have dtype float32"):
        _cpu.box_convert(boxes, np.empty((3, 4)), "xyxy", "xyxy")


# ----------------------------------------------------------------------------------------
# The CUDA kernels
# ----------------------------------------------------------------------------------------

# Sizes around the 64-box mask words and tiles, and past one greedy block's 256 threads.
def gpu_nms(boxes, scores, thr, st=None, mo=None, labels=None):
    """The GPU result (variable length), checked against the fixed-size form when possible."""
    args = (gpu(boxes), gpu(scores)) + (() if labels is None else (gpu(labels),))
    call = fc.nms if labels is None else fc.batched_nms
    got = call(*args, thr, score_threshold=st, max_output=mo)
    assert isinstance(got, cp.ndarray) and got.dtype == np.int64
    got = host(got)
    size = mo if mo is not None else len(boxes) + 2
    keep, count = call(*args, thr, score_threshold=st, max_output=size, fixed_size=True)
    assert isinstance(keep, cp.ndarray) and keep.shape == (size,) and count.shape == (1,)
    k, c = host(keep), int(host(count)[0])
    expected = got[:size]
    assert c == len(expected), (c, len(expected))
    np.testing.assert_array_equal(k[:c], expected)
    assert np.all(k[c:] == -1)
    return got


def check_nms(boxes, scores, thr, st=None, mo=None):
    got = nms_on("cuda", boxes, scores, thr, st, mo)
    assert_indices(got, ref.nms(boxes, scores, thr, st, mo))
    return got


def check_batched(boxes, scores, labels, thr, st=None, mo=None):
    got = nms_on("cuda", boxes, scores, thr, st, mo, labels)
    assert_indices(got, ref.batched_nms(boxes, scores, labels, thr, st, mo))
    return got


# ----------------------------------------------------------------------------------------
# box_iou / box_convert
# ----------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(0, 0), (0, 3), (3, 0), (1, 1), (2, 50), (50, 2), (500, 500),
                                 (3, 70000), (300, 257)])
def test_cuda_box_iou_gpu_equals_cpu(dtype, n, m):
    rng = np.random.default_rng(n * 1000 + m)
    a, b = random_boxes(rng, n, dtype), clustered_boxes(rng, m, dtype)
    b[: min(n, m) // 2] = a[: min(n, m) // 2]  # identical pairs: IoU exactly 1
    got = fc.box_iou(gpu(a), gpu(b))
    assert isinstance(got, cp.ndarray) and got.shape == (n, m) and got.dtype == dtype
    np.testing.assert_array_equal(host(got), fc.box_iou(a, b))
    np.testing.assert_array_equal(host(got), ref.box_iou(a, b))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_box_iou_degenerate_and_huge(dtype):
    a = np.array([[0, 0, 1, 1], [2, 2, 2, 2], [0, 0, 1, 0], [5, 5, 6, 6]], dtype)
    b = np.array([[0, 0, 1, 0.5], [2, 2, 2, 2], [0, 0, 1, 0], [0, 0, 2, 2]], dtype)
    np.testing.assert_array_equal(host(fc.box_iou(gpu(a), gpu(b))), fc.box_iou(a, b))
    rng = np.random.default_rng(3)
    big = (random_boxes(rng, 40, np.float64, scale=1.0, size=1.0) * 1e30).astype(dtype)
    np.testing.assert_array_equal(host(fc.box_iou(gpu(big), gpu(big))), fc.box_iou(big, big))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES + [100000])
@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_cuda_box_convert_gpu_equals_cpu(dtype, n, in_fmt, out_fmt):
    rng = np.random.default_rng(n)
    boxes = ref.box_convert(random_boxes(rng, n, dtype), "xyxy", in_fmt)
    got = fc.box_convert(gpu(boxes), in_fmt, out_fmt)
    assert isinstance(got, cp.ndarray) and got.shape == (n, 4) and got.dtype == dtype
    np.testing.assert_array_equal(host(got), fc.box_convert(boxes, in_fmt, out_fmt))
    np.testing.assert_array_equal(host(got), ref.box_convert(boxes, in_fmt, out_fmt))


# ----------------------------------------------------------------------------------------
# nms
# ----------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_nms_at_threshold_ties_and_scores(dtype):
    for t in (0.5, 0.25, 0.75):
        boxes = np.array([[0, 0, 1, 1], [0, 0, 1, t]], dtype)
        scores = np.array([0.9, 0.8], dtype)
        assert_indices(check_nms(boxes, scores, t), [0])  # >= suppresses
        assert_indices(check_nms(boxes, scores, float(np.nextafter(dtype(t), dtype(1)))), [0, 1])
    rng = np.random.default_rng(5)
    for _ in range(30):  # thresholds equal to computed IoUs: both sides must agree
        boxes = clustered_boxes(rng, 2, dtype, clusters=1)
        iou = fc.box_iou(boxes[:1], boxes[1:])[0, 0]
        for thr in (float(iou), float(np.nextafter(iou, dtype(2)))):
            check_nms(boxes, np.array([0.9, 0.1], dtype), thr)
    same = np.tile(np.array([[0, 0, 2, 2]], dtype), (5, 1))
    assert_indices(check_nms(same, np.ones(5, dtype), 0.5), [0])
    assert_indices(check_nms(same, np.array([1, 2, 2, 1, 2], dtype), 0.5), [1])
    tied = np.round(random_scores(rng, 2000, dtype), 2)  # many ties across 64-box words
    check_nms(clustered_boxes(rng, 2000, dtype), tied, 0.5)
    signed_zero = np.array([-0.0, 0.0, -0.0, 0.0], dtype)  # -0 == +0: index order decides
    far = random_boxes(rng, 4, dtype, scale=1000, size=1)
    assert_indices(check_nms(far, signed_zero, 0.5), [0, 1, 2, 3])
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], dtype)
    for scores, st in (([0.25, 0.5, 0.75], 0.5), ([0.25, 0.5, 0.75], 1.0),
                       ([0.25, 0.5, 0.75], -np.inf), ([-np.inf, np.inf, 0], None),
                       ([-np.inf, np.inf, 0], -np.inf)):
        check_nms(boxes, np.array(scores, dtype), 0.5, st)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_nms_small_sets_max_output_and_all_suppressed(dtype):
    empty = np.zeros((0, 4), dtype)
    assert_indices(check_nms(empty, np.zeros(0, dtype), 0.5), [])
    assert_indices(check_nms(empty, np.zeros(0, dtype), 0.5, mo=0), [])
    points = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 0]], dtype)
    s = np.array([0.1, 0.2, 0.3], dtype)
    assert_indices(check_nms(points, s, 0.5), [2, 1, 0])
    assert_indices(check_nms(points, s, 0.0), [2])  # threshold 0 suppresses everything after
    rng = np.random.default_rng(21)
    boxes = clustered_boxes(rng, 700, dtype)
    scores = random_scores(rng, 700, dtype)
    for mo in (0, 1, 2, 63, 64, 65, 1000, 2**70):
        check_nms(boxes, scores, 0.4, mo=mo if mo < 2**63 else None)
    one_cluster = np.tile(np.array([[0, 0, 10, 10]], dtype), (300, 1))
    assert_indices(check_nms(one_cluster, random_scores(rng, 300, dtype), 0.5)[1:], [])


@pytest.mark.cuda
def test_cuda_nms_deterministic_large_and_huge_float64():
    rng = np.random.default_rng(33)
    boxes = clustered_boxes(rng, 20000, np.float32, clusters=200)
    scores = np.round(random_scores(rng, 20000, np.float32), 3)
    first = check_nms(boxes, scores, 0.5)
    for _ in range(3):
        assert_indices(host(fc.nms(gpu(boxes), gpu(scores), 0.5)), first)
    big = clustered_boxes(rng, 300, np.float64) * 1e28
    check_nms(big, random_scores(rng, 300, np.float64), 0.5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cuda_nms_matches_torchvision(dtype):
    """torchvision suppresses IoU > thr (not >=), breaks score ties its own way and need not
    round IoUs as we do; with continuous random inputs (distinct scores, no IoU within an ulp
    of the threshold in practice) the results agree."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    rng = np.random.default_rng(77)
    for n in (10, 1000, 10000):
        boxes = clustered_boxes(rng, n, dtype, clusters=max(1, n // 20))
        scores = rng.permutation(n).astype(dtype) / n  # distinct scores
        got = host(fc.nms(gpu(boxes), gpu(scores), 0.5))
        expected = tv.ops.nms(torch.as_tensor(boxes, device="cuda"),
                              torch.as_tensor(scores, device="cuda"), 0.5).cpu().numpy()
        np.testing.assert_array_equal(got, expected)
        if dtype != np.float64:
            continue  # torchvision offsets float32 coordinates per label: IoUs shift slightly
        labels = rng.integers(0, 30, n)
        got = host(fc.batched_nms(gpu(boxes), gpu(scores), gpu(labels), 0.5))
        expected = tv.ops.batched_nms(torch.as_tensor(boxes, device="cuda"),
                                      torch.as_tensor(scores, device="cuda"),
                                      torch.as_tensor(labels, device="cuda"), 0.5).cpu().numpy()
        np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------------------
# batched_nms
# ----------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_batched_nms_thousands_of_labels(dtype):
    rng = np.random.default_rng(55)
    n = 6000
    boxes = clustered_boxes(rng, n, dtype, clusters=4)
    scores = random_scores(rng, n, dtype)
    labels = rng.integers(0, 3000, n)
    check_batched(boxes, scores, labels, 0.5)
    check_batched(boxes, scores, labels, 0.5, 0.3, 500)
    check_batched(boxes, scores, rng.integers(0, 1000, n), 0.3)
    distinct = np.arange(n)  # every label distinct: nothing suppressed
    assert_indices(check_batched(boxes, scores, distinct, 0.5),
                   np.lexsort((np.arange(n), -scores)))
    assert_indices(check_batched(boxes, scores, np.full(n, 7), 0.45, mo=9),
                   host(fc.nms(gpu(boxes), gpu(scores), 0.45, max_output=9)))


@pytest.mark.cuda
def test_cuda_batched_nms_extreme_labels_and_ties():
    boxes, scores = huge_boxes_three_times()
    labels = np.array([0, 0, 0, 1, 1, 1, 2**62, 2**62, -2**62])
    assert_indices(check_batched(boxes, scores, labels, 0.5), [0, 2, 3, 5, 6, 8])
    labels = np.array([2**63 - 1, -2**63, 0, 2**63 - 1, -2**63, 0, 1, 1, 1])
    check_batched(boxes, scores, labels, 0.5)
    for dtype in DTYPES:
        b = np.tile(np.array([[0, 0, 1, 1]], dtype), (6, 1))
        s = np.array([0.5, 0.5, 0.9, 0.5, 0.9, 0.5], dtype)
        lab = np.array([2, 1, 2, 0, 1, 0])
        assert_indices(check_batched(b, s, lab, 0.5), [2, 4, 3])
        assert_indices(check_batched(b, s, lab, 0.5, mo=2), [2, 4])
        assert_indices(check_batched(b[:0], s[:0], lab[:0], 0.5), [])
    # Any integer label dtype on the GPU, as on the CPU.
    rng = np.random.default_rng(4)
    b, s = clustered_boxes(rng, 200, np.float32), random_scores(rng, 200, np.float32)
    lab = rng.integers(0, 5, 200)
    for dt in (np.int8, np.uint16, np.int32):
        assert_indices(host(fc.batched_nms(gpu(b), gpu(s), gpu(lab.astype(dt)), 0.5)),
                       fc.batched_nms(b, s, lab, 0.5))


# ----------------------------------------------------------------------------------------
# Streams, result kinds, errors
# ----------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_non_default_stream():
    rng = np.random.default_rng(8)
    boxes = clustered_boxes(rng, 5000, np.float32)
    scores = random_scores(rng, 5000, np.float32)
    labels = rng.integers(0, 50, 5000)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        gb, gs, gl = gpu(boxes), gpu(scores), gpu(labels)
        keep = fc.nms(gb, gs, 0.5)
        fixed, count = fc.batched_nms(gb, gs, gl, 0.5, max_output=100, fixed_size=True)
        iou = fc.box_iou(gb[:100], gb)
        conv = fc.box_convert(gb, "xyxy", "cxcywh")
    stream.synchronize()
    for a in (keep, fixed, count, iou, conv):
        assert isinstance(a, cp.ndarray)
    assert_indices(host(keep), fc.nms(boxes, scores, 0.5))
    expected = fc.batched_nms(boxes, scores, labels, 0.5, max_output=100)
    assert int(host(count)[0]) == len(expected)
    np.testing.assert_array_equal(host(fixed)[:len(expected)], expected)
    np.testing.assert_array_equal(host(iou), fc.box_iou(boxes[:100], boxes))
    np.testing.assert_array_equal(host(conv), fc.box_convert(boxes, "xyxy", "cxcywh"))


@pytest.mark.cuda
@pytest.mark.parametrize("bad,pattern", [
    ([[0, 0, 1, 1], [0, np.nan, 1, 1]], r"boxes.*non-finite.*row 1"),
    ([[0, 0, 1, 1], [0, 0, np.inf, 1]], r"boxes.*non-finite.*row 1"),
    ([[0, 0, 1, 1], [0, 0, 1, 1], [2, 0, 1, 1]], r"boxes row 2 is inverted"),
    ([[0, 3, 1, 1], [np.nan, 0, 0, 0]], r"boxes row 0 is inverted"),
])
def test_cuda_bad_box_values_raise_like_cpu(bad, pattern):
    boxes = gpu(np.array(bad, np.float32))
    scores = cp.ones(len(bad), cp.float32)
    labels = cp.zeros(len(bad), cp.int64)
    good = gpu(np.array([[0, 0, 1, 1], [1, 1, 3, 3]], np.float32))
    with pytest.raises(ValueError, match="nms: " + pattern):
        fc.nms(boxes, scores)
    with pytest.raises(ValueError, match="batched_nms: " + pattern):
        fc.batched_nms(boxes, scores, labels)
    with pytest.raises(ValueError, match=pattern.replace("boxes", "box_iou: b")):
        fc.box_iou(good, boxes)
    with pytest.raises(ValueError, match=pattern.replace("boxes", "box_iou: a")):
        fc.box_iou(boxes, good)
    with pytest.raises(ValueError, match=pattern):
        fc.box_convert(boxes, "xyxy", "xywh")
    # The fixed-size form cannot raise without a sync: it reports count -1 instead.
    keep, count = fc.nms(boxes, scores, max_output=4, fixed_size=True)
    assert int(host(count)[0]) == -1 and np.all(host(keep) == -1)


@pytest.mark.cuda
def test_cuda_bad_scores_formats_kinds_and_dtypes():
    boxes = gpu(np.array([[0, 0, 1, 1], [1, 1, 3, 3], [0, 0, 2, 2]], np.float32))
    scores = gpu(np.array([0.2, 0.5, 0.9], np.float32))
    with pytest.raises(ValueError, match=r"nms: scores has NaN at index 1"):
        fc.nms(boxes, gpu(np.array([0, np.nan, 1], np.float32)))
    with pytest.raises(ValueError, match=r"batched_nms: scores has NaN at index 0"):
        fc.batched_nms(boxes, gpu(np.array([np.nan, 0, 1], np.float32)), cp.arange(3))
    _, count = fc.batched_nms(boxes, gpu(np.array([np.nan, 0, 1], np.float32)),
                                 cp.arange(3), max_output=2, fixed_size=True)
    assert int(host(count)[0]) == -1
    with pytest.raises(ValueError, match=r"scores shape \(2,\).*boxes shape \(3, 4\)"):
        fc.nms(boxes, scores[:2])
    with pytest.raises(ValueError, match=r"labels shape \(4,\)"):
        fc.batched_nms(boxes, scores, cp.arange(4))
    with pytest.raises(TypeError, match=r"on the GPU but .* in host memory"):
        fc.nms(boxes, cp.asnumpy(scores))
    with pytest.raises(TypeError, match=r"on the GPU but .* in host memory"):
        fc.box_iou(cp.asnumpy(boxes), boxes)
    with pytest.raises(TypeError, match=r"labels must be a GPU array"):
        fc.batched_nms(boxes, scores, np.arange(3))
    with pytest.raises(TypeError, match=r"labels must have an integer dtype"):
        fc.batched_nms(boxes, scores, cp.zeros(3, cp.float32))
    with pytest.raises(TypeError, match=r"scores has dtype float64"):
        fc.nms(boxes, scores.astype(cp.float64))
    with pytest.raises(ValueError, match=r"fixed_size=True needs max_output"):
        fc.nms(boxes, scores, fixed_size=True)
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        fc.nms(cp.ones((3, 3), cp.float32), scores)
    with pytest.raises(ValueError, match=r"boxes row 1 has a negative width or height"):
        fc.box_convert(gpu(np.array([[0, 0, 1, 1], [0, 0, 1, -1]], np.float32)), "xywh", "xyxy")
    with pytest.raises(ValueError, match=r"boxes has a non-finite value in row 2"):
        fc.box_convert(gpu(np.array([[0, 0, 1, 1]] * 2 + [[np.nan, 0, 1, 1]], np.float32)),
                       "cxcywh", "xyxy")


@pytest.mark.cuda
def test_cuda_extension_rejects_bad_input_directly():
    from fastconv import _cuda
    from fastconv._backend import gpu_workspace

    stream = cp.cuda.get_current_stream().ptr
    boxes = cp.asarray([[0, 0, 1, 1], [1, 1, 2, 2]], cp.float32)
    scores = cp.ones(2, cp.float32)
    with pytest.raises(ValueError, match=r"iou_threshold must be finite"):
        _cuda.nms(boxes, scores, float("nan"), None, None, gpu_workspace, stream)
    with pytest.raises(ValueError, match=r"max_output must be >= 0"):
        _cuda.nms(boxes, scores, 0.5, None, -1, gpu_workspace, stream)
    with pytest.raises(TypeError, match=r"labels must have dtype int64, got <i4"):
        _cuda.batched_nms(boxes, scores, cp.zeros(2, cp.int32), 0.5, None, None, gpu_workspace,
                          stream)
    with pytest.raises(ValueError, match=r"out has shape \(2, 3\), expected \(2, 2\)"):
        _cuda.box_iou(boxes, boxes, cp.empty((2, 3), cp.float32), gpu_workspace, stream)
    with pytest.raises(ValueError, match=r"in_fmt must be one of"):
        _cuda.box_convert(boxes, cp.empty((2, 4), cp.float32), "xy", "xyxy", gpu_workspace,
                          stream)
    with pytest.raises(ValueError, match=r"keep has shape \(2,\), expected \(3,\)"):
        _cuda.nms_fixed(boxes, scores, 0.5, None, 3, cp.empty(2, cp.int64),
                        cp.empty(1, cp.int64), gpu_workspace, stream)
    with pytest.raises(ValueError, match=r"needs max_output"):
        _cuda.nms_fixed(boxes, scores, 0.5, None, None, cp.empty(2, cp.int64),
                        cp.empty(1, cp.int64), gpu_workspace, stream)


# ----------------------------------------------------------------------------------------
# Timings (printed, not asserted beyond sanity: the targets are for a human to read)
# ----------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------
# soft_nms
# ----------------------------------------------------------------------------------------

def paper_soft_nms(boxes, scores, sigma, method, nt, threshold):
    """Bodla et al. 2017, Algorithm 1, one Python float at a time (float64 inputs)."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    live = [i for i in range(len(boxes)) if threshold is None or scores[i] >= threshold]
    s = [float(v) for v in scores]
    keep, kept = [], []
    while live:
        m = max(live, key=lambda i: (s[i], -i))  # highest score, then lowest index
        keep.append(m)
        kept.append(s[m])
        live.remove(m)
        for i in list(live):
            o = iou(boxes[m], boxes[i])
            if method == "linear":
                s[i] *= (1.0 - o) if o >= nt else 1.0
            else:
                s[i] *= float(np.exp(-(o * o) / sigma))
            if threshold is not None and s[i] < threshold:
                live.remove(i)
    return keep, kept


def soft_nms_on(device, boxes, scores, **kw):
    keep, kept = fc.soft_nms(boxes, scores, **kw)
    if device == "cuda":
        gk, gs = fc.soft_nms(gpu(boxes), gpu(scores), **kw)
        assert_indices(host(gk), keep)
        np.testing.assert_allclose(host(gs), kept, rtol=1e-6 if kept.dtype == np.float32
                                   else 1e-14)
        assert host(gs).dtype == kept.dtype
    return keep, kept


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("n", [0, 1, 2, 40, 300])
def test_soft_nms_matches_the_paper_loop(device, method, n):
    rng = np.random.default_rng(n + len(method))
    boxes = clustered_boxes(rng, n, np.float64, clusters=max(1, n // 10))
    scores = random_scores(rng, n, np.float64)
    for kw in (dict(), dict(sigma=0.3, iou_threshold=0.5, score_threshold=0.2),
               dict(score_threshold=None, max_output=7)):
        keep, kept = soft_nms_on(device, boxes, scores, method=method, **kw)
        want_keep, want_kept = paper_soft_nms(boxes, scores, kw.get("sigma", 0.5), method,
                                              kw.get("iou_threshold", 0.3),
                                              kw.get("score_threshold", 0.001))
        limit = kw.get("max_output")
        assert_indices(keep, np.array(want_keep[:limit], dtype=np.int64))
        np.testing.assert_allclose(kept, want_kept[:limit], rtol=1e-13)
        assert np.all(np.diff(kept) <= 0)
        ref_keep, ref_kept = ref.soft_nms(boxes, scores, method=method, **kw)
        assert_indices(keep, ref_keep)
        np.testing.assert_allclose(kept, ref_kept, rtol=1e-14)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_soft_nms_float32_against_the_reference(device):
    rng = np.random.default_rng(5)
    boxes = clustered_boxes(rng, 500, np.float32, clusters=30)
    scores = random_scores(rng, 500, np.float32)
    for method in ("gaussian", "linear"):
        keep, kept = soft_nms_on(device, boxes, scores, method=method)
        ref_keep, ref_kept = ref.soft_nms(boxes, scores, method=method)
        assert kept.dtype == np.float32
        assert_indices(keep, ref_keep)
        np.testing.assert_allclose(kept, ref_kept, rtol=1e-6)


def test_soft_nms_hand_cases():
    # IoU of these two is 1/3: 2x2 boxes overlapping by half of one side.
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [10, 10, 11, 11]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.5])
    keep, kept = fc.soft_nms(boxes, scores, method="linear", iou_threshold=0.3)
    assert_indices(keep, [0, 1, 2])
    np.testing.assert_allclose(kept, [0.9, 0.8 * (2 / 3), 0.5])
    keep, kept = fc.soft_nms(boxes, scores, method="linear", iou_threshold=0.4)
    np.testing.assert_allclose(kept, [0.9, 0.8, 0.5])  # below the threshold: untouched
    keep, kept = fc.soft_nms(boxes, scores, sigma=0.5)
    np.testing.assert_allclose(kept, [0.9, 0.8 * np.exp(-(1 / 9) / 0.5), 0.5])
    # Rescoring can reorder: box 1 falls below box 2 once box 0 is kept.
    keep, kept = fc.soft_nms(boxes, np.array([0.9, 0.75, 0.7]), method="linear")
    assert_indices(keep, [0, 2, 1])
    np.testing.assert_allclose(kept, [0.9, 0.7, 0.5])
    # Equal scores: the lower index first; identical boxes (IoU 1, linear) drop to 0.
    keep, kept = fc.soft_nms(boxes[[0, 0, 2]], np.array([0.5, 0.5, 0.5]), method="linear")
    assert_indices(keep, [0, 2])
    keep, kept = fc.soft_nms(boxes[[0, 0]], np.array([0.5, 0.5]), method="linear",
                             score_threshold=None)
    assert_indices(keep, [0, 1])
    np.testing.assert_allclose(kept, [0.5, 0.0])
    # score_threshold drops boxes from the start; max_output truncates.
    keep, _ = fc.soft_nms(boxes, np.array([0.9, 0.0005, 0.7]))
    assert_indices(keep, [0, 2])
    keep, kept = fc.soft_nms(boxes, scores, max_output=1)
    assert_indices(keep, [0]) and kept.shape == (1,)
    keep, kept = fc.soft_nms(boxes[:0], scores[:0])
    assert keep.shape == kept.shape == (0,) and keep.dtype == np.int64


def test_soft_nms_errors():
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    with pytest.raises(ValueError, match="method must be 'gaussian' or 'linear'"):
        fc.soft_nms(boxes, scores, method="hard")
    with pytest.raises(ValueError, match="sigma must be finite and positive"):
        fc.soft_nms(boxes, scores, sigma=0.0)
    with pytest.raises(ValueError, match="scores has NaN at index 1"):
        fc.soft_nms(boxes, np.array([0.9, np.nan], np.float32))
    with pytest.raises(ValueError, match="scores has a non-finite value"):
        fc.soft_nms(boxes, np.array([np.inf, 0.1], np.float32))
    with pytest.raises(ValueError, match="boxes row 0 is inverted"):
        fc.soft_nms(boxes[:, [2, 1, 0, 3]], scores)
    with pytest.raises(ValueError, match=r"scores shape \(1,\) must be \(N,\)"):
        fc.soft_nms(boxes, scores[:1])
    with pytest.raises(TypeError, match="scores has dtype float64 but boxes has float32"):
        fc.soft_nms(boxes, scores.astype(np.float64))
    with pytest.raises(ValueError, match="max_output must be >= 0"):
        fc.soft_nms(boxes, scores, max_output=-1)
