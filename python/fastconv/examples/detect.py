"""Object detection on one image with a trained YOLO: `python -m fastconv detect MODEL
IMAGE`.

MODEL is a file saved by `python -m fastconv train-yolo` (the network rebuilds itself from
the state dict: fastconv.detection.YOLO.from_state_dict). IMAGE is read with
scikit-image (PNG, JPEG, ...; grey or RGBA become RGB) and resized to the size the model
was trained on; boxes come back in the image's own pixels. Prints one JSON object on
stdout (the image's size and per detection: class, label, score, box in pixels and as
fractions) and draws the boxes on a PNG (--output).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from fastconv import nn
from fastconv.datasets import SHAPE_CLASSES
from fastconv.detection import YOLO

from . import _common, _detection


def read_rgb(path: str) -> np.ndarray:
    """The image at `path` as uint8 RGB (H, W, 3)."""
    from skimage import color, io
    from skimage.util import img_as_ubyte

    image = io.imread(path)
    if image.ndim == 2:
        image = color.gray2rgb(image)
    elif image.shape[-1] == 4:
        image = color.rgba2rgb(image)
    return img_as_ubyte(image)


def resized(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 RGB image resampled to size (H, W) (unchanged when it already has it)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    from skimage.transform import resize
    from skimage.util import img_as_ubyte

    return img_as_ubyte(resize(image, tuple(size), anti_aliasing=True))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Detect with the flags in `argv`; prints and returns the JSON object."""
    p = argparse.ArgumentParser(prog="python -m fastconv detect",
                                description="Run a YOLO trained by train-yolo on an image: "
                                            "JSON on stdout, boxes drawn on a PNG.")
    p.add_argument("model", help="a model file saved by train-yolo (.safetensors or .npz)")
    p.add_argument("image", help="the image file")
    p.add_argument("--output", default="detections.png", metavar="PNG",
                   help="where to draw the boxes (default detections.png); '' for none")
    p.add_argument("--score-threshold", type=float, default=_detection.SHOW_SCORE_THRESHOLD,
                   help="drop detections scoring at most this (default 0.6, the course's)")
    p.add_argument("--iou-threshold", type=float, default=0.5,
                   help="non-max suppression per class at this IoU (default 0.5)")
    p.add_argument("--classes", default=",".join(SHAPE_CLASSES),
                   help="comma-separated class names in label order (default the shapes "
                        "classes)")
    args = p.parse_args(argv)
    model = YOLO.from_state_dict(nn.load(args.model))
    names = [n for n in args.classes.split(",") if n]
    image = read_rgb(args.image)
    height, width = image.shape[:2]
    size = tuple(int(n) for n in model.image_size)
    found = model.detect(_detection.as_input(resized(image, size)[None]),
                         score_threshold=args.score_threshold,
                         iou_threshold=args.iou_threshold)[0]
    scale = np.array([width, height, width, height], dtype=np.float64)
    detections = []
    for box, score, label in zip(found["boxes"], found["scores"], found["labels"]):
        label = int(label)
        detections.append({
            "class": names[label] if label < len(names) else str(label), "label": label,
            "score": round(float(score), 4),
            "box": [round(float(v), 1) for v in box * scale],
            "box_fraction": [round(float(v), 4) for v in box]})
    out = {"image": str(args.image), "width": width, "height": height,
           "detections": detections}
    print(json.dumps(out, indent=2))
    if args.output:
        draw(image, found, args.output, Path(args.image).name, names)
    return out


def draw(image: np.ndarray, found: Dict[str, np.ndarray], path: str, title: str,
         names: Sequence[str]) -> None:
    """The image with the detections' boxes, names and scores, as a PNG at `path`."""
    height, width = image.shape[:2]
    with _common.figure(path, f"{title}: {len(found['boxes'])} detections",
                        figsize=(5, 5 * height / width + 0.4)) as ax:
        _detection.show_image(ax, image)
        _detection.draw_boxes(ax, found["boxes"], width, height, labels=found["labels"],
                              scores=found["scores"], names=names)


if __name__ == "__main__":
    main()
