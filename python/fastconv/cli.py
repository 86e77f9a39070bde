"""Command line: `python -m fastconv COMMAND [...]`.

Two built-in commands, `info` and `bench` (the benchmark suite, fastconv.bench), and the
programs in `COMMANDS`: each is a module with `main(argv) -> int | float | None` that
parses its own flags (so `python -m fastconv NAME --help` shows them). A new program is
one entry in that table.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, Optional, Sequence, Tuple

# name -> (module, one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "train-lenet": ("fastconv.examples.train_lenet",
                    "train LeNet-5 on the scikit-learn digits (see --help)"),
    "train-1d": ("fastconv.examples.signals1d",
                 "train a 1-D ConvNet on synthetic EKG rhythms (see --help)"),
    "train-3d": ("fastconv.examples.volumes3d",
                 "train a 3-D ConvNet on synthetic volumes, spheres vs cubes (see --help)"),
    "classify": ("fastconv.examples.classify",
                 "top ImageNet classes of photos by EfficientNet-Lite0 (see --help)"),
    "edges": ("fastconv.examples.edges",
              "vertical, horizontal and magnitude edge maps of an image as a PNG (see --help)"),
    "learn-edges": ("fastconv.examples.learn_edges",
                    "learn a 3x3 edge filter by gradient descent from Sobel responses "
                    "(see --help)"),
    "train-siamese": ("fastconv.examples.train_siamese",
                      "triplet-loss embeddings: one-shot unseen digits, lfw_subset face "
                      "views (see --help)"),
    "style-transfer": ("fastconv.examples.style_transfer",
                       "neural style transfer of one image onto another (see --help)"),
    "train-yolo": ("fastconv.examples.train_yolo",
                   "train a small YOLO on the shapes data set; held-out mAP, a PNG of "
                   "detections (see --help)"),
    "train-fast-rcnn": ("fastconv.examples.train_fast_rcnn",
                        "train a Fast R-CNN style detector on the shapes data set; held-out "
                        "mAP (see --help)"),
    "detect": ("fastconv.examples.detect",
               "boxes a model saved by train-yolo finds in an image: JSON and a PNG "
               "(see --help)"),
    "dask-demo": ("fastconv.examples.dask_demo",
                  "convolve and pool a volume larger than memory with fastconv.dask, "
                  "locally or on a dask.distributed cluster (see --help)"),
    "visualize": ("fastconv.examples.visualize",
                  "the nine image patches that activate units of a network most, per "
                  "layer, as a PNG grid (see --help)"),
}


def parser() -> argparse.ArgumentParser:
    """The parser of the built-in commands (the COMMANDS programs parse their own flags)."""
    from .bench import add_arguments

    top = argparse.ArgumentParser(prog="python -m fastconv",
                                  description="fastconv command line tools")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print what was built and what runs (fastconv.info())")
    add_arguments(sub.add_parser(
        "bench", help="time every op against the NumPy reference (and PyTorch if installed)",
        description="Time every op on the layer shapes of the classic networks against the "
                    "NumPy reference and PyTorch, check each result against the "
                    "reference, and print one table."))
    for name, (_, what) in COMMANDS.items():
        # Listed for `--help` only: main() hands everything after the name to the program.
        sub.add_parser(name, help=what, add_help=False)
    return top


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        status = importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    args = parser().parse_args(argv)
    if args.command == "info":
        from .info import info

        print(info())
        return 0
    from .bench import main as bench_main

    return bench_main(args)
