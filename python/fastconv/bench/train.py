"""Training-step benchmark: `python -m fastconv bench --train [--quick]`.

For each network, fastconv's model and its plain torch.nn twin (fastconv.models.torch_twins)
start from the same weights (copied through the state dict) and train on the same random
batch and labels with mean cross-entropy and the same SGD (lr 0.01, momentum 0.9, weight
decay 1e-4), in one process, PyTorch limited to fastconv's thread count. One step is
zero_grad + forward + loss + backward + optimizer step (fastconv.bench.step).

- Agreement: CHECK_STEPS steps from the identical start in fastconv (float32), in the twin
  (float32) and in the twin cast to float64, the reference. Against the reference, per
  tensor max|ours - reference| / max|reference|, the largest over the tensors, for fastconv
  and for torch: "grad err" on the gradients of the first step (forward and backward from
  the identical start), "weight err" on the parameters and buffers (BatchNorm running mean
  and variance, num_batches_tracked) after the last step (the optimizer, momentum included).
  Why so:
  - the first step's gradients, not later ones: later steps start from weights that differ
    by rounding, and the training of a random batch amplifies that (measured, VGG-16's
    second-step gradients against float64: 8e-3 in torch, 5e-1 in fastconv);
  - values, not the weights' changes: at lr 0.01 a change is ~1e-4..1e-6 of its weight, so
    float32 storage alone rounds it by 1e-3..1e-1, in both frameworks alike;
  - against float64, not fastconv against torch: some float32 results are sums that nearly
    cancel (BatchNorm's weight gradient sum(dy * x_hat), a running mean of zero-mean
    activations) and rounding alone moves them by 1e-3..1e-1 relative, in torch as in
    fastconv. In float64 the two agree to ~1e-12 (measured on ResNet-18 and VGG-16).
  So a row is BAD when fastconv is clearly less accurate than torch (err > ERR_FACTOR *
  torch's + ERR_FLOOR, for either error) or a loss is not finite. Dropout is off in both
  (p = 0): random masks cannot match.
- Time: median ms per step, the two frameworks alternating in blocks of BLOCK steps so that
  load changes on a shared machine hit both; the check steps are the warm-up.
- Memory: a fresh child process per framework runs MEMORY_STEPS steps (fastconv.bench.step
  run as a script: the fastconv child never imports torch, the torch child never imports
  fastconv) and reports the peak RSS of the steps above the RSS before them ("step MiB":
  activations, gradients, optimizer state, temporaries) and the peak RSS of the whole
  process ("peak MiB", which includes the framework's own import).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import models

from . import step as train_step
from .report import aligned_rows


@dataclass(frozen=True)
class Case:
    """One network's setup: input batch shape, number of classes (the labels' range),
    timed steps per framework in the full run, and the issue's target for the ratio."""

    shape: Tuple[int, ...]
    classes: int
    reps: int
    target: float


# VGG-16 at 112x112 gives a 3x3 map before the adaptive pool, which upsamples it to the 7x7
# the classifier expects (both frameworks do the same); ConvNet1d's head is built for
# length 187 (MIT-BIH beats).
MODELS: Dict[str, Case] = {
    "lenet5": Case((64, 1, 32, 32), 10, 60, 0.9),
    "resnet18": Case((16, 3, 112, 112), 1000, 10, 0.9),
    "vgg16": Case((4, 3, 112, 112), 1000, 6, 1.0),
    "convnet1d": Case((32, 1, 187), 5, 60, 1.0),
    "convnet3d": Case((4, 1, 32, 32, 32), 2, 20, 1.0),
}
CHECK_STEPS = 2
BLOCK = 5
MEMORY_STEPS = 3
# In float64 the two frameworks' gradients and weights agree to ~1e-12 (measured on
# ResNet-18 and VGG-16), so the float32 errors are rounding: fastconv may round differently
# from torch, not worse by more than this factor; the floor covers rows where torch rounds
# very well.
ERR_FACTOR = 4.0
ERR_FLOOR = 1e-5


@dataclass
class TrainResult:
    """One row of the table (milliseconds are medians per training step; errors are
    against the float64 reference, see the module doc)."""

    model: str
    input_shape: Tuple[int, ...]
    fastconv_ms: float
    torch_ms: float
    ratio: float                      # fastconv ms / torch ms: < 1 means fastconv is faster
    target: float                     # the ceiling for `ratio`
    fastconv_grad_err: float
    torch_grad_err: float
    fastconv_weight_err: float
    torch_weight_err: float
    fastconv_step_mib: Optional[float]
    torch_step_mib: Optional[float]
    fastconv_peak_mib: Optional[float]
    torch_peak_mib: Optional[float]
    reps: int
    bad: bool                         # fastconv clearly less accurate, or a non-finite loss


def _max_rel_err(ours: Dict[str, np.ndarray], reference: Dict[str, np.ndarray]) -> float:
    """Largest over the keys of `reference` of max|ours - reference| / max|reference|; a
    tensor that is zero in the reference counts by its absolute difference."""
    worst = 0.0
    for key, ref in reference.items():
        diff = float(np.abs(ours[key].astype(np.float64) - ref).max(initial=0.0))
        scale = float(np.abs(ref).max(initial=0.0))
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def _check_run(model: Any, step: Callable[[], float]
               ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], List[float]]:
    """CHECK_STEPS steps of a fresh model of either framework: (gradients of the first
    step by parameter name, state dict after the last step, losses), NumPy copies."""
    def copy(v: Any) -> np.ndarray:
        # torch tensors (their __array__ predates NumPy 2's copy keyword) or NumPy arrays
        return v.detach().numpy().copy() if hasattr(v, "detach") else np.array(v)

    losses = [step()]
    grads = {k: copy(p.grad) for k, p in model.named_parameters()}
    losses += [step() for _ in range(CHECK_STEPS - 1)]
    return grads, {k: copy(v) for k, v in model.state_dict().items()}, losses


def _alternating_ms(steps: Sequence[Callable[[], float]], reps: int) -> List[float]:
    """Median ms per call of each of `steps`, `reps` calls each, taken in alternating
    blocks of BLOCK calls (the order reversed every round)."""
    samples: List[List[float]] = [[] for _ in steps]
    for r in range(math.ceil(reps / BLOCK)):
        order = range(len(steps)) if r % 2 == 0 else reversed(range(len(steps)))
        for i in order:
            for _ in range(min(BLOCK, reps - r * BLOCK)):
                start = time.perf_counter()
                steps[i]()
                samples[i].append(time.perf_counter() - start)
    return [1e3 * statistics.median(s) for s in samples]


def _child_env() -> Dict[str, str]:
    """The environment with this fastconv importable by a script run by path."""
    env = dict(os.environ)
    root = str(Path(fastconv.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]]
                                                 if env.get("PYTHONPATH") else []))
    return env


def measure_memory(arch: str, state: Dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                   threads: int, steps: int = MEMORY_STEPS) -> Dict[str, Dict[str, Any]]:
    """framework -> the child's JSON (base_mib, step_mib, peak_mib, torch_imported): one
    fresh process per framework, run one after the other on the same saved data."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="fastconv-train-") as tmp:
        data = Path(tmp) / "data.npz"
        train_step.save_data(data, state, x, y)
        for framework in train_step.FRAMEWORKS:
            proc = subprocess.run(
                [sys.executable, str(Path(train_step.__file__).resolve()), framework, arch,
                 str(data), str(steps), str(threads)],
                capture_output=True, text=True, env=_child_env())
            if proc.returncode != 0:
                raise RuntimeError(f"memory child ({framework}, {arch}) failed:\n"
                                   f"{proc.stderr[-2000:]}")
            out[framework] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def bench_model(name: str, reps: int, threads: int, memory: bool = True,
                seed: int = 0) -> TrainResult:
    """Check, time and (with `memory`) measure one network of MODELS against its twin."""
    import torch

    from ..models.torch_twins import TWINS

    case = MODELS[name]
    fastconv.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = getattr(models, name)().state_dict()
    x = rng.standard_normal(case.shape).astype(np.float32)
    y = rng.integers(0, case.classes, case.shape[0]).astype(np.int64)

    # The float64 reference first, freed before the float32 pair is built (VGG-16's
    # weights, gradients and momentum take 3.3 GB in float64).
    ref, _ = train_step.build("torch", name, start, TWINS)
    ref.double()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=train_step.LR, momentum=train_step.MOMENTUM,
                              weight_decay=train_step.WEIGHT_DECAY)
    ref_grads, ref_state, losses = _check_run(
        ref, train_step.stepper("torch", ref, ref_opt, x.astype(np.float64), y))
    del ref, ref_opt

    ours, ours_opt = train_step.build("fastconv", name, start)
    theirs, theirs_opt = train_step.build("torch", name, start, TWINS)
    steps = [train_step.stepper("fastconv", ours, ours_opt, x, y),
             train_step.stepper("torch", theirs, theirs_opt, x, y)]
    errs = []
    for model, fn in zip((ours, theirs), steps):
        grads, state, more = _check_run(model, fn)
        errs.append((_max_rel_err(grads, ref_grads), _max_rel_err(state, ref_state)))
        losses += more
    (grad_err, weight_err), (torch_grad_err, torch_weight_err) = errs

    fastconv_ms, torch_ms = _alternating_ms(steps, reps)
    losses += [fn() for fn in steps]
    bad = (any(not e <= ERR_FACTOR * t + ERR_FLOOR for e, t in zip(*errs))
           or not all(math.isfinite(v) for v in losses))

    mib: Dict[str, Dict[str, Any]] = {}
    if memory:
        mib = measure_memory(name, start, x, y, threads)
    return TrainResult(
        name, case.shape, fastconv_ms, torch_ms, fastconv_ms / torch_ms, case.target,
        grad_err, torch_grad_err, weight_err, torch_weight_err,
        mib.get("fastconv", {}).get("step_mib"), mib.get("torch", {}).get("step_mib"),
        mib.get("fastconv", {}).get("peak_mib"), mib.get("torch", {}).get("peak_mib"),
        reps, bad)


def format_table(results: Sequence[TrainResult], threads: int) -> str:
    """The aligned table, with lines saying how it was measured."""
    lines = [
        f"training step (zero_grad + forward + cross-entropy + backward + SGD lr {train_step.LR} "
        f"momentum {train_step.MOMENTUM} weight decay {train_step.WEIGHT_DECAY}), "
        f"dropout off; median ms, {threads} threads each; ratio = fastconv ms / torch ms",
        f"err: vs torch in float64, gradients of step 1 and weights after step {CHECK_STEPS}, "
        f"max|diff| / max|reference| (BAD: fastconv err > {ERR_FACTOR:g} x torch's + "
        f"{ERR_FLOOR:g}); step MiB: peak RSS during {MEMORY_STEPS} steps above the RSS "
        "before them; peak MiB: the whole process (a fresh one per framework)"]
    titles = ["model", "input", "fastconv ms", "torch ms", "ratio", "target",
              "grad err fc/torch", "weight err fc/torch", "step MiB fc/torch",
              "peak MiB fc/torch"]

    def pair(a: Optional[float], b: Optional[float], fmt: str) -> str:
        return "" if a is None or b is None else f"{a:{fmt}}/{b:{fmt}}"

    rows = [[r.model, "x".join(map(str, r.input_shape)), f"{r.fastconv_ms:.2f}",
             f"{r.torch_ms:.2f}", f"{r.ratio:.2f}" + (" BAD" if r.bad else ""),
             f"<={r.target:.2f} " + ("met" if r.ratio <= r.target else "missed"),
             pair(r.fastconv_grad_err, r.torch_grad_err, ".1e"),
             pair(r.fastconv_weight_err, r.torch_weight_err, ".1e"),
             pair(r.fastconv_step_mib, r.torch_step_mib, ".0f"),
             pair(r.fastconv_peak_mib, r.torch_peak_mib, ".0f")] for r in results]
    lines += aligned_rows(titles, rows, left=2)
    return "\n".join(lines)


def run(names: Optional[Sequence[str]] = None, quick: bool = False,
        reps: Optional[int] = None, memory: bool = True, json_path: Optional[str] = None,
        progress: bool = True, echo: Callable[[str], None] = print) -> List[TrainResult]:
    """Benchmark `names` (default: all of MODELS; `quick`: lenet5 only, 10 steps), print the
    table through `echo`, optionally write it to `json_path`, and return the rows. `reps`
    overrides the timed steps per framework; `memory=False` skips the child processes.
    Needs torch (the twins)."""
    import torch
    from tqdm import tqdm

    selected = list(names) if names is not None else (["lenet5"] if quick else list(MODELS))
    unknown = [n for n in selected if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    threads = int(fastconv.info(as_dict=True)["threads"])
    # Same core count for both: otherwise the comparison measures thread counts.
    torch.set_num_threads(threads)
    results = []
    for name in tqdm(selected, desc="models", unit="model", disable=not progress,
                     leave=False):
        n = reps if reps is not None else (10 if quick else MODELS[name].reps)
        results.append(bench_model(name, n, threads, memory))
    echo(format_table(results, threads))
    if json_path is not None:
        header = {"threads": threads, "cpu": platform.processor() or platform.machine(),
                  "cores": os.cpu_count(), "numpy": np.__version__, "torch": torch.__version__,
                  "lr": train_step.LR, "momentum": train_step.MOMENTUM,
                  "weight_decay": train_step.WEIGHT_DECAY, "check_steps": CHECK_STEPS,
                  "memory_steps": MEMORY_STEPS, "err_factor": ERR_FACTOR,
                  "err_floor": ERR_FLOOR}
        with open(json_path, "w") as f:
            json.dump({"header": header, "results": [asdict(r) for r in results]}, f,
                      indent=1)
    return results
