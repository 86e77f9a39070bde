"""fastconv's benchmark:
`python -m fastconv bench [--quick | --smoke] [--gpu] [--models | --train]`.

- cases.py: one table of layer shapes per op family and the problems built from it, for the
  CPU and the GPU alike (a case carries its device).
- timing.py: one Device per kind with its arrays, torch glue, timer (wall clock on the CPU,
  CUDA events on the GPU) and roofs.
- runner.py: runs the cases of a device, checks every result; report.py: one table.
- models.py: whole-network forward passes against plain-torch twins (`--models`).
- train.py: whole-network training steps against the twins, with agreement of the updated
  weights and peak memory per framework (`--train`); step.py: the step both share.
The pytest-benchmark suite in benchmarks/ times the same cases.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .cases import OPS
from .runner import run, run_case
from .timing import DeviceUnavailable

__all__ = ["OPS", "add_arguments", "main", "run", "run_case"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `python -m fastconv bench` on `parser`."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="batch-1 layers and fewer cases (about a minute)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny shapes, one per op: checks the tool itself, not speed")
    parser.add_argument("--op", action="extend", nargs="+", choices=OPS, metavar="OP",
                        help=f"only these ops (repeatable); choose from: {', '.join(OPS)}")
    parser.add_argument("--json", metavar="FILE", help="also write header and results as JSON")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--gpu", action="store_true",
                        help="run the cases on CuPy arrays against PyTorch CUDA (cuDNN, TF32 "
                             "off) and torchvision.ops on the same device memory; needs a "
                             "CUDA GPU")
    whole = parser.add_mutually_exclusive_group()
    whole.add_argument("--models", action="store_true",
                       help="instead: forward time of whole networks (lenet5, vgg16, resnet50, "
                            "efficientnet_lite0 at batch 1 and 8) against their PyTorch twins")
    whole.add_argument("--train", action="store_true",
                       help="instead: time of a training step (forward, backward, SGD) of "
                            "lenet5, resnet18, vgg16, convnet1d and convnet3d against their "
                            "PyTorch twins, the updated weights compared, and the peak memory "
                            "of each in a fresh process (--quick: lenet5 only)")


def main(args: Any) -> int:
    """`python -m fastconv bench` with parsed `args`: 0 when every result matches its
    reference, 1 if any is off or failed, 2 when the run cannot happen here."""
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    prog = "python -m fastconv bench" + (" --gpu" if args.gpu else "")
    if args.train:
        if args.gpu or args.no_torch:
            print(f"{prog}: error: --train runs on the CPU against PyTorch: it does not "
                  "combine with --gpu or --no-torch", file=sys.stderr)
            return 2
        from .train import run as run_train

        rows = run_train(quick=args.quick or args.smoke, json_path=args.json,
                         progress=not args.no_progress)
        return 1 if any(r.bad for r in rows) else 0
    if args.models:
        if args.gpu:
            print(f"{prog}: error: --gpu and --models do not combine", file=sys.stderr)
            return 2
        from .models import run as run_models

        run_models(quick=args.quick or args.smoke, use_torch=not args.no_torch,
                   progress=not args.no_progress)
        return 0
    try:
        _, results = run(mode, args.op, use_torch=not args.no_torch, json_path=args.json,
                         progress=not args.no_progress, device="cuda" if args.gpu else "cpu")
    except DeviceUnavailable as exc:
        print(f"{prog}: cannot run here: {exc}", file=sys.stderr)
        return 2
    if not results:
        print(f"{prog}: no case for the selected ops and mode", file=sys.stderr)
        return 2
    return 1 if any(r.bad for r in results) else 0
