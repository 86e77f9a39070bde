"""pytest-benchmark of the GPU cases of `fastconv.bench_gpu` (the same problems as
`python -m fastconv bench --gpu`): fastconv on CuPy arrays and PyTorch CUDA / torchvision
on the same device memory. Marked `cuda`; skipped where no GPU can run.

Run: `pytest benchmarks/bench_gpu.py --benchmark-enable` (FASTCONV_BENCH_MODE=quick or
smoke for smaller shapes). Each timed call ends with a synchronize of the stream it ran
on, so the benchmark measures the GPU work, not the launch. The correctness of every case
is checked by `python -m fastconv bench --gpu` and the cuda tests, not here.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict

import numpy as np
import pytest

import fastconv
from fastconv import bench_gpu

MODE = os.environ.get("FASTCONV_BENCH_MODE", "full")
IMPLS = ("fastconv", "torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not fastconv.cuda.is_available(),
                       reason=f"no CUDA backend here: {fastconv.cuda.reason()}"),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"gpu_case", "impl"} <= set(metafunc.fixturenames):
        metafunc.parametrize("gpu_case,impl", [
            pytest.param(case, impl, id=f"{case.op}-{case.name}-{impl}")
            for case in bench_gpu.cases(MODE) for impl in IMPLS])


@pytest.fixture(scope="module")
def env() -> bench_gpu.Env:
    return bench_gpu.Env("cuda", use_torch=True)


@pytest.fixture(scope="module")
def _problems() -> Dict[str, bench_gpu.Problem]:
    # Holds the current case only: device memory for every case at once would not fit.
    return {}


def _problem(env: bench_gpu.Env, store: Dict[str, bench_gpu.Problem],
             case: bench_gpu.Case) -> bench_gpu.Problem:
    if case.id not in store:
        store.clear()
        env.release()
        store[case.id] = case.setup(env, np.random.default_rng(0))
    return store[case.id]


def test_gpu(benchmark: Any, env: bench_gpu.Env, _problems: Dict[str, bench_gpu.Problem],
             gpu_case: bench_gpu.Case, impl: str) -> None:
    problem = _problem(env, _problems, gpu_case)
    fn: Callable[[], Any] = problem.fastconv if impl == "fastconv" else problem.torch
    if fn is None:
        pytest.skip(f"{gpu_case.id}: no {impl} baseline here ({env.torch_note}; "
                    f"torchvision {'present' if env.torchvision else 'absent'})")
    if impl == "fastconv":
        import cupy

        def sync() -> None:
            cupy.cuda.get_current_stream().synchronize()
    else:
        sync = env.torch.cuda.synchronize

    def call() -> Any:
        out = fn()
        sync()
        return out

    for _ in range(3):  # warm-up: cuDNN autotuning, module loading, pool growth
        call()
    benchmark.group = gpu_case.id
    benchmark.extra_info.update(op=gpu_case.op, case=gpu_case.name, shape=gpu_case.shape,
                                impl=impl, device=env.header("n/a", 0.0)["device"])
    benchmark(call)
    if benchmark.stats is not None and problem.work:
        scale = 1e12 if problem.unit == "TFLOP/s" else 1e9
        benchmark.extra_info[problem.unit] = round(
            problem.work / benchmark.stats.stats.median / scale, 3)
