"""fastconv.face.batch_triplet_loss against pytorch-metric-learning: time and peak memory of
one forward + backward pass, each measurement in a fresh process.

    python benchmarks/triplet_memory.py [--sizes 1024 8192] [--limit-gb 8]

Data (identical for both libraries, from one seed): N embeddings of dim 128, 8 per class
(N / 8 classes, shuffled), standard normal then L2-normalized, float32; margin 0.2; the
Euclidean distance (fastconv squared=False; PML's default LpDistance, whose normalization
is a no-op on unit vectors).

pytorch-metric-learning: TripletMarginMiner(margin, type_of_triplets=...) followed by
TripletMarginLoss(margin) on the mined triplets, the pairing its documentation shows. Its
"all" has exactly fastconv's mining="all" semantics (AvgNonZeroReducer: the mean over the
triplets with a positive loss), so the two loss values are printed side by side as a check.
Its "semihard" / "hard" select other triplet sets than FaceNet's semihard and batch-hard
(fastconv's), so those rows compare cost, not values.

Memory: the peak resident set size of the child process while it runs the measured calls,
minus its resident size just before them (after imports and data creation), read from
/proc/self/status (VmHWM, reset through /proc/self/clear_refs): the extra memory the call
needs, measured the same way for both libraries. Time: the median of the repeats after one
warm-up call. Each child caps its address space at --limit-gb (RLIMIT_AS) so that a run
that cannot fit fails fast instead of pushing a shared machine into the OOM killer; such a
run is reported as out of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

DIM = 128
PER_CLASS = 8
MARGIN = 0.2
SEED = 0


def make_data(n: int):
    import numpy as np

    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n // PER_CLASS), PER_CLASS)
    rng.shuffle(labels)
    return x, labels.astype(np.int64)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(library: str, mining: str, n: int, repeats: int) -> Dict:
    """Runs in the fresh process: prepare, reset the peak, measure, report."""
    x, labels = make_data(n)
    if library == "fastconv":
        import fastconv
        from fastconv import face

        def step() -> float:
            e = fastconv.Tensor(x, requires_grad=True)
            loss = face.batch_triplet_loss(e, labels, MARGIN, mining=mining, squared=False)
            loss.backward()
            return float(loss.item())
    else:
        import torch
        from pytorch_metric_learning import losses, miners

        miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets=mining)
        loss_fn = losses.TripletMarginLoss(margin=MARGIN)
        y = torch.from_numpy(labels)

        def step() -> float:
            e = torch.from_numpy(x).requires_grad_(True)
            loss = loss_fn(e, y, miner(e, y))
            loss.backward()
            return float(loss.item())

    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")   # resets VmHWM to the current resident size
    times: List[float] = []
    value = float("nan")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - start)
    peak = _status_kib("VmHWM")
    return {"seconds": statistics.median(times[1:]), "extra_mib": (peak - base) / 1024,
            "base_mib": base / 1024, "loss": value}


def measure(library: str, mining: str, n: int, repeats: int, limit_gb: float) -> Dict:
    """One fresh child process; its JSON result, or why it failed."""
    limit = int(limit_gb * 2 ** 30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [sys.executable, __file__, "--child", library, mining, str(n), str(repeats)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    tail = (proc.stderr.strip().splitlines() or [f"killed (status {proc.returncode})"])[-1]
    memory = any(word in tail for word in ("MemoryError", "memory", "alloc", "killed"))
    why = f"out of memory (> {limit_gb:g} GiB address space)" if memory else "failed"
    return {"error": f"{why} after {time.perf_counter() - start:.0f} s: {tail[:80]}"}


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        library, mining, n, repeats = argv[1], argv[2], int(argv[3]), int(argv[4])
        print(json.dumps(child(library, mining, n, repeats)))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--limit-gb", type=float, default=8.0,
                   help="address-space cap of each child process (default 8 GiB)")
    p.add_argument("--pml-mining", nargs="+", default=["all", "semihard"],
                   help="TripletMarginMiner types to run (default: all semihard)")
    args = p.parse_args(argv)
    runs = [("fastconv", m) for m in ("all", "hard", "semihard")]
    runs += [("pytorch-metric-learning", m) for m in args.pml_mining]
    print(f"batch triplet loss, forward + backward, dim {DIM}, {PER_CLASS} per class, "
          f"float32, margin {MARGIN}, Euclidean; {os.cpu_count()} CPUs")
    print(f"{'library':24s} {'mining':9s} {'N':>6s} {'time (s)':>9s} "
          f"{'extra peak RSS (MiB)':>21s} {'loss':>9s}")
    results: Dict = {}
    for n in args.sizes:
        repeats = 3 if n <= 2048 else 1
        for library, mining in runs:
            r = measure(library if library == "fastconv" else "pml", mining, n, repeats,
                        args.limit_gb)
            results[(library, mining, n)] = r
            if "error" in r:
                print(f"{library:24s} {mining:9s} {n:6d}   {r['error']}", flush=True)
            else:
                print(f"{library:24s} {mining:9s} {n:6d} {r['seconds']:9.3f} "
                      f"{r['extra_mib']:21.1f} {r['loss']:9.5f}", flush=True)
    for n in args.sizes:
        ours = results[("fastconv", "all", n)]
        theirs = results.get(("pytorch-metric-learning", "all", n))
        if theirs is None or "error" in ours:
            continue
        if "error" in theirs:
            print(f"N={n}: pytorch-metric-learning 'all': {theirs['error']}; fastconv 'all' "
                  f"{ours['seconds']:.3f} s, {ours['extra_mib']:.1f} MiB")
        else:
            print(f"N={n}: 'all' vs 'all': {theirs['seconds'] / ours['seconds']:.1f}x faster, "
                  f"{theirs['extra_mib'] / max(ours['extra_mib'], 0.1):.0f}x less extra "
                  f"memory; loss {ours['loss']:.6f} vs {theirs['loss']:.6f}")


if __name__ == "__main__":
    main()
