"""Benchmark runner: times every case of `bench_cases` with fastconv, the NumPy reference
and (when installed) PyTorch on the CPU, checks fastconv against the reference, and prints
one table. Entry point: `python -m fastconv bench` (see `__main__.py`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from ._backend import measure_fma_peak
from .bench_cases import Case, Problem, cases, error_cell, fmt_value

# Per-call timing budget in seconds and repetition cap, per mode.
BUDGETS = {"smoke": (0.01, 3), "quick": (0.1, 20), "full": (0.3, 50)}
# NumPy references run seconds on the big layers: they get a smaller share of repetitions.
NUMPY_BUDGET_SHARE = 0.5

UNAVAILABLE = (NotImplementedError,)
# Seconds of the FMA-peak probe and megabytes of the copy-bandwidth probe, per mode.
ROOF_PROBES = {"smoke": (0.05, 32), "quick": (0.3, 256), "full": (0.5, 256)}


@dataclass
class Result:
    """One row of the table (times in milliseconds; None means "n/a")."""

    op: str
    case: str
    shape: str
    unit: str
    fastconv_ms: Optional[float] = None
    throughput: Optional[float] = None  # in `unit`: GFLOP/s or GB/s (bytes read + written)
    roof_pct: Optional[float] = None  # throughput in % of the FMA peak or copy bandwidth
    numpy_ms: Optional[float] = None
    speedup_numpy: Optional[float] = None
    torch_ms: Optional[float] = None
    speedup_torch: Optional[float] = None
    max_err: Optional[float] = None  # max|fastconv - ref| / max(1, max|ref|), ref in float64
    mismatches: Optional[int] = None  # index outputs (NMS, max-pool indices) that differ
    reps_fastconv: int = 0
    reps_numpy: int = 0
    reps_torch: int = 0
    note: str = ""


SETTLE_SECONDS = 0.25


def time_call(fn: Callable[[], Any], budget: float, max_reps: int,
              slow_warmup_counts: bool = False) -> Tuple[float, int, Any]:
    """Median seconds per call of `fn`, the number of timed calls, and the last result.

    One warm-up call, then calls until `budget` seconds or `max_reps` calls. With
    `slow_warmup_counts`, a warm-up call that alone exceeds the budget is the single
    sample, so a reference taking seconds runs once; kernels always get a timed call,
    since their first call also starts the thread pool.
    """
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    if slow_warmup_counts and first >= budget:
        return first, 1, result
    samples: List[float] = []
    spent = 0.0
    while len(samples) < max_reps and (spent < budget or not samples):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return statistics.median(samples), len(samples), result


def _as_float64(inputs: Sequence[Any]) -> Tuple[Any, ...]:
    return tuple(a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                 else a for a in inputs)


def _parts(out: Any) -> List[np.ndarray]:
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [np.asarray(item) for item in items]


def compare(got: Any, expected: Any) -> Tuple[Optional[float], Optional[int]]:
    """(relative max error over float outputs, mismatch count over integer outputs).

    Float parts: max|got - expected| / max(1, max|expected|). Integer parts (indices):
    differing entries plus any difference in length. A shape mismatch of a float part is
    an infinite error: the numbers cannot be trusted.
    """
    err: Optional[float] = None
    mismatches: Optional[int] = None
    got_parts, exp_parts = _parts(got), _parts(expected)
    if len(got_parts) != len(exp_parts):
        return float("inf"), None
    for g, e in zip(got_parts, exp_parts):
        if e.dtype.kind == "f":
            if g.shape != e.shape:
                part = float("inf")
            else:
                diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
                scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
                part = float(np.max(diff)) / scale if diff.size else 0.0
            err = part if err is None else max(err, part)
        else:
            g, e = g.ravel(), e.ravel()
            common = min(g.size, e.size)
            part = int(np.count_nonzero(g[:common] != e[:common])) + abs(g.size - e.size)
            mismatches = part if mismatches is None else mismatches + part
    return err, mismatches


def import_torch(threads: int) -> Optional[Any]:
    """torch with its intra-op threads set to fastconv's OpenMP threads, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def run_case(case: Case, mode: str, torch: Optional[Any]) -> Result:
    """Time one case with every backend and check fastconv against the reference."""
    res = Result(case.op, case.name, case.shape, "")
    budget, max_reps = BUDGETS[mode]
    try:
        problem: Problem = case.setup(np.random.default_rng(0))
    except UNAVAILABLE as exc:
        res.note = f"setup: {exc}" if str(exc) else "setup not implemented"
        return res
    res.unit = problem.unit
    inputs = problem.inputs

    # OpenBLAS worker threads (behind NumPy's tensordot/einsum) keep spinning for up to
    # ~100 ms after a call and would steal the cores from the next case's kernels: let
    # them go idle first. For the same reason NumPy runs last within a case.
    time.sleep(SETTLE_SECONDS)
    got = None
    try:
        sec, res.reps_fastconv, got = time_call(lambda: problem.fastconv(*inputs), budget,
                                                max_reps)
        res.fastconv_ms = sec * 1e3
        if problem.work:
            res.throughput = problem.work / sec / 1e9
    except UNAVAILABLE:
        res.note = "fastconv op not implemented"
    except Exception as exc:  # one broken op must not hide the rest of the table
        res.note = f"fastconv failed: {type(exc).__name__}: {exc}"

    if torch is not None and problem.torch is not None:
        tensors = tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a
                        for a in inputs)
        try:
            sec, res.reps_torch, _ = time_call(problem.torch(torch, tensors), budget, max_reps)
            res.torch_ms = sec * 1e3
        except Exception as exc:  # a torch version lacking an op is not our failure
            res.note = res.note or f"torch failed: {type(exc).__name__}: {exc}"

    ref_out = None
    try:
        sec, res.reps_numpy, ref_out = time_call(lambda: problem.numpy(*inputs),
                                                 budget * NUMPY_BUDGET_SHARE, max_reps,
                                                 slow_warmup_counts=True)
        res.numpy_ms = sec * 1e3
    except UNAVAILABLE:
        res.note = res.note or "numpy reference not available"

    if got is not None and ref_out is not None:
        low_precision = any(isinstance(a, np.ndarray) and a.dtype == np.float32
                            for a in inputs)
        if low_precision and not problem.exact:
            ref_out = problem.numpy(*_as_float64(inputs))
        res.max_err, res.mismatches = compare(got, ref_out)
    if res.fastconv_ms is not None:
        if res.numpy_ms is not None:
            res.speedup_numpy = res.numpy_ms / res.fastconv_ms
        if res.torch_ms is not None:
            res.speedup_torch = res.torch_ms / res.fastconv_ms
    return res


def measure_copy_bandwidth(megabytes: int, repeats: int = 5) -> float:
    """GB/s (bytes read + written) of the best of `repeats` NumPy copies of `megabytes` MB
    between two buffers that are already paged in, as a DRAM roof for memory-bound ops."""
    src = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    dst = np.zeros_like(src)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2.0 * src.nbytes / best / 1e9


def measure_roofs(mode: str) -> Tuple[float, float]:
    """(float32 FMA peak in GFLOP/s on all fastconv threads, copy bandwidth in GB/s)."""
    seconds, megabytes = ROOF_PROBES[mode]
    measure_fma_peak(seconds / 4)  # wakes the threads and the clocks up
    return measure_fma_peak(seconds), measure_copy_bandwidth(megabytes)


def roof_percent(res: Result, fma_peak: float, copy_bandwidth: float) -> Optional[float]:
    """Throughput of `res` in % of the roof of its kind (compute: FMA peak; memory: copy)."""
    if res.throughput is None:
        return None
    roof = {"GFLOP/s": fma_peak, "GB/s": copy_bandwidth}.get(res.unit)
    return 100.0 * res.throughput / roof if roof else None


def torch_geomean(results: Sequence[Result], op: str = "conv") -> Optional[float]:
    """Geometric mean of fastconv ms / torch ms over the cases of `op` timed by both."""
    ratios = [r.fastconv_ms / r.torch_ms for r in results
              if r.op == op and r.fastconv_ms and r.torch_ms]
    if not ratios:
        return None
    return math.exp(sum(math.log(v) for v in ratios) / len(ratios))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(mode: str, torch: Optional[Any], torch_wanted: bool,
           roofs: Tuple[Optional[float], Optional[float]] = (None, None)) -> Dict[str, Any]:
    """The machine and software the numbers were taken on; `roofs` is (FMA peak GFLOP/s,
    copy GB/s) as `measure_roofs` returns them, or None where not measured."""
    details = fastconv.info(as_dict=True)
    if torch is not None:
        torch_text = torch.__version__
    else:
        torch_text = "not installed" if torch_wanted else "disabled (--no-torch)"
    return {
        "mode": mode,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "fastconv": details["version"],
        "cpu_path": details["cpu_path"],
        "threads": details["threads"],
        "numpy": np.__version__,
        "torch": torch_text,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "python": platform.python_version(),
        "fma_peak_gflops": roofs[0],
        "copy_gbps": roofs[1],
    }


def format_table(head: Dict[str, Any], results: Sequence[Result]) -> str:
    """The header lines and the aligned results table."""
    lines = [
        f"fastconv {head['fastconv']} benchmark ({head['mode']}), {head['date']}",
        f"machine: {head['cpu']}, {head['cores']} cores; fastconv cpu_path {head['cpu_path']}, "
        f"{head['threads']} OpenMP threads",
        f"roofs: float32 FMA peak {fmt_value(head.get('fma_peak_gflops'), '.0f')} GFLOP/s "
        f"({head['threads']} threads, {head['cpu_path']}); copy bandwidth "
        f"{fmt_value(head.get('copy_gbps'), '.1f')} GB/s (read + write)",
        f"numpy {head['numpy']}; torch {head['torch']}"
        + (f" with torch.set_num_threads({head['torch_threads']}) to match fastconv"
           if head["torch_threads"] is not None else ""),
        "times are medians; speed-up = baseline ms / fastconv ms; max err relative to the "
        "float64 reference (idx: index mismatches)",
        "",
    ]
    titles = ["op", "case", "shape", "fastconv ms", "GFLOP/s", "% peak", "GB/s", "% copy bw",
              "numpy ms", "x numpy", "torch ms", "x torch", "max err"]

    def rate(r: Result, unit: str) -> List[str]:
        if r.unit != unit or r.throughput is None:
            return ["", ""]
        return [format(r.throughput, ".2f"), fmt_value(r.roof_pct, ".0f")]

    rows = [[r.op, r.case, r.shape, fmt_value(r.fastconv_ms, ".3f"), *rate(r, "GFLOP/s"),
             *rate(r, "GB/s"), fmt_value(r.numpy_ms, ".3f"), fmt_value(r.speedup_numpy, ".1f"),
             fmt_value(r.torch_ms, ".3f"), fmt_value(r.speedup_torch, ".2f"), error_cell(r.max_err, r.mismatches, r.note.startswith("fastconv failed"))]
            for r in results]
    widths = [max(len(row[i]) for row in rows + [titles]) for i in range(len(titles))]
    numeric = set(range(3, len(titles)))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines.append(line(titles))
    lines.append(line(["-" * w for w in widths]))
    lines.extend(line(row) for row in rows)
    geomean = torch_geomean(results)
    if geomean is not None:
        count = sum(1 for r in results if r.op == "conv" and r.fastconv_ms and r.torch_ms)
        lines.append(f"conv forward vs torch: geometric mean of fastconv ms / torch ms = "
                     f"{geomean:.3f} over {count} cases ({1 / geomean:.2f}x)")
    failures = [f"{r.op}[{r.case}]: {r.note}" for r in results if "failed" in r.note]
    return "\n".join(lines + failures)


def run(mode: str = "full", ops: Optional[Sequence[str]] = None, use_torch: bool = True,
        json_path: Optional[str] = None, progress: bool = True,
        echo: Callable[[str], None] = print) -> Tuple[Dict[str, Any], List[Result]]:
    """Run the benchmark of `mode` ("smoke", "quick" or "full") on `ops` (default: all),
    print the table through `echo`, and write `json_path` if given.

    Returns the header dict and the results.
    """
    from tqdm import tqdm

    selected = cases(mode, ops)
    threads = int(fastconv.info(as_dict=True)["threads"])
    torch = import_torch(threads) if use_torch else None
    roofs = measure_roofs(mode)
    head = header(mode, torch, use_torch, roofs)
    results = []
    bar = tqdm(selected, desc="bench", unit="case", disable=not progress, leave=False)
    for case in bar:
        bar.set_postfix_str(case.id)
        res = run_case(case, mode, torch)
        res.roof_pct = roof_percent(res, *roofs)
        results.append(res)
    bar.close()
    echo(format_table(head, results))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"header": head, "results": [asdict(r) for r in results]}, f, indent=1)
    return head, results


def add_arguments(parser: Any) -> None:
    """The flags of `python -m fastconv bench` on `parser` (an argparse parser)."""
    from .bench_cases import OPS

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
                        help="instead: fastconv on CuPy arrays against PyTorch CUDA (cuDNN, "
                             "TF32 off) and torchvision.ops on the same device memory; needs "
                             "a CUDA GPU (see fastconv.bench_gpu)")
    parser.add_argument("--models", action="store_true",
                        help="instead: forward time of whole networks (lenet5, vgg16, "
                             "resnet50) against their PyTorch twins")


def main(args: Any) -> int:
    """`python -m fastconv bench` with parsed `args`; returns the exit status."""
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.gpu:
        if args.models:
            import sys

            print("python -m fastconv bench: error: --gpu and --models do not combine",
                  file=sys.stderr)
            raise SystemExit(2)
        from .bench_gpu import main as run_gpu

        return run_gpu(mode, args.op, use_torch=not args.no_torch, json_path=args.json,
                       progress=not args.no_progress)
    if args.models:
        from .bench_models import run as run_models

        run_models(quick=args.quick or args.smoke, use_torch=not args.no_torch,
                   progress=not args.no_progress)
        return 0
    run(mode, args.op, use_torch=not args.no_torch, json_path=args.json,
        progress=not args.no_progress)
    return 0
