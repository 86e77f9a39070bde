"""pytest-benchmark suite over the cases of `fastconv.bench.cases` (the same problems as
`python -m fastconv bench`, on the CPU and, where one can run, the GPU). Run explicitly:
`pytest benchmarks/ --benchmark-enable`.

Each benchmark module names its ops in `OPS`; this hook turns them into one test per
(case, backend) on every device: fastconv, the NumPy reference (CPU only) and PyTorch on
the same memory. GPU cases are marked `cuda` and skip where no GPU can run; each timed GPU
call ends with a synchronize of the stream it ran on, so the benchmark measures the GPU
work, not the launch. FASTCONV_BENCH_MODE=quick (or smoke) selects the smaller shapes.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Tuple

import numpy as np
import pytest

import fastconv
from fastconv.bench.cases import Case, Problem, Unavailable, cases
from fastconv.bench.timing import Device, open_device

MODE = os.environ.get("FASTCONV_BENCH_MODE", "full")
BACKENDS = {"cpu": ("fastconv", "numpy", "torch"), "cuda": ("fastconv", "torch")}
# The NumPy reference can take seconds per call on the big layers: cap its rounds.
NUMPY_SECONDS = 1.0
NUMPY_MAX_ROUNDS = 5


def pytest_collect_file(file_path: Any, parent: pytest.Collector) -> Any:
    # The modules are named bench_*.py so the default test run never collects them.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"case", "backend"} <= set(metafunc.fixturenames):
        ops = getattr(metafunc.module, "OPS")
        params = []
        for device, backends in BACKENDS.items():
            marks = [pytest.mark.cuda] if device == "cuda" else []
            params += [pytest.param(case, backend, marks=marks,
                                    id=f"{case.op}-{case.name}-{device}-{backend}")
                       for case in cases(MODE, ops, device) for backend in backends]
        metafunc.parametrize("case,backend", params)


@pytest.fixture(scope="session")
def _devices() -> Dict[str, Device]:
    return {}


@pytest.fixture(scope="session")
def _problems() -> Dict[str, Tuple[Problem, Tuple[Any, ...]]]:
    # Holds only the current case: the full set of inputs would not fit in memory.
    return {}


def _device(store: Dict[str, Device], name: str) -> Device:
    if name not in store:
        if name == "cuda" and not fastconv.cuda.is_available():
            pytest.skip(f"no CUDA backend here: {fastconv.cuda.reason()}")
        store[name] = open_device(name, "smoke" if MODE == "smoke" else MODE, use_torch=True)
    return store[name]


@pytest.fixture
def run_case(benchmark: Any, _devices: Dict[str, Device],
             _problems: Dict[str, Tuple[Problem, Tuple[Any, ...]]]
             ) -> Callable[[Case, str], None]:
    """Benchmark `case` with one backend; throughput and % of its roof go to extra_info."""

    def run(case: Case, backend: str) -> None:
        device = _device(_devices, case.device)
        if case.id not in _problems:
            _problems.clear()
            device.settle()
            try:
                problem = case.setup(np.random.default_rng(0))
            except NotImplementedError as exc:
                pytest.skip(f"{case.id}: setup not implemented ({exc})")
            _problems[case.id] = (problem, tuple(device.put(a) for a in problem.inputs))
        problem, inputs = _problems[case.id]
        benchmark.group = case.id
        benchmark.extra_info.update(op=case.op, case=case.name, shape=case.shape,
                                    device=case.device, backend=backend)
        if backend == "torch":
            if device.torch is None or problem.torch is None:
                pytest.skip(f"{case.id}: no PyTorch baseline here ({device.torch_note})")
            try:
                call = problem.torch(device.torch, tuple(device.to_torch(a) for a in inputs))
            except Unavailable as exc:
                pytest.skip(f"{case.id}: {exc}")
        elif backend == "numpy":
            call = lambda: problem.reference(*problem.inputs)  # noqa: E731
        else:
            call = lambda: problem.fastconv(*inputs)  # noqa: E731
        fn = call if case.device != "cuda" else _synchronized(call, device)
        # Warm-up: the thread pool, cuDNN autotuning, module loading, pool growth.
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
        for _ in range(2 if case.device == "cuda" else 0):
            fn()
        if backend == "numpy":
            rounds = max(1, min(NUMPY_MAX_ROUNDS, int(NUMPY_SECONDS / max(first, 1e-9))))
            benchmark.pedantic(fn, rounds=rounds, iterations=1)
        else:
            benchmark(fn)
        if benchmark.stats is not None and problem.unit:
            unit = device.unit(problem.unit)
            rate = problem.work / benchmark.stats.stats.median / device.scale(problem.unit)
            benchmark.extra_info[unit] = round(rate, 3)
            roof = device.roof(problem.unit)
            if roof:
                benchmark.extra_info["% of roof"] = round(100 * rate / roof, 1)

    return run


def _synchronized(call: Callable[[], Any], device: Any) -> Callable[[], Any]:
    """`call` followed by a device synchronization, so a timing covers the whole kernel."""
    def run() -> Any:
        out = call()
        device.synchronize()
        return out
    return run
