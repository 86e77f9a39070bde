"""The convolutional implementation of sliding windows against running every window's crop
through the original classifier in one batch, in one process:

    PYTHONPATH=python python benchmarks/convolutionalize_vs_crops.py

Cases: the seed's 14x14x3 classifier (5x5 conv 16, 2x2 max pool, FC 400, FC 400, softmax
4) on its 28x28 image (8x8 = 64 windows at stride 2) and on a 128x128 image (58x58 = 3,364
windows, dense). The crops are gathered once beforehand (sliding_window_view, copied into
one (windows, 3, 14, 14) batch; that gather is timed too and reported apart). Both
forward passes run under no_grad, alternating, one of each per round, so a load change on
a shared machine hits both; the table gives medians, the time ratio crops / sliding, the
multiply-adds of each (nn.summary: the crops pay the classifier once per window, the
sliding network shares the convolution work of overlapping windows; the FC part costs the
same per window) and the largest difference between the two score maps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable, List

import numpy as np


def timed(fn: Callable[[], object], rounds: List[float]) -> None:
    start = time.perf_counter()
    fn()
    rounds.append((time.perf_counter() - start) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int,
                        default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before fastconv's OpenMP starts

    import fastconv
    from fastconv import Tensor, nn

    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(),
                          nn.Linear(400, 4), nn.Softmax(dim=1))
    model.eval()
    sliding = nn.convolutionalize(model, (3, 14, 14))
    per_window = nn.summary(model, (3, 14, 14)).total_mult_adds
    print(f"fastconv {fastconv.__version__}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads, float32, median of {args.rounds} rounds; load average "
          f"before: {os.getloadavg()[0]:.2f}")
    print("| image | windows | crops: gather ms | crops: classifier ms | sliding ms | "
          "time ratio crops/sliding | crops MACs | sliding MACs | MAC ratio | max diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for side in (28, 128):
        image = rng.standard_normal((1, 3, side, side)).astype(np.float32)
        grid = (side - 14) // 2 + 1

        def gather() -> np.ndarray:
            views = np.lib.stride_tricks.sliding_window_view(image[0], (14, 14), axis=(1, 2))
            # (3, side-13, side-13, 14, 14): every window at stride 2, windows first.
            return np.ascontiguousarray(views[:, ::2, ::2].transpose(1, 2, 0, 3, 4)
                                        .reshape(grid * grid, 3, 14, 14))

        crops = gather()
        times = {"gather": [], "crops": [], "sliding": []}
        with fastconv.no_grad():
            for _ in range(args.rounds):
                timed(gather, times["gather"])
                timed(lambda: model(Tensor(crops)), times["crops"])
                timed(lambda: sliding(Tensor(image)), times["sliding"])
            by_crops = model(Tensor(crops)).numpy()
            by_sliding = sliding(Tensor(image)).numpy()[0].reshape(4, -1).T
        diff = float(np.abs(by_crops - by_sliding).max())
        med = {k: statistics.median(v) for k, v in times.items()}
        crop_macs = per_window * grid * grid
        sliding_macs = nn.summary(sliding, (3, side, side)).total_mult_adds
        print(f"| {side}x{side} | {grid}x{grid} = {grid * grid} | {med['gather']:.3f} | "
              f"{med['crops']:.3f} | {med['sliding']:.3f} | "
              f"{med['crops'] / med['sliding']:.2f} | {crop_macs / 1e6:.1f} M | "
              f"{sliding_macs / 1e6:.1f} M | {crop_macs / sliding_macs:.2f} | {diff:.1e} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
