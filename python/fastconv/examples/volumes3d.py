"""A 3-D ConvNet on synthetic volumes, spheres vs cubes: `python -m fastconv train-3d`.

Each sample is a 16x16x16 voxel grid holding one solid sphere or one solid axis-aligned
cube of random size and position, with random brightness, a random constant background
and Gaussian noise. Sizes are drawn so the two shapes overlap in volume: the network has
to look at corners and faces, not at the amount of foreground.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import models, nn, optim

from . import _common

CLASSES = ("sphere", "cube")
SIZE = 16         # voxels per side
TEST_FRACTION = 0.25


def make_volumes(n: int, seed: int = 0, noise: float = 0.25,
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """(volumes (n, 1, SIZE, SIZE, SIZE) float32, labels (n,) int64; 0 sphere, 1 cube),
    balanced."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    # Voxel centres, so a shape's extent does not depend on which side of a voxel its
    # centre lands.
    grid = np.stack(np.meshgrid(*[np.arange(SIZE) + 0.5] * 3, indexing="ij"))  # (3, S, S, S)
    volumes = np.empty((n, 1, SIZE, SIZE, SIZE), np.float32)
    for i, label in enumerate(labels):
        # Half-extent 2.5..5.5 voxels; the cube's is scaled down so equal draws give
        # similar volumes for both shapes ((4/3)pi r^3 vs (2h)^3 means h ~ 0.8 r).
        radius = rng.uniform(2.5, 5.5)
        center = rng.uniform(radius + 0.5, SIZE - radius - 0.5, size=3)
        offset = grid - center[:, None, None, None]
        if label == 0:
            inside = (offset ** 2).sum(axis=0) <= radius ** 2
        else:
            inside = np.abs(offset).max(axis=0) <= 0.8 * radius
        background = rng.uniform(-0.3, 0.3)
        volume = background + rng.uniform(0.7, 1.3) * inside
        volumes[i, 0] = volume + rng.normal(0.0, noise, volume.shape)
    return volumes, labels.astype(np.int64)


def convnet3d(num_classes: int = len(CLASSES)) -> nn.Module:
    """`fastconv.models.convnet3d` at half its default width (8/16/32 channels): enough for
    two shapes, and 16^3 volumes train in seconds."""
    return models.convnet3d(in_channels=1, num_classes=num_classes, width=8, dropout=0.2)


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Train the 3-D ConvNet on synthetic spheres vs cubes with the flags in `argv`;
    returns the final test accuracy."""
    args = _common.parser("python -m fastconv train-3d",
                          "Classify synthetic 3-D volumes (spheres vs cubes) with a small "
                          "3-D ConvNet.", epochs=8, plot="volumes_3d.png").parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 5)
    fastconv.manual_seed(args.seed)
    volumes, labels = make_volumes(400 if args.quick else 1000, seed=args.seed)
    data = _common.split(volumes, labels, TEST_FRACTION, args.seed)
    model = convnet3d()
    # Quick runs take smaller batches: more steps out of the few samples they have.
    return _common.run(args, "3-D ConvNet volumes", model, data,
                       batch_size=16 if args.quick else 32, lr=3e-3,
                       scheduler=lambda opt, n: optim.CosineAnnealingLR(opt, T_max=n))


if __name__ == "__main__":
    main()
