"""fastconv.detection.mean_average_precision against pycocotools' COCOeval, in one process.

    python benchmarks/map_vs_pycocotools.py [--images 5000] [--detections 20] [--classes 80]

Both evaluate the same random_detection_set. pycocotools is timed from its result list to
the summary (COCO.loadRes + evaluate + accumulate + summarize; the ground-truth index is
built beforehand and timed apart); fastconv from the per-image arrays to the result dict.
Prints both times, their ratio and the largest |difference| over map, map_50, map_75 and
every class's AP.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from typing import List, Optional

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fastconv.detection import mean_average_precision
from fastconv.detection.synthetic import coco_format, random_detection_set


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=20, help="per image")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="fastconv runs (the best counts); pycocotools runs once")
    args = parser.parse_args(argv)

    preds, targets = random_detection_set(np.random.default_rng(args.seed), args.images,
                                          args.detections, args.classes)
    dataset, results = coco_format(preds, targets)
    objects = sum(len(t["labels"]) for t in targets)
    print(f"{args.images} images, {len(results)} detections, {objects} objects, "
          f"{args.classes} classes")

    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        index_s = time.perf_counter() - start
        start = time.perf_counter()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        coco_s = time.perf_counter() - start

    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        ours = mean_average_precision(preds, targets)
        times.append(time.perf_counter() - start)
    ours_s = min(times)

    precision = ev.eval["precision"][:, :, :, 0, -1]
    diffs = [abs(ours[key] - ev.stats[i]) for i, key in enumerate(("map", "map_50", "map_75"))]
    for k, label in enumerate(ev.params.catIds):
        ap = precision[:, :, k].mean() if (precision[:, :, k] > -1).any() else -1.0
        diffs.append(abs(ours["map_per_class"][label] - ap))
    print(f"pycocotools  loadRes+evaluate+accumulate+summarize {coco_s:8.3f} s "
          f"(ground-truth index {index_s:.3f} s apart)")
    print(f"fastconv     mean_average_precision             {ours_s:8.3f} s "
          f"(best of {args.repeat})")
    print(f"speed-up     {coco_s / ours_s:.1f}x")
    print(f"map {ours['map']:.6f}  map_50 {ours['map_50']:.6f}  map_75 {ours['map_75']:.6f}; "
          f"max |difference| over these and {len(ev.params.catIds)} classes: {max(diffs):.3g}")


if __name__ == "__main__":
    main()
