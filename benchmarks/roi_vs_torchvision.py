"""fastconv's RoI align / RoI pool against torchvision's CPU kernels, in one process.

torchvision's compiled ops do not load beside the CPU torch wheel fastconv's test
environment uses, so this runs in a separate virtualenv that has both (see
benchmarks/RESULTS.md), with fastconv from the source tree on PYTHONPATH:

    python3 -m venv /work/tvvenv
    /work/tvvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 tqdm
    PYTHONPATH=python /work/tvvenv/bin/python benchmarks/roi_vs_torchvision.py

The shape is the Faster R-CNN box head of issue 14 (N=2, C=256, 50x68 feature map, 512
rois from an 800x1088 image at spatial_scale 1/16, 7x7 bins, sampling_ratio 2, aligned).
Both libraries run with the same number of threads (torch.set_num_threads, OMP_NUM_THREADS
for fastconv; 2 by default). The calls alternate, one of each per round, so a load change
on a shared machine hits both; the table gives medians and the speed-up of the medians, and
checks that both produce the same numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Dict, List

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS",
                                                                          "2")))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before fastconv's OpenMP starts

    import torch
    import torchvision
    import torchvision.ops as ops

    import fastconv
    from fastconv.bench.cases import FASTER_RCNN_HEAD as layer, detector_rois

    torch.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x_shape = (layer.batch, layer.channels) + layer.size
    image = tuple(int(s / layer.scale) for s in layer.size)
    x = rng.standard_normal(x_shape).astype(dtype)
    rois = detector_rois(rng, layer.rois, layer.batch, image, dtype=dtype)
    dy = rng.standard_normal((layer.rois, layer.channels) + layer.out).astype(dtype)
    geo = dict(spatial_scale=layer.scale, sampling_ratio=layer.sampling_ratio,
               aligned=layer.aligned)
    xt, rt, dyt = torch.from_numpy(x), torch.from_numpy(rois), torch.from_numpy(dy)

    def tv_align() -> torch.Tensor:
        return ops.roi_align(xt, rt, layer.out, layer.scale, layer.sampling_ratio,
                             layer.aligned)

    def tv_align_both() -> torch.Tensor:
        leaf = xt.clone().requires_grad_(True)
        ops.roi_align(leaf, rt, layer.out, layer.scale, layer.sampling_ratio,
                      layer.aligned).backward(dyt)
        return leaf.grad

    def fc_align() -> np.ndarray:
        return fastconv.roi_align(x, rois, layer.out, **geo)

    def fc_align_both() -> np.ndarray:
        fastconv.roi_align(x, rois, layer.out, **geo)
        return fastconv.roi_align_backward(dy, rois, x_shape, **geo)

    def tv_pool() -> torch.Tensor:
        return ops.roi_pool(xt, rt, layer.out, layer.scale)

    def tv_pool_both() -> torch.Tensor:
        leaf = xt.clone().requires_grad_(True)
        ops.roi_pool(leaf, rt, layer.out, layer.scale).backward(dyt)
        return leaf.grad

    def fc_pool() -> np.ndarray:
        return fastconv.roi_pool(x, rois, layer.out, spatial_scale=layer.scale)

    def fc_pool_both() -> np.ndarray:
        _, idx = fastconv.roi_pool(x, rois, layer.out, spatial_scale=layer.scale,
                                   return_indices=True)
        return fastconv.roi_pool_backward(dy, idx, rois, x_shape)

    pairs = [("roi_align forward", tv_align, fc_align),
             ("roi_align forward+backward", tv_align_both, fc_align_both),
             ("roi_pool forward", tv_pool, fc_pool),
             ("roi_pool forward+backward", tv_pool_both, fc_pool_both)]
    times: Dict[str, List[float]] = {}
    errors: Dict[str, float] = {}
    for name, tv, fc in pairs:  # warm-up and the result check
        ours, theirs = fc(), tv().numpy()
        errors[name] = float(np.max(np.abs(ours - theirs)) / max(1.0, np.max(np.abs(theirs))))
    for _ in range(args.rounds):
        for name, tv, fc in pairs:
            for who, call in (("torchvision", tv), ("fastconv", fc)):
                start = time.perf_counter()
                call()
                times.setdefault(f"{name}/{who}", []).append(time.perf_counter() - start)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, fastconv "
          f"{fastconv.__version__} (cpu_path {fastconv.info(as_dict=True)['cpu_path']}), "
          f"{args.threads} threads each, {args.dtype}, {args.rounds} rounds")
    print(f"shape: x {x_shape}, {layer.rois} rois, output {layer.out}, sampling_ratio "
          f"{layer.sampling_ratio}, aligned {layer.aligned}, spatial_scale {layer.scale}")
    print(f"{'op':28s} {'torchvision ms':>15s} {'fastconv ms':>12s} {'speed-up':>9s} "
          f"{'max rel diff':>13s}")
    for name, _, _ in pairs:
        tv_ms = 1e3 * statistics.median(times[f"{name}/torchvision"])
        fc_ms = 1e3 * statistics.median(times[f"{name}/fastconv"])
        print(f"{name:28s} {tv_ms:15.2f} {fc_ms:12.2f} {tv_ms / fc_ms:8.2f}x "
              f"{errors[name]:13.1e}")


if __name__ == "__main__":
    main()
