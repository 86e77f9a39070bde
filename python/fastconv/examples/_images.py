"""Images for the command-line programs: files, or scikit-image's sample photos by name
(they ship inside its wheel, so nothing is downloaded)."""

from __future__ import annotations

import os
from typing import Tuple

import numpy as np

# scikit-image sample images stored in its wheel (skimage/data), by their data.<name>().
SAMPLE_IMAGES: Tuple[str, ...] = (
    "astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text")


def load_image(spec: str) -> np.ndarray:
    """The image at path `spec`, or the scikit-image sample named `spec` (SAMPLE_IMAGES):
    (H, W) or (H, W, 3|4) uint8 as stored. ValueError when it is neither."""
    if os.path.exists(spec):
        from skimage import io

        return np.asarray(io.imread(spec))
    if spec in SAMPLE_IMAGES:
        from skimage import data

        return np.asarray(getattr(data, spec)())
    raise ValueError(f"{spec!r} is neither an image file nor a sample image name "
                     f"({', '.join(SAMPLE_IMAGES)})")
