"""Memory leak check: many mixed fastconv calls, successful and failing, with the resident
set size sampled along the way. A leak shows as RSS that keeps growing after the warm-up;
the host cache must stay within its limit.

    PYTHONPATH=python python benchmarks/leak_check.py --calls 100000

The calls cycle through every op family's smoke-sized benchmark case (fastconv.bench.cases),
a small network's forward and backward pass, and a table of bad arguments that must raise
ValueError/TypeError (their messages and partially built state must not leak either).
"""

from __future__ import annotations

import argparse
import resource
from typing import Callable, List, Tuple

import numpy as np

import fastconv
from fastconv import nn
from fastconv.bench.cases import cases


def rss_mib() -> float:
    """Current resident set size of this process, MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _failing_calls(rng: np.random.Generator) -> List[Callable[[], object]]:
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    boxes = np.abs(rng.standard_normal((5, 4)))
    return [
        lambda: fastconv.conv(None, w),
        lambda: fastconv.conv(x, w, stride=0),
        lambda: fastconv.conv(x, w.astype(np.float32)),
        lambda: fastconv.conv(x[:, :, :1, :1], w),
        lambda: fastconv.max_pool(x, 2**62),
        lambda: fastconv.im2col(x, 0),
        lambda: fastconv.nms(boxes, np.ones(4), 0.5),
        lambda: fastconv.roi_align(x, np.array([[7.0, 0, 0, 1, 1]]), 2),
    ]


def mixed_calls(seed: int = 0) -> Tuple[List[Callable[[], object]], int]:
    """(calls, how many of them must raise); the failing ones come last."""
    rng = np.random.default_rng(seed)
    calls: List[Callable[[], object]] = []
    for case in cases("smoke", device="cpu"):
        problem = case.setup(rng)
        calls.append(lambda p=problem: p.fastconv(*p.inputs))
    fastconv.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)

    def train_step() -> object:
        model.zero_grad()
        loss = model(fastconv.Tensor(images)).sum()
        loss.backward()
        return loss

    calls.append(train_step)
    failing = _failing_calls(rng)
    return calls + failing, len(failing)


def run(total: int, samples: int = 20, seed: int = 0) -> List[Tuple[int, float]]:
    """Make `total` calls; return [(calls so far, RSS MiB)] at `samples` points."""
    calls, failing = mixed_calls(seed)
    first_failing = len(calls) - failing
    points = []
    every = max(1, total // samples)
    for i in range(total):
        index = i % len(calls)
        if index >= first_failing:
            try:
                calls[index]()
            except (ValueError, TypeError):
                pass
            else:
                raise AssertionError(f"bad call {index - first_failing} did not raise")
        else:
            calls[index]()
        if (i + 1) % every == 0:
            points.append((i + 1, rss_mib()))
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--samples", type=int, default=20)
    args = p.parse_args()
    points = run(args.calls, args.samples)
    for calls, rss in points:
        print(f"{calls:>9,d} calls  RSS {rss:8.1f} MiB")
    warm = points[len(points) // 4][1]
    print(f"growth after the first quarter: {points[-1][1] - warm:+.1f} MiB; "
          f"host cache: {fastconv.info(as_dict=True)['host_cache']}")


if __name__ == "__main__":
    main()
