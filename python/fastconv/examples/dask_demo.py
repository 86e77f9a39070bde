"""Out of core with fastconv.dask: convolve and pool a volume larger than memory.

    python -m fastconv dask-demo [--shape Z Y X] [--slab 16] [--dir DIR]
                                 [--scheduler ADDRESS] [--quick] [--no-progress]

Three passes, each block by block so that memory holds a few blocks, never the volume:
1. generate a float32 volume (1, 1, Z, Y, X) of standard normal noise in blocks of --slab
   z-planes (dask's per-block random generators, seeded) into DIR/volume.npy;
2. read it back, convolve it with a random 3x3x3 kernel into 2 channels ("same" padding,
   plus bias) and max-pool 4x4x4, writing the result (1/32 of the input's size) to
   DIR/pooled.npy;
3. check sampled output z-planes (the first, the last and random ones) against the
   in-memory fastconv.conv and fastconv.max_pool run on exactly the input planes they
   read: they must be equal bitwise.

The default shape, 1920 x 1984 x 1984, is a 28.2 GiB volume. With --scheduler ADDRESS the
passes run on that dask.distributed scheduler (e.g. tcp://10.0.0.5:8786); DIR must then be
a path every worker sees (a shared file system). The files are deleted at the end unless
--keep. Prints the wall time and the peak resident set of this process in each pass
(with --scheduler, the work and its memory are on the workers).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import tempfile
import time
from typing import Any, List, Optional, Sequence

import numpy as np

import fastconv

KERNEL = 3
POOL = 4
CHANNELS = 2


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastconv dask-demo",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=(1920, 1984, 1984),
                   metavar=("Z", "Y", "X"),
                   help="volume size (default 1920 1984 1984: 28.2 GiB of float32)")
    p.add_argument("--slab", type=int, default=16,
                   help="z-planes per block (default 16: 252 MB blocks at the default shape)")
    p.add_argument("--dir", default=None,
                   help="where the files go (a new folder inside it; default: the system's "
                        "temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the files")
    p.add_argument("--samples", type=int, default=8,
                   help="random output z-planes to check against the in-memory ops, "
                        "besides the first and the last (default 8)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a dask.distributed scheduler address; default: threads in this "
                        "process")
    p.add_argument("--workers", type=int, default=2,
                   help="threads of the local scheduler (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the volume and the kernel")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--quick", action="store_true",
                   help="a 40 x 36 x 44 volume in slabs of 8: a smoke run for tests")
    args = p.parse_args(argv)
    if args.quick:
        args.shape, args.slab = (40, 36, 44), 8
    if min(args.shape) < POOL or args.slab < 1 or args.samples < 1:
        p.error(f"--shape must be at least {POOL} in every dim; --slab and --samples "
                "positive")
    return args


def reset_peak_rss() -> None:
    """Start a new peak resident set measurement (Linux; elsewhere peaks are since start)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_gib() -> float:
    """Peak resident set of this process since reset_peak_rss (or since start), GiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Runner:
    """Computes Dask collections locally (threads) or on a dask.distributed cluster, with a
    progress bar."""

    def __init__(self, address: Optional[str], workers: int, progress: bool) -> None:
        self.client: Any = None
        if address is not None:
            from distributed import Client

            self.client = Client(address)
        self.workers = workers
        self.progress = progress

    def run(self, collection: Any, label: str) -> float:
        """Compute `collection`; returns the wall time in seconds."""
        import dask

        print(label, flush=True)
        start = time.perf_counter()
        if self.client is None:
            from dask.diagnostics import ProgressBar

            with ProgressBar() if self.progress else contextlib.nullcontext():
                dask.compute(collection, scheduler="threads", num_workers=self.workers)
        else:
            import distributed

            persisted = self.client.persist(collection)
            if self.progress:
                distributed.progress(persisted)
            dask.compute(persisted)  # (on the client's cluster; raises what a task raised)
        return time.perf_counter() - start

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def reference_plane(volume: np.ndarray, z: int, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Output plane z by the in-memory ops on the input planes it reads: conv outputs
    [4z, 4z + 4) read input planes [4z - 1, 4z + 5), zero-padded past the volume."""
    lo, hi = POOL * z - 1, POOL * z + POOL + 1
    first, last = max(lo, 0), min(hi, volume.shape[2])
    slab = np.array(volume[:, :, first:last])
    conv = fastconv.conv(slab, w, bias, padding=((first - lo, hi - last), (1, 1), (1, 1)))
    return fastconv.max_pool(conv, POOL)


def check(in_path: str, out_path: str, w: np.ndarray, bias: np.ndarray, samples: int,
          rng: np.random.Generator) -> List[int]:
    """The output z-planes that differ from the in-memory ops (bitwise), of those sampled."""
    volume = np.load(in_path, mmap_mode="r")
    pooled = np.load(out_path, mmap_mode="r")
    planes = pooled.shape[2]
    chosen = sorted({0, planes - 1} | set(rng.choice(planes, min(samples, planes),
                                                     replace=False).tolist()))
    bad = [z for z in chosen
           if not np.array_equal(np.array(pooled[:, :, z:z + 1]),
                                 reference_plane(volume, z, w, bias))]
    print(f"checked output z-planes {chosen}: "
          f"{'all equal bitwise' if not bad else f'{bad} differ'}")
    return bad


def main(argv: Optional[Sequence[str]] = None) -> int:
    import dask.array as da

    from fastconv import dask as fd

    args = parse(argv)
    rng = np.random.default_rng(args.seed)
    w = rng.standard_normal((CHANNELS, 1) + (KERNEL,) * 3).astype(np.float32) / KERNEL**1.5
    bias = rng.standard_normal(CHANNELS).astype(np.float32)
    shape = (1, 1) + tuple(args.shape)
    chunks = (1, 1, args.slab) + tuple(args.shape[1:])
    folder = tempfile.mkdtemp(prefix="fastconv-dask-demo-", dir=args.dir)
    in_path = os.path.join(folder, "volume.npy")
    out_path = os.path.join(folder, "pooled.npy")
    runner = Runner(args.scheduler, args.workers, not args.no_progress)
    block_mb = np.prod(chunks) * 4 / 1e6
    print(f"volume {shape} float32: {np.prod(shape) * 4 / 2**30:.2f} GiB in blocks of "
          f"{chunks} ({block_mb:.0f} MB), under {folder}")
    try:
        noise = da.random.default_rng(args.seed).standard_normal(shape, chunks=chunks,
                                                                 dtype=np.float32)
        reset_peak_rss()
        t_gen = runner.run(fd.to_npy(noise, in_path, compute=False), "1/3 generate")
        gen_peak = peak_rss_gib()
        x = fd.from_npy(in_path, chunks=chunks)
        y = fd.max_pool(fd.conv(x, w, bias, padding="same"), POOL)
        reset_peak_rss()
        t_run = runner.run(fd.to_npy(y, out_path, compute=False),
                           f"2/3 conv {KERNEL}^3 -> {CHANNELS} channels, max_pool {POOL}^3")
        print(f"generate {t_gen:.1f} s; conv + pool {t_run:.1f} s "
              f"({np.prod(shape) * 4 / 2**30 / t_run:.2f} GiB/s of input); output "
              f"{y.shape} {y.nbytes / 2**30:.2f} GiB; peak RSS of this process "
              f"{gen_peak:.2f} GiB generating, {peak_rss_gib():.2f} GiB in conv + pool")
        print("3/3 check")
        bad = check(in_path, out_path, w, bias, args.samples, rng)
    finally:
        runner.close()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if bad else 0
