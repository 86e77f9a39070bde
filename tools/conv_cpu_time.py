"""fastconv vs PyTorch on the dense target layers, one thread each, timed by the CPU time
of the calling thread (time.thread_time), which a loaded shared machine does not inflate
the way it inflates wall time.

Usage: PYTHONPATH=python python tools/conv_cpu_time.py {fwd|bwd} [f64] [b8] [layer ...]
Prints per layer ms and GFLOP/s for both and the ratio fastconv / torch (lower is better),
then the geometric mean. bwd times input + weight gradients together.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastconv  # noqa: E402

torch.set_num_threads(1)
# name: (C, K, spatial, kernel, stride, pad)
LAYERS = {
    "resnet": (64, 64, (56, 56), (3, 3), 1, 1),
    "stem": (3, 64, (224, 224), (7, 7), 2, 3),
    "c128": (128, 128, (28, 28), (3, 3), 1, 1),
    "vgg": (512, 512, (14, 14), (3, 3), 1, 1),
    "incep": (192, 32, (28, 28), (5, 5), 1, 2),
    "1x1": (256, 64, (56, 56), (1, 1), 1, 0),
    "c1d": (64, 64, (4096,), (7,), 1, 3),
    "c3d": (16, 32, (32, 32, 32), (3, 3, 3), 1, 1),
}


def best_time(f: Callable[[], object], reps: int, rounds: int = 5) -> float:
    """Smallest mean thread CPU seconds per call over `rounds` rounds of `reps` calls."""
    f()
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(reps):
            f()
        best = min(best, (time.thread_time() - start) / reps)
    return best


def main(argv: list) -> None:
    mode = argv[0]
    dtype = np.float64 if "f64" in argv else np.float32
    batch = 8 if "b8" in argv else 1
    names = [a for a in argv[1:] if a in LAYERS] or list(LAYERS)
    rng = np.random.default_rng(0)
    ratios = []
    for name in names:
        c, k, spatial, kernel, s, p = LAYERS[name]
        x = rng.standard_normal((batch, c) + spatial).astype(dtype)
        w = (rng.standard_normal((k, c) + kernel) * 0.1).astype(dtype)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        tconv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
                 3: torch.nn.functional.conv3d}[len(spatial)]
        y = fastconv.conv(x, w, stride=s, padding=p)
        dy = rng.standard_normal(y.shape).astype(dtype)
        tdy = torch.from_numpy(dy)
        flops = 2 * y.size * c * int(np.prod(kernel))
        dims = len(spatial)
        if mode == "fwd":
            def ours() -> object:
                return fastconv.conv(x, w, stride=s, padding=p)

            def theirs() -> object:
                return tconv(tx, tw, stride=s, padding=p)
        else:
            def ours() -> object:
                return (fastconv.conv_backward_input(dy, w, x.shape, stride=s, padding=p),
                        fastconv.conv_backward_weight(x, dy, kernel, stride=s, padding=p))

            def theirs() -> object:
                return torch.ops.aten.convolution_backward(
                    tdy, tx, tw, None, [s] * dims, [p] * dims, [1] * dims, False, [0] * dims,
                    1, [True, True, False])
            flops *= 2
        reps = max(1, int(0.15 / max(best_time(ours, 1, 1), 1e-6)))
        t_ours = min(best_time(ours, reps), best_time(ours, reps))
        t_theirs = best_time(theirs, reps)
        ratios.append(t_ours / t_theirs)
        print(f"{name:7s} N={batch} {mode} {np.dtype(dtype).name}: fastconv {t_ours * 1e3:8.3f} ms"
              f" {flops / t_ours / 1e9:6.1f} GF/s | torch {t_theirs * 1e3:8.3f} ms"
              f" {flops / t_theirs / 1e9:6.1f} GF/s | ratio {t_ours / t_theirs:5.2f}", flush=True)
    print(f"geomean fastconv/torch {np.exp(np.mean(np.log(ratios))):.3f}  max {max(ratios):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
