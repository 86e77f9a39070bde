"""Command line: `python -m fastconv bench [...]`, `python -m fastconv info` and the
training examples `python -m fastconv train-lenet | train-1d | train-3d [...]`."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .bench_cases import OPS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastconv",
                                     description="fastconv command line tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print what was built and what runs (fastconv.info())")
    bench = sub.add_parser(
        "bench", help="time every op against the NumPy reference (and PyTorch if installed)",
        description="Time every op on the layer shapes of the classic networks against the "
                    "NumPy reference and PyTorch (CPU), check each result against the "
                    "reference, and print one table.")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="batch-1 layers and fewer cases (about a minute)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny shapes, one per op: checks the tool itself, not speed")
    bench.add_argument("--op", action="extend", nargs="+", choices=OPS, metavar="OP",
                       help=f"only these ops (repeatable); choose from: {', '.join(OPS)}")
    bench.add_argument("--json", metavar="FILE", help="also write header and results as JSON")
    bench.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    bench.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    bench.add_argument("--gpu", action="store_true",
                       help="instead: fastconv on CuPy arrays against PyTorch CUDA (cuDNN, "
                            "TF32 off) and torchvision.ops on the same device memory; needs "
                            "a CUDA GPU (see fastconv.bench_gpu)")
    bench.add_argument("--models", action="store_true",
                       help="instead: forward time of whole networks (lenet5, vgg16, "
                            "resnet50) against their PyTorch twins")
    for name, what in EXAMPLES.items():
        # Listed here for `--help` only: main() hands everything after the subcommand to
        # the example, which parses its own flags.
        sub.add_parser(name, help=what, add_help=False)
    return parser


# Subcommand -> one-line help; the module of the same stem in fastconv.examples runs it.
EXAMPLES = {
    "train-lenet": "train LeNet-5 on the scikit-learn digits (see --help)",
    "train-1d": "train a 1-D ConvNet on synthetic EKG rhythms (see --help)",
    "train-3d": "train a 3-D ConvNet on synthetic volumes, spheres vs cubes (see --help)",
}
_EXAMPLE_MODULES = {"train-lenet": "train_lenet", "train-1d": "signals1d",
                    "train-3d": "volumes3d"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXAMPLES:
        import importlib

        module = importlib.import_module(f".examples.{_EXAMPLE_MODULES[argv[0]]}",
                                         __package__)
        module.main(argv[1:])
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import info

        print(info())
        return 0
    if args.command == "bench" and args.gpu:
        if args.models:
            parser.error("--gpu and --models do not combine")
        from .bench_gpu import main as run_gpu

        mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        return run_gpu(mode, args.op, use_torch=not args.no_torch, json_path=args.json,
                       progress=not args.no_progress)
    if args.models:
        from .bench_models import run as run_models

        run_models(quick=args.quick or args.smoke, use_torch=not args.no_torch,
                   progress=not args.no_progress)
        return 0
    from .bench import run

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    run(mode, args.op, use_torch=not args.no_torch, json_path=args.json,
        progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
