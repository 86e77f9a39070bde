"""Runs the cases of `cases.py` on one device and checks every result.

Per case: fastconv on the case's device; PyTorch (CPU, or CUDA/cuDNN and torchvision.ops on
the same device memory) when installed; on the CPU also the NumPy reference, timed last
(its OpenBLAS threads would otherwise steal the next call's cores). Checks: the CPU compares
with the NumPy reference evaluated in float64; the GPU with fastconv's CPU kernels on the
float64 inputs (the NumPy reference takes minutes at GPU batch sizes), and its NMS kept sets
with the CPU's, telling rounding at the threshold from real differences. torch's results
are checked against the same reference.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from .cases import Case, Problem, Unavailable, cases
from .report import Result, compare, format_table, nms_differences, parts
from .timing import Device, as_float64, open_device


def run_case(device: Device, case: Case) -> Result:
    """Time one case with every backend on `device` and check it against the reference."""
    res = Result(case.op, case.name, case.shape, device=device.name)
    try:
        problem: Problem = case.setup(np.random.default_rng(0))
    except NotImplementedError as exc:
        res.note = f"setup: {exc}" if str(exc) else "setup not implemented"
        return res
    except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
        res.note = f"setup failed: {type(exc).__name__}: {exc}"
        return res
    res.unit = device.unit(problem.unit)
    floats = [a for a in problem.inputs if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    res.dtype = floats[0].dtype.name if floats else "float32"
    inputs = tuple(device.put(a) for a in problem.inputs)
    device.settle()

    got = None
    try:
        sec, res.reps_fastconv, got = device.time(lambda: problem.fastconv(*inputs), "fastconv")
        res.fastconv_ms = sec * 1e3
        if problem.work:
            res.throughput = problem.work / sec / device.scale(problem.unit)
            roof = device.roof(problem.unit)
            if roof:
                res.roof_pct = 100.0 * res.throughput / roof
    except NotImplementedError:
        res.note = "fastconv op not implemented"
    except Exception as exc:  # noqa: BLE001 - one broken op must not hide the rest
        res.note = f"fastconv failed: {type(exc).__name__}: {exc}"

    torch_got = None
    if device.torch is not None and problem.torch is not None:
        try:
            call = problem.torch(device.torch, tuple(device.to_torch(a) for a in inputs))
            sec, res.reps_torch, torch_got = device.time(call, "torch")
            res.torch_ms = sec * 1e3
        except Unavailable:
            pass
        except Exception as exc:  # noqa: BLE001 - a torch version lacking an op
            res.note = res.note or f"torch failed: {type(exc).__name__}: {exc}"

    ref = None
    try:
        if device.name == "cpu":
            sec, res.reps_numpy, ref = device.time(lambda: problem.reference(*problem.inputs),
                                                   "numpy")
            res.numpy_ms = sec * 1e3
            if not problem.exact and res.dtype == "float32":
                ref = problem.reference(*as_float64(problem.inputs))
        elif got is not None or torch_got is not None:
            host = problem.inputs if problem.exact else as_float64(problem.inputs)
            ref = problem.fastconv(*host)
    except NotImplementedError:
        res.note = res.note or "numpy reference not available"
    except Exception as exc:  # noqa: BLE001 - reported; the row is then unchecked
        res.note = res.note or f"reference failed: {type(exc).__name__}: {exc}"

    if ref is not None:
        ref_parts = [np.asarray(p) for p in parts(ref)]
        if got is not None:
            got_parts = [device.to_host(p) for p in parts(got)]
            if problem.nms is not None and device.name != "cpu":
                res.mismatches, res.explained = nms_differences(got_parts[0], ref_parts[0],
                                                                *problem.nms)
            else:
                res.max_err, res.mismatches = compare(got_parts, ref_parts)
        if torch_got is not None:
            torch_parts = [device.to_host(p) for p in parts(torch_got)]
            res.torch_err, res.torch_mismatches = compare(torch_parts, ref_parts)
    if res.fastconv_ms is not None:
        if res.numpy_ms is not None:
            res.speedup_numpy = res.numpy_ms / res.fastconv_ms
        if res.torch_ms is not None:
            res.speedup_torch = res.torch_ms / res.fastconv_ms
    return res


def header(device: Device, mode: str) -> Dict[str, Any]:
    """The machine and software the numbers were taken on."""
    return {
        "mode": mode,
        "device_kind": device.name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "fastconv": fastconv.__version__,
        "numpy": np.__version__,
        "torch": device.torch_note,
        **device.header(),
    }


def run(mode: str = "full", ops: Optional[Sequence[str]] = None, use_torch: bool = True,
        json_path: Optional[str] = None, progress: bool = True, device: str = "cpu",
        echo: Callable[[str], None] = print) -> Tuple[Dict[str, Any], List[Result]]:
    """Run the benchmark of `mode` ("smoke", "quick" or "full") on `device` ("cpu" or
    "cuda") for `ops` (default: all), print the table through `echo`, write `json_path`
    if given. Returns the header and the results; raises DeviceUnavailable when the device
    cannot run here and ValueError for an unknown mode or op."""
    import sys

    from tqdm import tqdm

    selected = cases(mode, ops, device)
    dev = open_device(device, mode, use_torch)
    head = header(dev, mode)
    results = []
    bar = tqdm(selected, desc=f"bench ({device})", unit="case", disable=not progress,
               leave=False, file=sys.stderr)
    for case in bar:
        bar.set_postfix_str(case.id)
        results.append(run_case(dev, case))
    bar.close()
    echo(format_table(head, results))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"header": head,
                       "results": [dict(asdict(r), bad=r.bad) for r in results]}, f, indent=1)
    return head, results
