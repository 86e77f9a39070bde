"""fastconv.detection.mean_average_precision: the COCO mode against pycocotools' COCOeval on
randomized detection sets, the VOC modes on hand-worked cases and against a plain-Python
transcription of the devkit's loop, and every documented error."""

from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fastconv.detection import mean_average_precision
from fastconv.detection.synthetic import coco_format, random_detection_set

TOL = 1e-12


# ----------------------------------------------------------------------------------------
# Inputs and references
# ----------------------------------------------------------------------------------------

def hard_set(seed: int, images: int = 40, detections: int = 12, classes: int = 5,
             grid: Optional[float] = 0.25):
    """A random set made hard: boxes on a grid (default a quarter pixel: many equal IoUs)
    with duplicated ground truth (IoU ties), scores on a 0.05 grid (score ties), images with
    no detections or no ground truth, and labels that are neither contiguous nor
    non-negative."""
    rng = np.random.default_rng(seed)
    preds, targets = random_detection_set(rng, images, detections, classes,
                                          objects_per_image=4.0)
    ids = np.array([-3, 0, 7, 42, 1000, 5, 9, 11])[:classes]
    for i, (p, t) in enumerate(zip(preds, targets)):
        if grid is not None:
            p["boxes"] = np.round(p["boxes"] / grid) * grid
            t["boxes"] = np.round(t["boxes"] / grid) * grid
        p["scores"] = np.round(p["scores"] * 20) / 20
        p["labels"] = ids[p["labels"]]
        t["labels"] = ids[t["labels"]]
        if len(t["labels"]) and rng.random() < 0.3:
            dup = rng.integers(0, len(t["labels"]), 2)
            t["boxes"] = np.concatenate((t["boxes"], t["boxes"][dup]))
            t["labels"] = np.concatenate((t["labels"], t["labels"][dup]))
        if i % 7 == 3:
            preds[i] = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0),
                        "labels": np.zeros(0, np.int64)}
        if i % 5 == 1:
            targets[i] = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}
    return preds, targets


def cocoeval(preds, targets, iou_thresholds: Optional[List[float]] = None) -> COCOeval:
    """pycocotools' evaluate + accumulate + summarize, its printing silenced."""
    dataset, results = coco_format(preds, targets)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        if iou_thresholds is not None:
            ev.params.iouThrs = np.array(iou_thresholds)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_per_class(ev: COCOeval) -> Dict[int, float]:
    """AP per category: the mean over thresholds and recall points of the "all" area, 100
    detections precision; -1 for categories without ground truth."""
    precision = ev.eval["precision"][:, :, :, 0, -1]
    return {int(c): float(precision[:, :, k].mean()) if (precision[:, :, k] > -1).any()
            else -1.0 for k, c in enumerate(ev.params.catIds)}


def assert_same_classes(got: Dict[int, float], want: Dict[int, float]) -> None:
    assert sorted(got) == sorted(want)
    for label in want:
        assert abs(got[label] - want[label]) <= TOL, (label, got[label], want[label])


def plain_iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def voc_reference(preds, targets, threshold: float, eleven_points: bool) -> Dict[int, float]:
    """The devkit's voc_eval loop in plain Python: per class, detections in decreasing score
    order (Python's stable sort: ties in image, then input order); each takes the ground truth
    of highest IoU (the first of equal ones) if that IoU > threshold and it is free, else it
    is a false positive. 11-point: recall levels k / 10 compared exactly."""
    labels = sorted({int(v) for d in list(preds) + list(targets) for v in d["labels"]})
    aps = {}
    for c in labels:
        gts = [[list(b) for b, v in zip(t["boxes"], t["labels"]) if v == c] for t in targets]
        positives = sum(len(g) for g in gts)
        if positives == 0:
            aps[c] = -1.0
            continue
        dets = [(float(s), i, list(b)) for i, p in enumerate(preds)
                for b, s, v in zip(p["boxes"], p["scores"], p["labels"]) if v == c]
        dets.sort(key=lambda d: -d[0])
        taken = [[False] * len(g) for g in gts]
        hits = []
        for _, i, box in dets:
            ious = [plain_iou(box, g) for g in gts[i]]
            best = max(ious, default=-1.0)
            if best > threshold and not taken[i][ious.index(best)]:
                taken[i][ious.index(best)] = True
                hits.append(1)
            else:
                hits.append(0)
        tp = np.cumsum(hits)
        precision = [tp[n] / (n + 1) for n in range(len(hits))]
        if eleven_points:
            aps[c] = sum(max([p for p, t in zip(precision, tp) if 10 * t >= k * positives],
                             default=0.0) for k in range(11)) / 11
        else:
            mrec = [0.0] + [t / positives for t in tp] + [1.0]
            mpre = [0.0] + precision + [0.0]
            for n in range(len(mpre) - 2, -1, -1):
                mpre[n] = max(mpre[n], mpre[n + 1])
            aps[c] = sum((mrec[n + 1] - mrec[n]) * mpre[n + 1] for n in range(len(mrec) - 1)
                         if mrec[n + 1] != mrec[n])
    return aps


def image(boxes, labels, scores=None) -> dict:
    out = {"boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
           "labels": np.array(labels, dtype=np.int64)}
    if scores is not None:
        out["scores"] = np.array(scores, dtype=np.float64)
    return out


# ----------------------------------------------------------------------------------------
# COCO mode against pycocotools
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, grid", [(0, 0.25), (1, 0.25), (2, 0.25), (3, 1.0), (4, 1.0),
                                        (5, None), (6, None)])
def test_coco_equals_pycocotools(seed, grid):
    preds, targets = hard_set(seed, grid=grid)
    got = mean_average_precision(preds, targets)
    ev = cocoeval(preds, targets)
    assert set(got) == {"map", "map_50", "map_75", "map_per_class"}
    for key, stat in (("map", 0), ("map_50", 1), ("map_75", 2)):
        assert abs(got[key] - ev.stats[stat]) <= TOL, (key, got[key], ev.stats[stat])
    assert_same_classes(got["map_per_class"], coco_per_class(ev))
    assert 0 < got["map"] < got["map_50"] < 1


def test_coco_custom_thresholds_equal_pycocotools():
    preds, targets = hard_set(11)
    thresholds = [0.3, 0.55, 0.8]
    got = mean_average_precision(preds, targets, iou_thresholds=thresholds)
    ev = cocoeval(preds, targets, thresholds)
    precision = ev.eval["precision"][:, :, :, 0, -1]
    assert abs(got["map"] - precision[precision > -1].mean()) <= TOL
    assert_same_classes(got["map_per_class"], coco_per_class(ev))
    # map_50 and map_75 keep their meaning when the thresholds do not list 0.5 or 0.75.
    default = cocoeval(preds, targets)
    assert abs(got["map_50"] - default.stats[1]) <= TOL
    assert abs(got["map_75"] - default.stats[2]) <= TOL


def test_coco_caps_detections_per_image_and_class_like_pycocotools():
    """150 detections of one class in one image around 40 objects: only the 100 best count,
    and across images the order of equal scores decides."""
    rng = np.random.default_rng(5)
    gt = np.round(rng.uniform(0, 400, (40, 2)) * 4) / 4
    gt = np.concatenate((gt, gt + 20), axis=1)
    pick = rng.integers(0, 40, 150)
    dt = gt[pick] + np.round(rng.normal(0, 3, (150, 4)) * 4) / 4
    dt = np.concatenate((np.minimum(dt[:, :2], dt[:, 2:]), np.maximum(dt[:, :2], dt[:, 2:])),
                        axis=1)
    scores = np.round(rng.random(150) * 10) / 10
    preds = [image(dt, np.full(150, 3), scores), image(dt[:60], np.full(60, 3), scores[:60])]
    targets = [image(gt, np.full(40, 3)), image(gt[:30], np.full(30, 3))]
    got = mean_average_precision(preds, targets)
    ev = cocoeval(preds, targets)
    for key, stat in (("map", 0), ("map_50", 1), ("map_75", 2)):
        assert abs(got[key] - ev.stats[stat]) <= TOL, key
    # The same as keeping only the 100 best (ties in input order) of image 0 by hand.
    best = np.sort(np.argsort(-scores, kind="stable")[:100])
    kept = [image(dt[best], np.full(100, 3), scores[best]), preds[1]]
    assert mean_average_precision(kept, targets) == got


def test_coco_area_range_matches_pycocotools():
    """COCOeval's "all" range ends at 1e10: ground truth above it is ignored (a detection on
    it neither counts nor hurts), and so is an unmatched detection above it."""
    huge = [0, 0, 2e5, 2e5]
    preds = [image([[0, 0, 10, 10], huge, [5e5, 0, 7e5, 2e5], [50, 50, 60, 60]], [1, 1, 1, 1],
                   [0.9, 0.8, 0.7, 0.6])]
    targets = [image([[0, 0, 10, 10], huge, [50, 50, 60, 61]], [1, 1, 1])]
    got = mean_average_precision(preds, targets)
    ev = cocoeval(preds, targets)
    for key, stat in (("map", 0), ("map_50", 1), ("map_75", 2)):
        assert abs(got[key] - ev.stats[stat]) <= TOL, key
    # Two positives, two true positives and nothing counted against them: AP 1 at 0.5.
    assert got["map_50"] == pytest.approx(1.0)


def test_coco_ties_go_to_the_last_of_equal_ious():
    """COCOeval keeps replacing its best match on equal IoU, so a detection takes the last of
    two equally good ground truths. A = [0, 0, 10, 10], B = [2, 0, 12, 10]; d1 = [1, 0, 11, 10]
    has IoU 90 / 110 with both and takes B; d2 = A then takes A at IoU 1. (Had d1 taken A,
    d2 would get B at IoU 80 / 120 and miss every threshold above 0.65.)"""
    targets = [image([[0, 0, 10, 10], [2, 0, 12, 10]], [2, 2])]
    preds = [image([[1, 0, 11, 10], [0, 0, 10, 10]], [2, 2], [0.9, 0.8])]
    got = mean_average_precision(preds, targets)
    ev = cocoeval(preds, targets)
    assert abs(got["map"] - ev.stats[0]) <= TOL
    # d1 is a TP at 0.50 .. 0.80 (IoU 0.818), d2 at every threshold: AP 1 at the first seven
    # thresholds; at 0.85 .. 0.95 d2 alone finds half the objects at precision 1/2 (d1 is
    # a FP ranked above it): 51 of 101 recall points at precision 1/2.
    assert got["map"] == pytest.approx((7 + 3 * 51 * 0.5 / 101) / 10)


def test_coco_class_only_in_preds_or_without_detections():
    preds = [image([[0, 0, 10, 10], [20, 20, 30, 30]], [4, 9], [0.9, 0.8])]
    targets = [image([[0, 0, 10, 10], [40, 40, 50, 50]], [4, 6])]
    got = mean_average_precision(preds, targets)
    ev = cocoeval(preds, targets)
    assert_same_classes(got["map_per_class"], coco_per_class(ev))
    # Class 4 is found perfectly (1/(1 + spacing(1)) at every recall point, COCOeval's
    # denominator), class 6 is missed (0), class 9 has no ground truth (-1, not averaged).
    assert got["map_per_class"][9] == -1.0
    assert got["map_per_class"][6] == 0.0
    assert got["map"] == pytest.approx(0.5)
    assert abs(got["map"] - ev.stats[0]) <= TOL


def test_coco_without_detections_or_ground_truth():
    nothing = [image([], [], [])]
    assert mean_average_precision(nothing, [image([[0, 0, 1, 1]], [3])]) == {
        "map": 0.0, "map_50": 0.0, "map_75": 0.0, "map_per_class": {3: 0.0}}
    assert mean_average_precision([image([[0, 0, 1, 1]], [3], [0.5])],
                                  [image([], [])])["map"] == -1.0
    assert mean_average_precision([], []) == {"map": -1.0, "map_50": -1.0, "map_75": -1.0,
                                              "map_per_class": {}}


def test_input_forms_give_the_same_result():
    """Lists, float32 boxes, integral float labels and (0,)-shaped empty arrays read the same
    as the canonical float64/int64 arrays."""
    preds, targets = hard_set(3, images=10)
    want = mean_average_precision(preds, targets)
    loose_preds = [{"boxes": p["boxes"].astype(np.float32).tolist() if len(p["boxes"])
                    else np.array([]), "scores": p["scores"].tolist(),
                    "labels": p["labels"].astype(np.float64)} for p in preds]
    loose_targets = [{"boxes": t["boxes"].astype(np.float32), "labels": t["labels"].tolist()}
                     for t in targets]
    assert mean_average_precision(loose_preds, loose_targets) == want


# ----------------------------------------------------------------------------------------
# VOC modes
# ----------------------------------------------------------------------------------------

def test_voc_hand_worked_single_class():
    # Two objects; in score order: d1 hits G1 exactly (TP), d2 overlaps G1 at IoU 0.9 but G1
    # is taken (FP), d3 hits nothing (FP), d4 hits G2 exactly (TP).
    # TP cumsum 1 1 1 2 -> precision 1, 1/2, 1/3, 1/2; recall 1/2, 1/2, 1/2, 1.
    # Envelope (max to the right): 1, 1/2, 1/2, 1/2.
    targets = [image([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1])]
    preds = [image([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60], [20, 0, 30, 10]],
                   [1, 1, 1, 1], [0.9, 0.8, 0.7, 0.6])]
    # All points: recall rises by 1/2 at d1 (envelope 1) and at d4 (envelope 1/2).
    voc = mean_average_precision(preds, targets, method="voc")
    assert voc["map"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    # 11 points: levels 0 .. 0.5 reach recall 1/2 at d1 (precision 1), levels 0.6 .. 1 need
    # recall 1, first reached at d4 (envelope 1/2): (6 * 1 + 5 * 1/2) / 11.
    voc07 = mean_average_precision(preds, targets, method="voc07")
    assert voc07["map"] == pytest.approx(8.5 / 11)
    assert set(voc) == set(voc07) == {"map", "map_per_class"}
    assert voc["map_per_class"] == {1: voc["map"]}


def test_voc_taken_candidate_is_a_false_positive_where_coco_moves_on():
    # G1 = [0, 0, 10, 10], G2 = [4, 0, 14, 10]. d1 = G1 (TP on G1). d2 = [1, 0, 11, 10]:
    # IoU with G1 = 90 / 110 = 0.818, with G2 = 70 / 130 = 0.538. VOC: its candidate G1 is
    # taken -> FP, precision 1, 1/2 at recall 1/2, 1/2 -> all points 1/2, 11 points 6/11.
    # COCO at 0.5 skips the taken G1 and matches G2 -> both TP -> AP 1.
    targets = [image([[0, 0, 10, 10], [4, 0, 14, 10]], [0, 0])]
    preds = [image([[0, 0, 10, 10], [1, 0, 11, 10]], [0, 0], [0.9, 0.8])]
    assert mean_average_precision(preds, targets, method="voc")["map"] == pytest.approx(0.5)
    assert mean_average_precision(preds, targets, method="voc07")["map"] == pytest.approx(6 / 11)
    coco = mean_average_precision(preds, targets, iou_thresholds=[0.5])
    assert coco["map"] == pytest.approx(1.0)


def test_voc_needs_iou_strictly_above_the_threshold():
    # d = [0, 0, 10, 5] on G = [0, 0, 10, 10]: intersection 50, union 100 -> IoU exactly 0.5.
    # VOC (IoU > 0.5): a false positive, AP 0. COCO (IoU >= 0.5): a true positive, AP 1.
    targets = [image([[0, 0, 10, 10]], [5])]
    preds = [image([[0, 0, 10, 5]], [5], [0.7])]
    assert mean_average_precision(preds, targets, method="voc")["map"] == 0.0
    assert mean_average_precision(preds, targets, method="voc07")["map"] == 0.0
    assert mean_average_precision(preds, targets, iou_thresholds=0.5)["map"] == pytest.approx(1)


def test_voc_equal_ious_go_to_the_first_ground_truth():
    # Two identical objects and two identical detections: both detections' candidate is the
    # first object (argmax takes the first), so the second detection is a false positive:
    # precision 1, 1/2 at recall 1/2, 1/2 -> all points 1/2. (COCO would give AP 1.)
    targets = [image([[0, 0, 10, 10], [0, 0, 10, 10]], [2, 2])]
    preds = [image([[0, 0, 10, 10], [0, 0, 10, 10]], [2, 2], [0.9, 0.8])]
    assert mean_average_precision(preds, targets, method="voc")["map"] == pytest.approx(0.5)


def test_voc07_compares_recall_levels_exactly():
    # Ten objects, three found first, then a false positive: recall 0.1, 0.2, 0.3, 0.3 and
    # precision 1, 1, 1, 3/4. Levels 0, 0.1, 0.2 and 0.3 are reached at precision 1; recall
    # 3/10 reaches level 0.3 exactly (the devkit's np.arange(0, 1.1, 0.1) holds
    # 0.30000000000000004 and would miss it): AP 4/11. All points: 3 * (1/10 * 1) = 0.3.
    gt = [[20 * k, 0, 20 * k + 10, 10] for k in range(10)]
    targets = [image(gt, [0] * 10)]
    preds = [image(gt[:3] + [[0, 50, 10, 60]], [0] * 4, [0.9, 0.8, 0.7, 0.6])]
    assert mean_average_precision(preds, targets, method="voc07")["map"] == pytest.approx(4 / 11)
    assert mean_average_precision(preds, targets, method="voc")["map"] == pytest.approx(0.3)


def test_voc_classes_and_images():
    # Class 3 in image 0 is the single-class case above (all points 3/4); class 7 has an
    # object in image 1 but no detection (0); class 9 only a detection (-1, not averaged);
    # the class-3 detection in image 1 has no object of its class there (FP after all others).
    targets = [image([[0, 0, 10, 10], [20, 0, 30, 10]], [3, 3]), image([[0, 0, 5, 5]], [7])]
    preds = [image([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60], [20, 0, 30, 10]],
                   [3, 3, 3, 3], [0.9, 0.8, 0.7, 0.6]),
             image([[0, 0, 5, 5], [1, 1, 4, 4]], [3, 9], [0.1, 0.5])]
    got = mean_average_precision(preds, targets, method="voc")
    assert got["map_per_class"] == {3: pytest.approx(0.75), 7: 0.0, 9: -1.0}
    assert got["map"] == pytest.approx(0.375)


def test_voc_several_thresholds_average():
    # One object, one detection at IoU 0.8 (d = [0, 0, 10, 8]): a TP above 0.5 and 0.7,
    # a FP above 0.85 -> APs 1, 1, 0 averaged: 2/3.
    targets = [image([[0, 0, 10, 10]], [1])]
    preds = [image([[0, 0, 10, 8]], [1], [0.5])]
    got = mean_average_precision(preds, targets, method="voc", iou_thresholds=[0.5, 0.7, 0.85])
    assert got["map"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("method", ["voc", "voc07"])
@pytest.mark.parametrize("seed", range(4))
def test_voc_equals_plain_python_devkit_loop(method, seed):
    preds, targets = hard_set(100 + seed, images=25)
    for threshold in (0.5, 0.3):
        want = voc_reference(preds, targets, threshold, eleven_points=method == "voc07")
        got = mean_average_precision(preds, targets, method=method, iou_thresholds=threshold)
        assert_same_classes(got["map_per_class"], want)
        valid = [v for v in want.values() if v > -1]
        assert abs(got["map"] - np.mean(valid)) <= TOL
        assert 0 < got["map"] < 1


# ----------------------------------------------------------------------------------------
# Synthetic sets and GPU input
# ----------------------------------------------------------------------------------------

def test_random_detection_set_is_well_formed():
    preds, targets = random_detection_set(np.random.default_rng(0), 30, 15, 6)
    assert len(preds) == len(targets) == 30
    for p, t in zip(preds, targets):
        assert p["boxes"].shape == (15, 4) and p["scores"].shape == (15,)
        assert p["labels"].dtype == np.int64 and t["labels"].dtype == np.int64
        for b in (p["boxes"], t["boxes"]):
            assert np.all(b[:, :2] <= b[:, 2:]) and np.all(b >= 0)
            assert np.all(b[:, [0, 2]] <= 640) and np.all(b[:, [1, 3]] <= 480)
    result = mean_average_precision(preds, targets)
    assert 0.05 < result["map"] < result["map_50"] < 0.95


@pytest.mark.cuda
def test_cupy_inputs_give_the_numpy_result():
    import cupy as cp

    preds, targets = hard_set(9)
    want = mean_average_precision(preds, targets)
    gpu = [{k: cp.asarray(v) for k, v in d.items()} for d in preds]
    gpu_targets = [{k: cp.asarray(v) for k, v in d.items()} for d in targets]
    assert mean_average_precision(gpu, gpu_targets) == want
    assert mean_average_precision(gpu, gpu_targets, method="voc") == mean_average_precision(
        preds, targets, method="voc")


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------

GOOD_PRED = {"boxes": np.array([[0.0, 0, 1, 1]]), "scores": np.array([0.5]),
             "labels": np.array([1])}
GOOD_TARGET = {"boxes": np.array([[0.0, 0, 1, 1]]), "labels": np.array([1])}


def pred(**changes):
    return [{**GOOD_PRED, **changes}]


def target(**changes):
    return [{**GOOD_TARGET, **changes}]


@pytest.mark.parametrize("preds, targets, kwargs, error, match", [
    (pred(), target() * 2, {}, ValueError, "1 images but targets has 2"),
    (GOOD_PRED, target(), {}, TypeError, "preds must be a list"),
    (pred(), "targets", {}, TypeError, "targets must be a list"),
    ([np.zeros(3)], target(), {}, TypeError, r"preds\[0\] must be a dict"),
    ([{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}], target(), {}, ValueError,
     r"preds\[0\] has no 'scores'"),
    (pred(boxes=np.zeros((1, 5))), target(), {}, ValueError, r"preds\[0\]\['boxes'\].*\(1, 5\)"),
    (pred(boxes=np.zeros(4)), target(), {}, ValueError, r"shape \(D, 4\), got \(4,\)"),
    (pred(scores=np.array([0.5, 0.4])), target(), {}, ValueError,
     r"preds\[0\]\['scores'\] shape \(2,\) must be \(1,\)"),
    (pred(), target(labels=np.array([1, 2])), {}, ValueError,
     r"targets\[0\]\['labels'\] shape \(2,\)"),
    (pred(labels=np.array([1.5])), target(), {}, TypeError, r"\['labels'\] must hold integers"),
    (pred(labels=np.array(["cat"])), target(), {}, TypeError, r"\['labels'\] must hold real"),
    (pred(), target(boxes=np.array([[0, 0, np.nan, 1]])), {}, ValueError,
     r"targets\[0\]\['boxes'\] row 0 .* must be finite"),
    (pred(boxes=np.array([[2.0, 0, 1, 1]])), target(), {}, ValueError,
     r"preds\[0\]\['boxes'\] row 0 .*x1 <= x2"),
    (pred(boxes=np.array([[0.0, 3, 1, 1]])), target(), {}, ValueError, "y1 <= y2"),
    (pred(scores=np.array([np.inf])), target(), {}, ValueError,
     r"preds\[0\]\['scores'\] row 0 is inf"),
    (pred(), target(), {"method": "voc12"}, ValueError, "method must be one of"),
    (pred(), target(), {"method": 7}, TypeError, "method must be a string"),
    (pred(), target(), {"iou_thresholds": []}, ValueError, "iou_thresholds must be one number"),
    (pred(), target(), {"iou_thresholds": [0.5, 1.5]}, ValueError, r"iou_thresholds must lie"),
    (pred(), target(), {"iou_thresholds": [np.nan]}, ValueError, r"iou_thresholds must lie"),
    (pred(), target(), {"iou_thresholds": ["a"]}, TypeError, "iou_thresholds must be a real"),
    (pred(), target(), {"iou_thresholds": [[0.5]]}, ValueError, r"got shape \(1, 1\)"),
])
def test_bad_input_raises_naming_the_argument(preds, targets, kwargs, error, match):
    with pytest.raises(error, match=match):
        mean_average_precision(preds, targets, **kwargs)


def test_bad_row_is_located_in_its_image():
    preds = pred() * 3
    preds[2] = {**GOOD_PRED, "boxes": np.array([[0.0, 0, 1, 1], [5, 5, 4, 6]]),
                "scores": np.array([0.1, 0.2]), "labels": np.array([1, 1])}
    with pytest.raises(ValueError, match=r"preds\[2\]\['boxes'\] row 1 is \[5\. 5\. 4\. 6\.\]"):
        mean_average_precision(preds, target() * 3)
