"""Edge maps of a photo with the course's kernels:
`python -m fastconv edges IMAGE -o out.png [--kernel sobel|scharr|plain]`.

Writes one PNG with three maps side by side: the vertical edges |image * X|, the
horizontal edges |image * Y| and the gradient magnitude sqrt((image * X)^2 + (image * Y)^2),
for X/Y the Sobel (default), Scharr or plain (VERTICAL/HORIZONTAL) kernels of
fastconv.filters, all on one grey scale (black 0, white the 99.5th percentile of the
magnitude, the few stronger pixels clipped), so their strengths compare. IMAGE is a file or
a scikit-image sample name (camera, brick, astronaut, ...).
Needs scikit-image and matplotlib (the `examples` extra).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import numpy as np

from fastconv import filters

from ._images import SAMPLE_IMAGES, load_image

KERNELS = {
    "sobel": (filters.SOBEL_X, filters.SOBEL_Y),
    "scharr": (filters.SCHARR_X, filters.SCHARR_Y),
    "plain": (filters.VERTICAL, filters.HORIZONTAL),
}
GAP = 8  # pixels of white between the maps


def edge_maps(image: np.ndarray, kernel: str = "sobel", padding: str = "valid") -> tuple:
    """(vertical, horizontal, magnitude) maps, each (H', W') float64, of an (H, W) or
    (H, W, 3) image (an alpha channel is dropped)."""
    if image.ndim == 3:
        image = image[..., :3]
    kx, ky = KERNELS[kernel]
    vertical = filters.edges(image, kx, padding=padding)
    horizontal = filters.edges(image, ky, padding=padding)
    return vertical, horizontal, np.hypot(vertical, horizontal)


WHITE_PERCENTILE = 99.5  # a few very strong edges would otherwise leave the rest dark


def side_by_side(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The maps in a row on one scale (0 black, the WHITE_PERCENTILE of the last map
    white, clipped above), GAP-wide white columns between them: (H, n * W + (n - 1) * GAP)
    float64 in [0, 1]."""
    top = float(np.percentile(maps[-1], WHITE_PERCENTILE)) or float(maps[-1].max()) or 1.0
    gap = np.ones((maps[0].shape[0], GAP))
    parts = []
    for m in maps:
        parts += [np.minimum(m / top, 1.0), gap]
    return np.hstack(parts[:-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m fastconv edges` with the flags in `argv`; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m fastconv edges",
        description="Vertical, horizontal and magnitude edge maps of an image, side by side "
                    "in one PNG.")
    p.add_argument("image", metavar="IMAGE",
                   help=f"an image file, or a scikit-image sample: {', '.join(SAMPLE_IMAGES)}")
    p.add_argument("-o", "--output", default="edges.png", metavar="PNG",
                   help="where to write the maps (default edges.png)")
    p.add_argument("--kernel", choices=sorted(KERNELS), default="sobel",
                   help="the x/y kernel pair (default sobel; plain = the course's "
                        "VERTICAL/HORIZONTAL)")
    p.add_argument("--padding", choices=("valid", "same"), default="valid",
                   help="valid (default: no border, the maps shrink by 2 pixels) or same "
                        "(zero padding: the image border shows as an edge)")
    args = p.parse_args(argv)
    try:
        image = load_image(args.image)
    except (ValueError, ImportError, OSError) as e:
        print(f"python -m fastconv edges: error: {e}", file=sys.stderr)
        return 1
    import matplotlib

    # Agg: writing a file needs no display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = edge_maps(image, args.kernel, args.padding)
    plt.imsave(args.output, side_by_side(maps), cmap="gray", vmin=0.0, vmax=1.0)
    h, w = maps[0].shape
    print(f"{args.image}: vertical | horizontal | magnitude ({args.kernel}, {h}x{w} each) "
          f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
