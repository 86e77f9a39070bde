"""Whole-network inference benchmark: forward time of `fastconv.models` networks against
twins written in plain torch.nn with the same weights (copied through the state dict), in
one process, with PyTorch limited to fastconv's thread count.

Entry point: `python -m fastconv bench --models [--quick]`. The twins come from
`fastconv.models.torch_twins` (plain torch.nn, shared with the tests) rather than
torchvision, so the comparison needs nothing beyond torch itself.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import models

from .report import aligned_rows

# name -> (input shape, reps) of the full run; warm-up calls come on top. On a shared VM
# single forwards stall now and then (resnet50: 60-65 ms, with lone calls of 90-100 ms), so
# each median is taken over enough calls that a few stalls do not move it.
# A row's label is the model's name, optionally followed by ":" and a tag for another input.
MODELS: Dict[str, Tuple[Tuple[int, ...], int]] = {
    "lenet5": ((64, 1, 32, 32), 50),
    "vgg16": ((1, 3, 224, 224), 9),
    "resnet50": ((1, 3, 224, 224), 21),
    "efficientnet_lite0": ((1, 3, 224, 224), 41),
    "efficientnet_lite0:b8": ((8, 3, 224, 224), 11),
}
WARMUP = 2


@dataclass
class ModelResult:
    """One row of the table (milliseconds are medians per forward)."""

    model: str
    input_shape: Tuple[int, ...]
    fastconv_ms: float
    torch_ms: Optional[float]
    speedup: Optional[float]       # torch ms / fastconv ms: > 1 means fastconv is faster
    max_rel_err: Optional[float]   # max|fastconv - torch| / max|torch|
    reps: int


# ------------------------------------------------------------------ timing


def _median_ms(fn: Callable[[], Any], reps: int) -> Tuple[float, Any]:
    """Median milliseconds per call after WARMUP untimed calls, and the last result."""
    out = None
    for _ in range(WARMUP):
        out = fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples), out


def _randomize_buffers(model: fastconv.nn.Module, rng: np.random.Generator) -> None:
    """Give BatchNorm running statistics non-trivial values, so eval-mode normalization is
    actually exercised by the comparison (fresh ones are mean 0, variance 1)."""
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf[...] = rng.normal(0.0, 0.1, buf.shape)
        elif name.endswith("running_var"):
            buf[...] = rng.uniform(0.5, 1.5, buf.shape)


def bench_model(name: str, shape: Sequence[int], reps: int, torch: Optional[Any],
                seed: int = 0) -> ModelResult:
    """Time one network's forward (eval mode, no graph) in fastconv and, with `torch`, in
    its twin; compare the outputs. `name` is a MODELS label."""
    arch = name.split(":")[0]
    fastconv.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = getattr(models, arch)().eval()
    _randomize_buffers(model, rng)
    x = rng.standard_normal(tuple(shape)).astype(np.float32)
    with fastconv.no_grad():
        ours_ms, ours = _median_ms(lambda: model(fastconv.Tensor(x)), reps)
    ours = ours.numpy()
    torch_ms = err = speedup = None
    if torch is not None:
        from ..models.torch_twins import TWINS

        twin = TWINS[arch]().eval()
        # strict: a missing or renamed key would mean the twin is not the same network.
        twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                              for k, v in model.state_dict().items()}, strict=True)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            torch_ms, theirs = _median_ms(lambda: twin(xt), reps)
        theirs = theirs.numpy()
        err = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))
        speedup = torch_ms / ours_ms
    return ModelResult(name, tuple(shape), ours_ms, torch_ms, speedup, err, reps)


def format_table(results: Sequence[ModelResult], threads: int) -> str:
    """The aligned table, with a line saying how it was measured."""
    lines = [f"forward pass, eval mode, no autograd; median ms after {WARMUP} warm-up calls; "
             f"{threads} threads each; speed-up = torch ms / fastconv ms"]
    titles = ["model", "input", "fastconv ms", "torch ms", "speed-up", "max rel err"]
    rows = [[r.model, "x".join(map(str, r.input_shape)), f"{r.fastconv_ms:.2f}",
             "" if r.torch_ms is None else f"{r.torch_ms:.2f}",
             "" if r.speedup is None else f"{r.speedup:.2f}",
             "" if r.max_rel_err is None else f"{r.max_rel_err:.1e}"] for r in results]
    lines += aligned_rows(titles, rows, left=2)
    return "\n".join(lines)


def run(names: Optional[Sequence[str]] = None, quick: bool = False, use_torch: bool = True,
        reps: Optional[int] = None, progress: bool = True,
        echo: Callable[[str], None] = print) -> List[ModelResult]:
    """Benchmark `names` (default: all of MODELS; `quick`: lenet5 only, 3 reps), print the
    table through `echo` and return the rows. `reps` overrides the per-model count."""
    from tqdm import tqdm

    selected = list(names) if names is not None else (["lenet5"] if quick else list(MODELS))
    threads = int(fastconv.info(as_dict=True)["threads"])
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None
        else:
            # Same core count for both: otherwise the comparison measures thread counts.
            torch.set_num_threads(threads)
    results = []
    for name in tqdm(selected, desc="models", unit="model", disable=not progress,
                     leave=False):
        shape, default_reps = MODELS[name]
        n = reps if reps is not None else (3 if quick else default_reps)
        results.append(bench_model(name, shape, n, torch))
    echo(format_table(results, threads))
    return results
