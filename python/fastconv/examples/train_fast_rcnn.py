"""A region-based detector (Fast R-CNN style) on the shapes data set:
`python -m fastconv train-fast-rcnn`.

fastconv.detection.region.FastRCNN: a backbone (4 x 4 space-to-depth, three 3x3 conv /
batch norm / LeakyReLU stages of 32, 64, 128 channels, two 2x2 max pools) to a stride-16
feature map (8 x 8 on the 128 x 128 images), the fixed anchor proposals of 5 k-means shapes
on every cell (320 per image), RoI align of each proposal to 4 x 4, and a fully connected
head that classifies the region (4 classes or background) and regresses its box as deltas.
Trained end to end (the backbone learns through RoI align) on minibatches of 64 regions per
image (at most a quarter holding an object; the ground-truth boxes join the proposals
during training), on the same 2,000 training images as train-yolo; mAP on the same 500
held-out images.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from fastconv import Tensor
from fastconv.datasets import SHAPE_CLASSES
from fastconv.detection.region import FastRCNN, fast_rcnn_loss

from . import _detection

EPOCHS, QUICK_EPOCHS = 10, 1
ANCHORS = 5
CHANNELS = (32, 64, 128)
SAMPLES_PER_IMAGE = 64


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Train and evaluate with the flags in `argv`; returns the held-out mAP@0.5."""
    args = _detection.parser("python -m fastconv train-fast-rcnn",
                             "Train a Fast R-CNN style detector (anchor proposals, RoI "
                             "align, classifier and box-delta head) on "
                             "fastconv.datasets.shapes and report its held-out mAP.",
                             epochs=EPOCHS, plot="fast_rcnn_shapes.png",
                             model="fast_rcnn_shapes.safetensors").parse_args(argv)
    train, held_out, anchors = _detection.prepare(args, QUICK_EPOCHS, ANCHORS)
    model = FastRCNN(len(SHAPE_CLASSES), anchors, channels=CHANNELS,
                     image_size=train.images.shape[1:3])
    mirror_boxes = [_detection.mirrored(b) for b in train.boxes]
    rng = np.random.default_rng(args.seed + 2)

    def loss_of(index: np.ndarray, flip: np.ndarray) -> Tensor:
        x = _detection.flip_inputs(train.inputs[index], flip)
        boxes = [mirror_boxes[i] if f else train.boxes[i] for i, f in zip(index, flip)]
        rois, classes, targets = model.training_targets(
            boxes, [train.labels[i] for i in index], rng,
            samples_per_image=SAMPLES_PER_IMAGE)
        logits, deltas = model(Tensor(x), rois)
        return fast_rcnn_loss(logits, deltas, classes, targets)

    losses, seconds = _detection.train(model, len(train.inputs), loss_of, epochs=args.epochs,
                                       batch_size=args.batch_size, lr=args.lr,
                                       seed=args.seed, progress=not args.no_progress,
                                       desc="Fast R-CNN")
    detections = model.detect(held_out.inputs,
                              score_threshold=_detection.EVAL_SCORE_THRESHOLD)
    return _detection.conclude("Fast R-CNN", model, detections, held_out, losses, seconds,
                               len(train.inputs), args)


if __name__ == "__main__":
    main()
