"""What are deep ConvNets learning? `python -m fastconv visualize [--layers L ...]
[--images DIR] [--units 8] [-k 9] -o grid.png [--quick] [--no-progress]`.

The course's picture: for some units of each layer, the nine image patches that activate
them most. The images are every scikit-image sample photo (or every image file in DIR),
resized to short sides of two and three tile sizes and cut into tiles;
the network (EfficientNet-Lite0 with its ImageNet weights by default) scans every tile,
and each unit's top-k activations (from k different tiles, at cells whose receptive field
lies within the tile) are shown as the receptive field of the activating cell
(fastconv.visualize.top_patches). One panel per layer, one row per unit. Needs the
`pretrained` extra and matplotlib.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .. import style
from ..models import resize
from ..visualize import save_grid, top_patches
from ._images import SAMPLE_IMAGES, load_image

# EfficientNet-Lite0 block outputs from stage 1 to stage 5: receptive fields of 7, 19, 67,
# 115 and 211 pixels, the slides' "layer 1" to "layer 5".
DEFAULT_LAYERS = ("_blocks.0", "_blocks.2", "_blocks.4", "_blocks.6", "_blocks.8")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastconv visualize",
        description="The k image patches that activate units of a pretrained network most, "
                    "per layer, as a PNG grid (Zeiler & Fergus; the course's slides).")
    p.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS), metavar="LAYER",
                   help="layer names of model.named_modules() (default: EfficientNet-Lite0 "
                        f"{' '.join(DEFAULT_LAYERS)})")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="scan the image files in DIR (default: the scikit-image samples)")
    p.add_argument("--units", type=int, default=8,
                   help="units (the first channels) shown per layer (default 8)")
    p.add_argument("-k", type=int, default=9, help="patches per unit (default 9)")
    p.add_argument("--tile", type=int, default=224,
                   help="tile side in pixels (default 224, the network's training size)")
    p.add_argument("--features", choices=sorted(style.FEATURES), default="efficientnet_lite0",
                   help="the network (VGG needs --weights)")
    p.add_argument("--weights", default=None, metavar="PTH",
                   help="the network's weights: a torchvision checkpoint for vgg16/vgg19")
    p.add_argument("-o", "--output", default="top_patches.png", metavar="PNG",
                   help="where to write the grid (default top_patches.png)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--quick", action="store_true",
                   help="three images, 96-pixel tiles, two layers, four units: a smoke run")
    return p


def image_specs(folder: Optional[str]) -> List[str]:
    """The image files in `folder` (sorted), or the scikit-image sample names ("cat" is
    chelsea again)."""
    if folder is None:
        return [name for name in SAMPLE_IMAGES if name != "cat"]
    if not os.path.isdir(folder):
        raise ValueError(f"--images {folder!r} is not a folder")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder!r}")
    return files


def tiles(images: Sequence[np.ndarray], tile: int, scales: Sequence[int] = (2, 3)
          ) -> np.ndarray:
    """(T, 3, tile, tile) float32 RGB in [0, 1]: each image resized to a short side of
    s * tile for each s in `scales` and cut into tiles side by side (tiles that do not
    overlap, so one place of an image is not shown twice at one scale)."""
    out = []
    for image in images:
        rgb = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
        rgb = rgb[..., :3].astype(np.float64) / (255.0 if rgb.dtype == np.uint8 else 1.0)
        for s in scales:
            scale = s * tile / min(rgb.shape[:2])
            h, w = (max(tile, round(n * scale)) for n in rgb.shape[:2])
            resized = np.clip(resize(rgb, (h, w)), 0.0, 1.0)
            for top in range(0, h - tile + 1, tile):
                for left in range(0, w - tile + 1, tile):
                    out.append(resized[top:top + tile, left:left + tile].transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m fastconv visualize` with the flags in `argv`; returns the exit status."""
    args = parser().parse_args(argv)
    layers: Tuple[str, ...] = tuple(args.layers)
    specs, tile, units = None, args.tile, args.units
    if args.quick:
        specs = ["chelsea", "coffee", "brick"] if args.images is None else None
        tile, units = 96, min(units, 4)
        layers = layers[:2]
    try:
        names = specs or image_specs(args.images)
        start = time.perf_counter()
        pictures = tiles([load_image(name) for name in names], tile)
        model, spec = style.feature_model(args.features, args.weights)
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 1, 3, 1, 1)
        std = np.asarray(spec.std, dtype=np.float32).reshape(1, 1, 3, 1, 1)
        inputs = (pictures - mean[0]) / std[0]
        panels = []
        for layer in layers:
            found = top_patches(model, layer, inputs, args.k, units=range(units),
                                per_image=1, inside=True, progress=not args.no_progress)
            # Shown as pixels again: the network's input mapped back to [0, 1].
            panels.append(dataclasses.replace(found, patches=found.patches * std + mean))
            field = found.receptive_field[0]
            print(f"{layer}: receptive field {field.size} px, stride {field.stride}; "
                  f"top activations {np.round(found.activations[:, 0], 2).tolist()}")
        save_grid(panels, args.output, value_range=(0.0, 1.0),
                  title=f"{args.features}: top {args.k} of {len(pictures)} tiles per unit")
    except (ValueError, ImportError, OSError) as e:
        print(f"python -m fastconv visualize: error: {e}", file=sys.stderr)
        return 1
    print(f"{len(layers)} layers x {units} units x {args.k} patches from {len(pictures)} "
          f"tiles of {len(names)} images in {time.perf_counter() - start:.1f} s")
    print(f"grid saved to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
