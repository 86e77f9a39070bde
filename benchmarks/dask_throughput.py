"""fastconv.dask against the in-memory ops on one volume: time and peak memory, each
measurement in a fresh process.

    python benchmarks/dask_throughput.py [--size 1024] [--slab 32] [--repeats 3]
                                         [--workers 1 2] [--pipelines conv conv+pool]

The volume is (1, 1, S, S, S) float32 standard normal noise (S = 1024: 4 GiB), saved once
as an .npy file in --dir. Two pipelines: "conv" (3x3x3 kernel, one output channel,
"same" padding, bias: output as large as the input) and "conv+pool" (the same, then
max_pool 4: the output of `python -m fastconv dask-demo`). Three ways to run each:

- memory: the in-memory ops on the whole volume (loaded with np.load beforehand);
- dask, memory: fastconv.dask on dask.array.from_array(volume) in blocks of --slab
  z-planes, stored (dask.array.store) into a preallocated array: the overhead of the
  block-by-block path alone;
- dask, disk: fastconv.dask from the .npy file to a new .npy file (fastconv.dask.from_npy,
  to_npy): the out-of-core path, reading and writing included (from the page cache when
  the file fits in it).

Dask runs with its threaded scheduler and --workers threads (each kernel call also uses
fastconv's OpenMP threads). Results of the dask paths are checked equal to the in-memory
ops bitwise. Time: the median of --repeats runs after one warm-up run. Memory: the peak
resident set (VmHWM, /proc/self/status) of the child during the measured runs, minus its
resident set just before them (after loading the volume, for the in-memory inputs), and
that peak itself. Both include fastconv's cache of released host outputs (at most
FASTCONV_HOST_CACHE_MB idle, default 1024 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class InPlace:
    """An in-memory array whose blocks dask reads as views: from_array copies a plain
    ndarray into per-block pieces when the graph is built, which would add a copy of the
    whole volume to the measured time and memory."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, index: Any) -> Any:
        return self.array[index]

    def __dask_tokenize__(self) -> tuple:
        # Without it dask.array.from_array names the graph by hashing a pickle of the
        # object, i.e. of the whole volume: 0.67 s per GiB here, 2.7 s of graph
        # construction for 4 GiB counted in the Dask runs' time (not fastconv.dask's work).
        return (type(self).__name__, id(self.array), self.shape, str(self.dtype))


def child(args: argparse.Namespace) -> Dict[str, Any]:
    import dask.array as da
    import numpy as np

    import fastconv
    from fastconv import dask as fd

    rng = np.random.default_rng(1)
    w = rng.standard_normal((1, 1, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(1).astype(np.float32)
    path = os.path.join(args.dir, "volume.npy")
    pooled = args.pipeline == "conv+pool"

    def in_memory(x: Any) -> Any:
        y = fastconv.conv(x, w, bias, padding="same")
        return fastconv.max_pool(y, 4) if pooled else y

    def on_dask(x: Any) -> Any:
        y = fd.conv(x, w, bias, padding="same")
        return fd.max_pool(y, 4) if pooled else y

    volume = None if args.mode == "dask-disk" else np.load(path)
    chunks = (1, 1, args.slab, args.size, args.size)
    outputs: List[Any] = []

    def run() -> None:
        outputs.clear()
        if args.mode == "memory":
            outputs.append(in_memory(volume))
        elif args.mode == "dask-memory":
            y = on_dask(da.from_array(InPlace(volume), chunks=chunks, asarray=False,
                                      meta=volume[:0]))
            out = np.empty(y.shape, y.dtype)
            da.store(y, out, lock=False, scheduler="threads", num_workers=args.workers[0])
            outputs.append(out)
        else:
            y = on_dask(fd.from_npy(path, chunks=chunks))
            out_path = os.path.join(args.dir, "out.npy")
            fd.to_npy(y, out_path, scheduler="threads", num_workers=args.workers[0])
            outputs.append(out_path)

    run()  # warm-up (plans, thread pools, page cache)
    last = outputs[-1]
    if args.mode != "memory":
        # The check is against a fresh in-memory result, then freed again.
        result = np.load(last) if isinstance(last, str) else last
        full = np.load(path) if volume is None else volume
        equal = bool(np.array_equal(result, in_memory(full)))
        del result, full
    else:
        equal = True
    outputs.clear()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    base = status_kib("VmRSS")
    times = []
    for _ in range(args.repeats):
        outputs.clear()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak = status_kib("VmHWM")
    return {"seconds": statistics.median(times), "all_seconds": times,
            "extra_peak_gib": (peak - base) / 2**20, "peak_gib": peak / 2**20,
            "equal": equal}


def interleaved(args: argparse.Namespace) -> None:
    """In-memory and dask-memory runs alternated in one process (the same load for both):
    the median of the per-round time ratios.

    For the conv pipeline each round runs, in this order: the in-memory op (its output
    from fastconv's allocator: fresh pages, since the host cache keeps no block over its
    limit), Dask writing each block straight into a fresh np.empty result (conv(out=)),
    Dask through dask.array.store into a fresh np.empty result (block, then copy: the
    path before conv(out=)), then the in-memory op and conv(out=) writing into one
    preallocated result whose pages were touched once beforehand (no page faults on
    either side). The host cache's counters are printed after the rounds."""
    import dask.array as da
    import numpy as np

    import fastconv
    from fastconv import _backend
    from fastconv import dask as fd
    from fastconv.ops.conv import conv_plan

    rng = np.random.default_rng(1)
    w = rng.standard_normal((1, 1, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(1).astype(np.float32)
    volume = np.load(os.path.join(args.dir, "volume.npy"))
    chunks = (1, 1, args.slab, args.size, args.size)

    def source() -> Any:
        return da.from_array(InPlace(volume), chunks=chunks, asarray=False, meta=volume[:0])

    dask_kwargs = dict(scheduler="threads", num_workers=args.workers[0])
    for pipeline in args.pipelines:
        pooled = pipeline == "conv+pool"

        def memory() -> Any:
            y = fastconv.conv(volume, w, bias, padding="same")
            return fastconv.max_pool(y, 4) if pooled else y

        def dask_store() -> Any:
            y = fd.conv(source(), w, bias, padding="same")
            y = fd.max_pool(y, 4) if pooled else y
            out = np.empty(y.shape, y.dtype)
            da.store(y, out, lock=False, **dask_kwargs)
            return out

        runs: Dict[str, Any] = {"memory": memory}
        if pooled:
            runs["dask, store"] = dask_store
        else:
            # Allocated at its first (warm-up) use, so that at most three 4 GiB arrays
            # are alive at once; filled to fault every page in before the rounds.
            held: List[Any] = []

            def touched() -> Any:
                if not held:
                    held.append(np.empty_like(volume))
                    held[0].fill(0.0)
                return held[0]

            plan = conv_plan(volume.shape, w.shape, volume.dtype, padding="same")

            def dask_into(out: Any) -> Any:
                fd.conv(source(), w, bias, padding="same", out=out).persist(**dask_kwargs)
                return out

            runs["dask, into fresh"] = lambda: dask_into(np.empty_like(volume))
            runs["dask, store"] = dask_store
            runs["memory, into touched"] = lambda: plan.forward(volume, w, bias, out=touched())
            runs["dask, into touched"] = lambda: dask_into(touched())
        expected = memory()
        for name, run in runs.items():  # warm-up, and every path checked bitwise
            result = run()
            if not np.array_equal(result, expected):
                raise AssertionError(f"{pipeline} {name}: differs from the in-memory op")
            del result
        del expected
        before = _backend.host_cache_stats()
        rounds: List[Dict[str, float]] = []
        for _ in range(args.repeats):
            times = {}
            for name, run in runs.items():
                start = time.perf_counter()
                result = run()
                times[name] = time.perf_counter() - start
                del result
            rounds.append(times)
        after = _backend.host_cache_stats()
        print(f"{pipeline}, {args.workers[0]} dask thread(s), {args.repeats} rounds "
              "(all results equal the in-memory op bitwise):", flush=True)
        for name in runs:
            base = "memory, into touched" if name.endswith("touched") else "memory"
            ratios = [r[name] / r[base] for r in rounds]
            print(f"  {name:<22} {statistics.median(r[name] for r in rounds):6.2f} s  "
                  f"ratio to {base!r} {statistics.median(ratios):.2f}x "
                  f"(rounds: {', '.join(f'{q:.2f}' for q in ratios)})", flush=True)
        print(f"  host cache: reuses during the rounds {after['reuses'] - before['reuses']}, "
              f"idle after {after['idle_bytes'] / 2**20:.0f} MiB in {after['idle_blocks']} "
              f"blocks (limit {after['limit_bytes'] / 2**20:.0f} MiB)", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024, help="volume edge S (default 1024)")
    p.add_argument("--slab", type=int, default=32, help="z-planes per block (default 32)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="dask threads to try (default 1 2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pipelines", nargs="+", default=["conv", "conv+pool"],
                   choices=["conv", "conv+pool"], help="what to time (default both)")
    p.add_argument("--dir", default=None, help="where the volume goes (a temporary folder)")
    p.add_argument("--interleave", action="store_true",
                   help="alternate in-memory and dask-memory runs in one process instead "
                        "(times only)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    p.add_argument("--pipeline", default="conv", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0

    import numpy as np

    folder = tempfile.mkdtemp(prefix="fastconv-dask-bench-", dir=args.dir)
    path = os.path.join(folder, "volume.npy")
    volume = np.lib.format.open_memmap(path, "w+", np.float32, (1, 1) + (args.size,) * 3)
    rng = np.random.default_rng(0)
    for z in range(args.size):
        volume[0, 0, z] = rng.standard_normal((args.size, args.size), np.float32)
    volume.flush()
    del volume
    gib = (args.size**3 * 4) / 2**30
    block_gib = args.slab * args.size**2 * 4 / 2**30
    print(f"volume (1, 1, {args.size}, {args.size}, {args.size}) float32 {gib:.2f} GiB, "
          f"blocks of {args.slab} z-planes ({block_gib * 1024:.0f} MiB)")
    if not args.interleave:
        print(f"{'pipeline':<10} {'run':<22} {'time s':>8} {'vs memory':>10} "
              f"{'extra peak GiB':>15} {'/ block':>8} {'peak RSS GiB':>13}  equal")
    try:
        if args.interleave:
            args.dir = folder
            interleaved(args)
            return 0
        for pipeline in args.pipelines:
            runs = [("memory", 0)] + [(m, n) for m in ("dask-memory", "dask-disk")
                                      for n in args.workers]
            base = None
            for mode, workers in runs:
                cmd = [sys.executable, __file__, "--child", "--mode", mode, "--pipeline",
                       pipeline, "--size", str(args.size), "--slab", str(args.slab),
                       "--workers", str(max(workers, 1)), "--repeats", str(args.repeats),
                       "--dir", folder]
                result = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                   text=True).stdout.strip().splitlines()[-1])
                base = base or result["seconds"]
                label = mode if mode == "memory" else f"{mode}, {workers} thread(s)"
                print(f"{pipeline:<10} {label:<22} {result['seconds']:>8.2f} "
                      f"{result['seconds'] / base:>9.2f}x {result['extra_peak_gib']:>15.2f} "
                      f"{result['extra_peak_gib'] / block_gib:>8.1f} "
                      f"{result['peak_gib']:>13.2f}  {result['equal']}",
                      flush=True)
    finally:
        for name in ("volume.npy", "out.npy"):
            if os.path.exists(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
        os.rmdir(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
