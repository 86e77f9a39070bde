"""Random but realistic detection sets, and their pycocotools form, for benchmarks and tests
of the detection metrics."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np


def random_detection_set(rng: np.random.Generator, images: int, detections_per_image: int,
                         classes: int, *, image_size: Tuple[float, float] = (640.0, 480.0),
                         objects_per_image: float = 7.0
                         ) -> Tuple[List[Dict[str, np.ndarray]], List[Dict[str, np.ndarray]]]:
    """A detector's output and the ground truth for `images` images.

    Per image, Poisson(objects_per_image) ground-truth objects of uniform random classes in
    [0, classes), boxes of log-uniform width and height (4 px to half the image) inside the
    image (width, height = image_size, pixels). Of the detections_per_image detections,
    about half look at objects (each a box jittered around a random object by ~10% of its
    size, the object's label 90% of the time, score mostly high; duplicates happen), the rest
    are false positives (random box and label, score mostly low). Images without objects
    have only false positives.

    Returns (preds, targets) in mean_average_precision's form: preds[i] has "boxes" (D, 4)
    float64 xyxy pixels, "scores" (D,) float64 in [0, 1), "labels" (D,) int64; targets[i]
    has "boxes" (G, 4) and "labels" (G,).
    """
    width, height = image_size
    preds: List[Dict[str, np.ndarray]] = []
    targets: List[Dict[str, np.ndarray]] = []
    D = detections_per_image
    for _ in range(images):
        g = int(rng.poisson(objects_per_image))
        gt_boxes = _random_boxes(rng, g, width, height)
        gt_labels = rng.integers(0, classes, g)
        hits = int(rng.binomial(D, 0.5)) if g else 0
        which = rng.integers(0, max(g, 1), hits)
        source = gt_boxes[which]
        size = np.tile(source[:, 2:] - source[:, :2], 2)
        jittered = _clip(source + 0.1 * size * rng.standard_normal((hits, 4)), width, height)
        relabel = rng.random(hits) < 0.1
        hit_labels = np.where(relabel, rng.integers(0, classes, hits), gt_labels[which])
        misses = D - hits
        boxes = np.concatenate((jittered, _random_boxes(rng, misses, width, height)))
        labels = np.concatenate((hit_labels, rng.integers(0, classes, misses)))
        scores = np.concatenate((rng.beta(4, 2, hits), rng.beta(2, 4, misses)))
        shuffle = rng.permutation(D)
        preds.append({"boxes": boxes[shuffle], "scores": scores[shuffle],
                      "labels": labels[shuffle].astype(np.int64)})
        targets.append({"boxes": gt_boxes, "labels": gt_labels.astype(np.int64)})
    return preds, targets


def coco_format(preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
                ) -> Tuple[Dict[str, list], List[Dict[str, Any]]]:
    """(preds, targets) in pycocotools' form: (the ground-truth dataset for COCO(), the
    result list for COCO.loadRes). Image i gets id i + 1, labels are the category ids (all
    labels found in either), boxes become [x, y, w, h] and a ground truth's area is w * h.
    """
    labels = set()
    dataset: Dict[str, list] = {"images": [], "annotations": [], "categories": []}
    results: List[Dict[str, Any]] = []
    for i, (pred, target) in enumerate(zip(preds, targets)):
        dataset["images"].append({"id": i + 1})
        for box, label in zip(_xywh(target["boxes"]), np.asarray(target["labels"]).tolist()):
            labels.add(label)
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": i + 1, "category_id": label,
                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for box, score, label in zip(_xywh(pred["boxes"]), np.asarray(pred["scores"]).tolist(),
                                     np.asarray(pred["labels"]).tolist()):
            labels.add(label)
            results.append({"image_id": i + 1, "category_id": label, "bbox": box,
                            "score": score})
    dataset["categories"] = [{"id": label} for label in sorted(labels)]
    return dataset, results


def _xywh(boxes: Any) -> List[List[float]]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate((b[:, :2], b[:, 2:] - b[:, :2]), axis=1).tolist()


def _random_boxes(rng: np.random.Generator, n: int, width: float, height: float) -> np.ndarray:
    size = np.exp(rng.uniform(np.log(4.0), np.log(0.5 * np.array([width, height])), (n, 2)))
    corner = rng.random((n, 2)) * (np.array([width, height]) - size)
    return np.concatenate((corner, corner + size), axis=1)


def _clip(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Boxes clipped to the image, corners reordered where the jitter crossed them."""
    limit = np.array([width, height, width, height])
    boxes = np.clip(boxes, 0.0, limit)
    return np.concatenate((np.minimum(boxes[:, :2], boxes[:, 2:]),
                           np.maximum(boxes[:, :2], boxes[:, 2:])), axis=1)
