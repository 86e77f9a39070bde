"""Data sets made offline, with a seed: `shapes`, the detection set of the YOLO and Fast
R-CNN examples (coloured shapes on a white background, drawn by scikit-image).

The splits the examples use: `shapes(2000, seed=0)` to train, `shapes(500, seed=1)` held
out. Needs scikit-image (the `examples` extra).
"""

from __future__ import annotations

import numbers
import warnings
from typing import List, NamedTuple

import numpy as np

SHAPE_CLASSES = ("rectangle", "circle", "triangle", "ellipse")
"""Class names of `shapes`, in label order (label 0 is a rectangle)."""

MIN_SHAPES, MAX_SHAPES = 1, 4
MIN_SIZE, MAX_SIZE = 16, 48


class Shapes(NamedTuple):
    """What `shapes` returns.

    images: (n, size, size, 3) uint8 RGB, white (255) background.
    boxes: n arrays (M_i, 4) float64, xyxy as fractions of the image side: pixel columns
        x1 * size .. x2 * size (end exclusive) and rows y1 * size .. y2 * size.
    labels: n arrays (M_i,) int64 in [0, 4), indices into SHAPE_CLASSES.
    """

    images: np.ndarray
    boxes: List[np.ndarray]
    labels: List[np.ndarray]


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"shapes: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"shapes: {name} must be >= {minimum}, got {value}")
    return int(value)


def shapes(n: int, *, size: int = 128, seed: int = 0) -> Shapes:
    """`n` RGB images of 1 to 4 non-overlapping filled shapes each (rectangle, circle,
    equilateral triangle pointing up, rotated ellipse), of random colours and sizes 16 to
    48 pixels, from `skimage.draw.random_shapes`, with their bounding boxes and labels.

    One NumPy generator seeded with `seed` draws every image in turn, so a split is the
    same on every run (with the same scikit-image drawing code) and `shapes(k, seed=s)` is
    the first k images of `shapes(n, seed=s)` for k <= n. When no shape fits (scikit-image
    then warns), the image is drawn again from the same generator. `size` >= 48 (the
    largest shape) is the image side in pixels.
    """
    n = _count("n", n, 0)
    size = _count("size", size, MAX_SIZE)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"shapes: seed must be an int, got {seed!r}")
    try:
        from skimage.draw import random_shapes
    except ImportError as error:
        raise ImportError("fastconv.datasets.shapes needs scikit-image: pip install "
                          "'fastconv[examples]'") from error

    rng = np.random.default_rng(int(seed))
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    boxes: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    for i in range(n):
        found: list = []
        while not found:
            with warnings.catch_warnings():
                # "Could not fit any shapes": handled by drawing the image again.
                warnings.simplefilter("ignore", UserWarning)
                image, found = random_shapes((size, size), MAX_SHAPES, MIN_SHAPES,
                                             min_size=MIN_SIZE, max_size=MAX_SIZE,
                                             num_channels=3, rng=rng)
        images[i] = image
        # scikit-image labels each shape (name, ((row0, row1), (col0, col1))), ends
        # exclusive. A triangle drawn near the top edge is cut off there (about 3% of the
        # triangles are flat slivers) while its label starts above the image: the boxes
        # are clipped to the drawn part.
        spans = np.array([[c0, r0, c1, r1] for _, ((r0, r1), (c0, c1)) in found],
                         dtype=np.float64)
        boxes.append(np.clip(spans, 0, size) / size)
        labels.append(np.array([SHAPE_CLASSES.index(name) for name, _ in found],
                               dtype=np.int64))
    return Shapes(images, boxes, labels)
