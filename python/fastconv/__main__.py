"""Command line: `python -m fastconv bench [...]` and `python -m fastconv info`."""

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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "info":
        from . import info

        print(info())
        return 0
    from .bench import run

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    run(mode, args.op, use_torch=not args.no_torch, json_path=args.json,
        progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
