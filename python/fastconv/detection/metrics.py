"""Mean average precision of object detections: COCO (pycocotools' COCOeval) and PASCAL VOC.

Detections are matched to ground truth of the same image and class, greedily in decreasing
score order. The matching is vectorized: every (detection, ground truth) pair of a group (one
image, one class) gets its IoU in one pass, and the greedy assignment runs rank by rank over
all groups at once (COCO: at most 100 ranks, its detection cap per image and class) or, for
VOC, where a detection's candidate does not depend on earlier matches, in one pass. Only the
precision envelope and interpolation loop over classes; nothing loops over detections.

IoU is computed exactly as pycocotools' bbIou does on the boxes in (x, y, w, h) form
(intersection / (area_d + area_g - intersection), no +1 pixel), for every method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from .._backend import is_gpu

OP = "mean_average_precision"
METHODS = ("coco", "voc07", "voc")

# The constants of pycocotools' Params.setDetParams, computed the same way so that the
# thresholds are the same floats (0.5 and 0.75 among them exactly).
COCO_IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
COCO_RECALL_POINTS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
COCO_MAX_DETECTIONS = 100
# COCOeval's "all" area range: ground truth outside it is ignored, and so are the unmatched
# detections outside it.
COCO_MAX_AREA = 1e5 ** 2
VOC_IOU_THRESHOLD = 0.5


class _Boxes(NamedTuple):
    """All images' boxes concatenated, image-major in input order."""

    image: np.ndarray   # (n,) int64 index into the list
    boxes: np.ndarray   # (n, 4) float64 xyxy
    labels: np.ndarray  # (n,) int64
    scores: Optional[np.ndarray]  # (n,) float64, None for targets
    starts: np.ndarray  # (images + 1,) offsets of each image's rows


# ----------------------------------------------------------------------------- input


def _host(value: Any, where: str) -> np.ndarray:
    """`value` as a NumPy array (GPU arrays are copied to the host)."""
    if is_gpu(value):
        import cupy

        value = cupy.asarray(value).get()
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{OP}: {where} must be an array, got {type(value).__name__} "
                        f"({error})") from None
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{OP}: {where} must hold real numbers, got dtype {a.dtype}")
    return a


def _read(items: Any, name: str, scored: bool) -> _Boxes:
    keys = ("boxes", "scores", "labels") if scored else ("boxes", "labels")
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"{OP}: {name} must be a list with one dict per image, got "
                        f"{type(items).__name__}")
    boxes: List[np.ndarray] = []
    scores: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    counts = np.zeros(len(items), dtype=np.int64)
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(item, Mapping):
            raise TypeError(f"{OP}: {where} must be a dict with keys {', '.join(keys)}, got "
                            f"{type(item).__name__}")
        missing = [k for k in keys if k not in item]
        if missing:
            raise ValueError(f"{OP}: {where} has no {', '.join(map(repr, missing))} (needs "
                             f"{', '.join(keys)})")
        b = _host(item["boxes"], f"{where}['boxes']")
        if b.size == 0:
            b = b.reshape(0, 4)
        elif b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"{OP}: {where}['boxes'] must have shape (D, 4), got {b.shape}")
        n = b.shape[0]
        columns = [("labels", labels)] + ([("scores", scores)] if scored else [])
        for key, out in columns:
            a = _host(item[key], f"{where}[{key!r}]")
            if a.shape != (n,):
                raise ValueError(f"{OP}: {where}[{key!r}] shape {a.shape} must be ({n},) for "
                                 f"boxes shape {b.shape}")
            if key == "labels" and a.dtype.kind == "f":
                whole = np.isfinite(a) & (a == np.floor(a))
                if not whole.all():
                    raise TypeError(f"{OP}: {where}['labels'] must hold integers, got "
                                    f"{a[np.argmin(whole)]} at row {np.argmin(whole)}")
            out.append(a)
        boxes.append(b)
        counts[i] = n
    starts = np.concatenate(([0], np.cumsum(counts)))
    out = _Boxes(
        image=np.repeat(np.arange(len(items), dtype=np.int64), counts),
        boxes=np.concatenate(boxes).astype(np.float64, copy=False) if boxes
        else np.zeros((0, 4)),
        labels=np.concatenate(labels).astype(np.int64, copy=False) if labels
        else np.zeros(0, np.int64),
        scores=(np.concatenate(scores).astype(np.float64, copy=False) if scores
                else np.zeros(0)) if scored else None,
        starts=starts)
    _check_values(out, name)
    return out


def _check_values(s: _Boxes, name: str) -> None:
    """Finite, non-inverted boxes and finite scores, checked on all images at once; the
    message names the first offending image and row."""
    b = s.boxes
    bad = ~np.isfinite(b).all(axis=1) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    checks = [("boxes", bad, "must be finite with x1 <= x2 and y1 <= y2")]
    if s.scores is not None:
        checks.append(("scores", ~np.isfinite(s.scores), "must be finite"))
    for key, rows, rule in checks:
        if rows.any():
            row = int(np.argmax(rows))
            i = int(s.image[row])
            value = b[row] if key == "boxes" else s.scores[row]
            raise ValueError(f"{OP}: {name}[{i}][{key!r}] row {row - s.starts[i]} is "
                             f"{value}: {key} {rule}")


def _method(method: Any) -> str:
    if not isinstance(method, str):
        raise TypeError(f"{OP}: method must be a string, got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"{OP}: method must be one of {', '.join(map(repr, METHODS))}, got "
                         f"{method!r}")
    return method


def _thresholds(value: Any, method: str) -> np.ndarray:
    if value is None:
        return COCO_IOU_THRESHOLDS if method == "coco" else np.array([VOC_IOU_THRESHOLD])
    a = np.asarray(value) if not is_gpu(value) else _host(value, "iou_thresholds")
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{OP}: iou_thresholds must be a real number or a sequence of them, "
                        f"got {value!r}")
    t = a.astype(np.float64).reshape(-1) if a.ndim == 0 else a.astype(np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"{OP}: iou_thresholds must be one number or a non-empty 1-D "
                         f"sequence, got shape {t.shape}")
    if not np.all((t >= 0) & (t <= 1)):
        raise ValueError(f"{OP}: iou_thresholds must lie in [0, 1], got {t.tolist()}")
    return t


# ----------------------------------------------------------------------------- matching


def _areas(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _pairs(dets: np.ndarray, lo: np.ndarray, count: np.ndarray, det_boxes: np.ndarray,
           gt_boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair of the listed detections, detection-major.

    dets: detections (each with count > 0 ground truths, gts lo .. lo + count - 1).
    Returns (segment starts (len(dets),), pair ground truth (P,), pair IoU (P,)).
    """
    c = count[dets]
    seg = np.cumsum(c) - c
    pair_gt = np.repeat(lo[dets] - seg, c) + np.arange(int(c.sum()), dtype=np.int64)
    d = det_boxes[np.repeat(dets, c)]
    g = gt_boxes[pair_gt]
    # Far edges as corner + size, as pycocotools sees boxes converted to (x, y, w, h): the
    # same IoU bits, so the same threshold decisions and ties.
    d_size, g_size = d[:, 2:] - d[:, :2], g[:, 2:] - g[:, :2]
    overlap = np.minimum(d[:, :2] + d_size, g[:, :2] + g_size) - np.maximum(d[:, :2], g[:, :2])
    meets = (overlap > 0).all(axis=1)
    inter = overlap[:, 0] * overlap[:, 1]
    union = (d_size[:, 0] * d_size[:, 1] + g_size[:, 0] * g_size[:, 1]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=meets)
    return seg, pair_gt, iou


def _coco_match(dets: np.ndarray, rank: np.ndarray, lo: np.ndarray, count: np.ndarray,
                det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_ignored: np.ndarray,
                thresholds: np.ndarray, n_dets: int) -> Tuple[np.ndarray, np.ndarray]:
    """COCOeval.evaluateImg's greedy matching of all groups at once.

    At each threshold, a detection takes the free ground truth of highest IoU >= t (of equal
    IoUs the last, as COCOeval's `<` comparison keeps replacing); regular ground truth
    always wins over ignored ground truth (COCOeval sorts it last and stops there).
    Returns (matched (T, n_dets), matched to ignored ground truth (T, n_dets)).
    """
    T = len(thresholds)
    # COCOeval starts its best-so-far at min(t, 1 - 1e-10): at t = 1 a near-exact IoU counts.
    limit = np.minimum(thresholds, 1 - 1e-10)[:, None]
    matched = np.zeros((T, n_dets), dtype=bool)
    on_ignored = np.zeros((T, n_dets), dtype=bool)
    if len(dets) == 0:
        return matched, on_ignored
    dets = dets[np.argsort(rank[dets], kind="stable")]
    seg, pair_gt, iou = _pairs(dets, lo, count, det_boxes, gt_boxes)
    c = count[dets]
    ends = seg + c
    ranks = np.searchsorted(rank[dets], np.arange(rank[dets[-1]] + 2))
    tiers = [~gt_ignored] + ([gt_ignored] if gt_ignored.any() else [])
    taken = np.zeros((T, len(gt_boxes)), dtype=bool)
    for r in range(len(ranks) - 1):
        d0, d1 = ranks[r], ranks[r + 1]
        p0, p1 = seg[d0], ends[d1 - 1]
        local = seg[d0:d1] - p0
        cnt = c[d0:d1]
        g = pair_gt[p0:p1]
        v = iou[p0:p1]
        position = np.arange(p1 - p0)
        free = ~taken[:, g] & (v >= limit)
        choice = np.full((T, d1 - d0), -1, dtype=np.int64)
        for tier in tiers:
            ok = free & tier[g] & np.repeat(choice < 0, cnt, axis=1)
            value = np.where(ok, v, -1.0)
            best = np.maximum.reduceat(value, local, axis=1)
            last = np.where(ok & (value == np.repeat(best, cnt, axis=1)), position, -1)
            choice = np.maximum(choice, np.maximum.reduceat(last, local, axis=1))
        t, k = np.nonzero(choice >= 0)
        gt = g[choice[t, k]]
        taken[t, gt] = True
        matched[t, dets[d0 + k]] = True
        on_ignored[t, dets[d0 + k]] = gt_ignored[gt]
    return matched, on_ignored


def _voc_match(dets: np.ndarray, lo: np.ndarray, count: np.ndarray, det_boxes: np.ndarray,
               gt_boxes: np.ndarray, thresholds: np.ndarray, n_dets: int) -> np.ndarray:
    """The VOC devkit's matching: a detection's candidate is the ground truth of highest IoU
    (of equal IoUs the first), taken or not; it is a true positive if that IoU > t and no
    higher-ranked detection took the candidate first. `dets` must be in rank order within
    each group. Returns true positives (T, n_dets)."""
    tp = np.zeros((len(thresholds), n_dets), dtype=bool)
    if len(dets) == 0:
        return tp
    seg, pair_gt, iou = _pairs(dets, lo, count, det_boxes, gt_boxes)
    c = count[dets]
    best = np.maximum.reduceat(iou, seg)
    first = np.where(iou == np.repeat(best, c), np.arange(len(iou)), len(iou))
    candidate = pair_gt[np.minimum.reduceat(first, seg)]
    for row, t in enumerate(thresholds):
        over = np.flatnonzero(best > t)
        _, winners = np.unique(candidate[over], return_index=True)
        tp[row, dets[over[winners]]] = True
    return tp


# ----------------------------------------------------------------------------- curves


def _envelope(precision: np.ndarray) -> np.ndarray:
    """Running maximum from the right along the last axis."""
    return np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]


def _coco_precision(tp: np.ndarray, fp: np.ndarray, positives: int) -> np.ndarray:
    """COCOeval.accumulate's interpolated precision (T, 101) of one class, with its float
    arithmetic (spacing(1) in the denominator, recall points found by searchsorted)."""
    tps = np.cumsum(tp, axis=1).astype(float)
    fps = np.cumsum(fp, axis=1).astype(float)
    n = tps.shape[1]
    if n == 0:
        return np.zeros((tp.shape[0], len(COCO_RECALL_POINTS)))
    recall = tps / positives
    precision = _envelope(tps / (fps + tps + np.spacing(1)))
    at = np.stack([np.searchsorted(row, COCO_RECALL_POINTS, side="left") for row in recall])
    return np.where(at < n, np.take_along_axis(precision, np.minimum(at, n - 1), axis=1), 0.0)


def _voc_ap(tp: np.ndarray, positives: int, points: bool) -> np.ndarray:
    """VOC AP (T,) of one class from true-positive flags (T, n) in score order.

    points=True: the 11-point mean of the best precision at recall >= k / 10, the recall
    levels compared exactly (10 * TP >= k * positives). Otherwise the area under the
    monotone precision envelope: each true positive adds 1 / positives of recall at the
    envelope's precision there.
    """
    n = tp.shape[1]
    if n == 0:
        return np.zeros(tp.shape[0])
    tps = np.cumsum(tp, axis=1)
    precision = _envelope(tps / np.arange(1, n + 1))
    if not points:
        return np.where(tp, precision, 0.0).sum(axis=1) / positives
    levels = np.arange(11) * positives
    at = np.stack([np.searchsorted(10 * row, levels, side="left") for row in tps])
    picked = np.take_along_axis(precision, np.minimum(at, n - 1), axis=1)
    return np.where(at < n, picked, 0.0).sum(axis=1) / 11


def _mean(values: np.ndarray) -> float:
    """COCOeval.summarize's mean over the entries that are not -1 (absent classes); -1 when
    there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


# ----------------------------------------------------------------------------- public


def mean_average_precision(preds: Sequence[Mapping[str, Any]],
                           targets: Sequence[Mapping[str, Any]], *,
                           iou_thresholds: Union[None, float, Sequence[float]] = None,
                           method: str = "coco") -> Dict[str, Any]:
    """Mean average precision of detections over a set of images.

    preds: one dict per image with "boxes" (D, 4) xyxy, "scores" (D,) and "labels" (D,);
    targets: one dict per image with "boxes" (G, 4) xyxy and "labels" (G,). Boxes in any
    unit (pixels or fractions, the same for both); labels any integer ids; D and G may be 0
    (an empty array of any shape stands for no boxes). NumPy or CuPy arrays (or anything
    np.asarray takes); GPU arrays are copied to the host.

    method "coco": pycocotools' COCOeval with iouType "bbox", "all" area range, 100
    detections per image and class, 101 recall points, IoU 0.50:0.05:0.95. At each IoU
    threshold t, in decreasing score order (ties: image order, then input order, as
    COCOeval's stable sorts), each detection takes the unmatched ground truth of highest
    IoU >= t. Returns {"map": mean over thresholds, recall points and classes,
    "map_50": the same at IoU 0.5, "map_75": at IoU 0.75, "map_per_class": {label: AP}}.
    iou_thresholds replaces the thresholds that "map" and "map_per_class" average over;
    "map_50" and "map_75" stay the AP at IoU 0.5 and 0.75 whether listed or not.

    method "voc07" (11-point interpolated AP) or "voc" (all points: the area under the
    monotone precision envelope): the PASCAL VOC devkit's rules at IoU > 0.5 (strictly);
    each detection's candidate is the ground truth of highest IoU, and if an earlier
    detection took it, the detection is a false positive. Returns {"map", "map_per_class"};
    iou_thresholds replaces 0.5 and the APs are averaged over the thresholds.

    Every AP is in [0, 1]. A class (a label found in preds or targets) without ground truth
    gets AP -1 and is left out of the means; "map" is -1 when no class has ground truth. IoU
    is intersection / union with no +1 pixel (also for VOC), computed bit for bit as
    pycocotools does on the boxes converted to (x, y, w, h).
    """
    method = _method(method)
    requested = _thresholds(iou_thresholds, method)
    dt = _read(preds, "preds", scored=True)
    gt = _read(targets, "targets", scored=False)
    images = len(preds)
    if len(targets) != images:
        raise ValueError(f"{OP}: preds has {images} images but targets has {len(targets)}")
    classes, cls = np.unique(np.concatenate((dt.labels, gt.labels)), return_inverse=True)
    cls = cls.reshape(-1)
    dt_cls, gt_cls = cls[:len(dt.labels)], cls[len(dt.labels):]
    K = len(classes)

    # Groups are (class, image) keys; ground truth sorted by key keeps input order inside.
    gt_key = gt_cls * images + gt.image
    gt_order = np.argsort(gt_key, kind="stable")
    gt_key = gt_key[gt_order]
    gt_boxes = gt.boxes[gt_order]
    dt_key = dt_cls * images + dt.image
    # Detections by key, then decreasing score, ties in input order (lexsort is stable).
    dt_order = np.lexsort((-dt.scores, dt_key))
    dt_key = dt_key[dt_order]
    dt_boxes = dt.boxes[dt_order]
    n = len(dt_key)
    first_in_group = np.diff(dt_key, prepend=-1) != 0
    position = np.arange(n)
    rank = position - np.maximum.accumulate(np.where(first_in_group, position, 0))
    lo = np.searchsorted(gt_key, dt_key, side="left")
    count = np.searchsorted(gt_key, dt_key, side="right") - lo

    if method == "coco":
        thresholds = np.concatenate((requested, [t for t in (0.5, 0.75) if t not in requested]))
        kept = rank < COCO_MAX_DETECTIONS
        gt_ignored = _areas(gt_boxes) > COCO_MAX_AREA
        matched, on_ignored = _coco_match(
            np.flatnonzero(kept & (count > 0)), rank, lo, count, dt_boxes, gt_boxes,
            gt_ignored, thresholds, n)
        ignored = on_ignored | (~matched & (_areas(dt_boxes) > COCO_MAX_AREA))
        tp, fp = matched & ~ignored, ~matched & ~ignored
        # COCOeval counts only regular ground truth as positives.
        positives = np.bincount(gt_cls[gt_order][~gt_ignored], minlength=K)
    else:
        thresholds = requested
        kept = np.ones(n, dtype=bool)
        tp = _voc_match(np.flatnonzero(count > 0), lo, count, dt_boxes, gt_boxes,
                        thresholds, n)
        positives = np.bincount(gt_cls, minlength=K)

    # Per class, all images' detections in decreasing score order, ties by image then by
    # input order (COCOeval.accumulate's stable sort of the image-ordered concatenation).
    dt_index = dt_order[kept]
    by_score = np.lexsort((dt_index, -dt.scores[dt_index], dt_cls[dt_index]))
    columns = np.flatnonzero(kept)[by_score]
    bounds = np.searchsorted(dt_cls[dt_index][by_score], np.arange(K + 1))
    T = len(thresholds)
    if method == "coco":
        precision = -np.ones((T, len(COCO_RECALL_POINTS), K))
        for k in np.flatnonzero(positives):
            c = columns[bounds[k]:bounds[k + 1]]
            precision[:, :, k] = _coco_precision(tp[:, c], fp[:, c], int(positives[k]))
        chosen = precision[:len(requested)]
        return {
            "map": _mean(chosen),
            "map_50": _mean(precision[int(np.flatnonzero(thresholds == 0.5)[0])]),
            "map_75": _mean(precision[int(np.flatnonzero(thresholds == 0.75)[0])]),
            "map_per_class": {int(label): _mean(chosen[:, :, k])
                              for k, label in enumerate(classes)},
        }
    ap = -np.ones((T, K))
    for k in np.flatnonzero(positives):
        c = columns[bounds[k]:bounds[k + 1]]
        ap[:, k] = _voc_ap(tp[:, c], int(positives[k]), points=method == "voc07")
    per_class = np.where(positives > 0, ap.mean(axis=0), -1.0)
    return {"map": _mean(per_class),
            "map_per_class": {int(label): float(v) for label, v in zip(classes, per_class)}}
