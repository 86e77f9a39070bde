"""YOLO on the shapes data set: `python -m fastconv train-yolo`.

Trains fastconv.detection.YOLO (an 8 x 8 grid of 16-pixel cells on 128 x 128 images, 5
anchor boxes from k-means on the training boxes, 4 classes) on the 2,000 training images
of fastconv.datasets.shapes (seed 0) with yolo_loss, Adam and a cosine learning-rate
schedule, mirroring half of the images at random. Then prints mAP@0.5 (VOC, all points)
and COCO mAP@[.5:.95] on the 500 held-out images (seed 1), saves a PNG grid of held-out
images with predicted and true boxes, and saves the model (a .safetensors state dict that
`python -m fastconv detect` reads).

`--quick` (for CI) trains 5 epochs on the same data; the README gives the measured figures.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from fastconv import Tensor
from fastconv.datasets import SHAPE_CLASSES
from fastconv.detection import YOLO, yolo_encode, yolo_loss

from . import _detection

EPOCHS, QUICK_EPOCHS = 24, 5
ANCHORS = 5
CHANNELS = (32, 64, 128, 128)
BLOCK, UNPOOLED = 4, 2       # space-to-depth 4 x 4, then pools after the first 2 stages


def encode_split(split: _detection.Split, anchors: np.ndarray, grid: int,
                 ) -> tuple:
    """YOLO targets of every image and of its mirror image, (N, S, S, B, 5 + K) float32
    each, and the indices of the images they cover: an image where two boxes claim one
    (cell, anchor) (yolo_encode's ValueError; 4 of the 2,000 training images) is left
    out of training."""
    kept: List[int] = []
    plain, flipped = [], []
    for i, (boxes, labels) in enumerate(zip(split.boxes, split.labels)):
        try:
            y = yolo_encode(boxes, labels, grid_size=grid, anchors=anchors,
                            num_classes=len(SHAPE_CLASSES))
            y_mirror = yolo_encode(_detection.mirrored(boxes), labels, grid_size=grid,
                                   anchors=anchors, num_classes=len(SHAPE_CLASSES))
        except ValueError:
            continue
        kept.append(i)
        plain.append(y)
        flipped.append(y_mirror)
    return (np.array(kept), np.stack(plain).astype(np.float32),
            np.stack(flipped).astype(np.float32))


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Train and evaluate with the flags in `argv`; returns the held-out mAP@0.5."""
    args = _detection.parser("python -m fastconv train-yolo",
                             "Train a small YOLO on fastconv.datasets.shapes and report its "
                             "held-out mAP.", epochs=EPOCHS, plot="yolo_shapes.png",
                             model="yolo_shapes.safetensors").parse_args(argv)
    train, held_out, anchors = _detection.prepare(args, QUICK_EPOCHS, ANCHORS)
    model = YOLO(len(SHAPE_CLASSES), anchors, channels=CHANNELS, unpooled=UNPOOLED,
                 block=BLOCK, image_size=train.images.shape[1:3])
    grid = train.images.shape[1] // model.stride
    kept, targets, mirror_targets = encode_split(train, anchors, grid)
    inputs = train.inputs[kept]

    def loss_of(index: np.ndarray, flip: np.ndarray) -> Tensor:
        x = _detection.flip_inputs(inputs[index], flip)
        y = np.where(flip[:, None, None, None, None], mirror_targets[index], targets[index])
        return yolo_loss(model(Tensor(x)), y, anchors)

    losses, seconds = _detection.train(model, len(kept), loss_of, epochs=args.epochs,
                                       batch_size=args.batch_size, lr=args.lr,
                                       seed=args.seed, progress=not args.no_progress,
                                       desc="YOLO")
    detections = model.detect(held_out.inputs,
                              score_threshold=_detection.EVAL_SCORE_THRESHOLD,
                              max_output=100)
    if len(kept) < len(train.boxes):
        print(f"({len(train.boxes) - len(kept)} training images left out: two boxes on one "
              "cell and anchor)")
    return _detection.conclude("YOLO", model, detections, held_out, losses, seconds, len(kept),
                               args, f" (python -m fastconv detect {args.model} IMAGE)")


if __name__ == "__main__":
    main()
