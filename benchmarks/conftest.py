"""pytest-benchmark suite over the cases of `fastconv.bench_cases` (the same problems as
`python -m fastconv bench`). Run explicitly: `pytest benchmarks/ --benchmark-enable`.

Each benchmark module names its ops in `OPS`; this hook turns them into one test per
(case, backend). FASTCONV_BENCH_MODE=quick (or smoke) selects the smaller shapes.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict

import numpy as np
import pytest

import fastconv
from fastconv.bench import measure_roofs
from fastconv.bench_cases import Case, Problem, cases

MODE = os.environ.get("FASTCONV_BENCH_MODE", "full")
BACKENDS = ("fastconv", "numpy", "torch")
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
        params = [pytest.param(case, backend, id=f"{case.op}-{case.name}-{backend}")
                  for case in cases(MODE, ops) for backend in BACKENDS]
        metafunc.parametrize("case,backend", params)


@pytest.fixture(scope="session")
def roofs() -> Dict[str, float]:
    """The machine's float32 FMA peak (GFLOP/s) and copy bandwidth (GB/s), measured once;
    throughputs are also reported as a percentage of the roof of their unit."""
    peak, copy = measure_roofs("smoke" if MODE == "smoke" else "full")
    return {"GFLOP/s": peak, "GB/s": copy}


@pytest.fixture(scope="session")
def _problems() -> Dict[str, Problem]:
    # Holds only the current case: the full set of inputs would not fit in memory.
    return {}


def _problem(store: Dict[str, Problem], case: Case) -> Problem:
    if case.id not in store:
        store.clear()
        try:
            store[case.id] = case.setup(np.random.default_rng(0))
        except NotImplementedError as exc:
            pytest.skip(f"{case.id}: setup not implemented ({exc})")
    return store[case.id]


@pytest.fixture
def run_case(benchmark: Any, _problems: Dict[str, Problem],
             roofs: Dict[str, float]) -> Callable[[Case, str], None]:
    """Benchmark `case` with one backend; throughput and % of its roof go to extra_info."""

    def run(case: Case, backend: str) -> None:
        problem = _problem(_problems, case)
        inputs = problem.inputs
        benchmark.group = case.id
        benchmark.extra_info.update(op=case.op, case=case.name, shape=case.shape,
                                    backend=backend)
        if backend == "torch":
            torch = pytest.importorskip("torch")
            if problem.torch is None:
                pytest.skip(f"{case.id}: no fair PyTorch CPU equivalent")
            torch.set_num_threads(int(fastconv.info(as_dict=True)["threads"]))
            fn = problem.torch(torch, tuple(torch.from_numpy(a) if isinstance(a, np.ndarray)
                                            else a for a in inputs))
        else:
            impl = problem.fastconv if backend == "fastconv" else problem.numpy
            fn = lambda: impl(*inputs)  # noqa: E731
        try:
            start = time.perf_counter()
            fn()
            first = time.perf_counter() - start
        except NotImplementedError:
            pytest.skip(f"{case.id}: {backend} not implemented yet")
        if backend == "numpy":
            rounds = max(1, min(NUMPY_MAX_ROUNDS, int(NUMPY_SECONDS / max(first, 1e-9))))
            benchmark.pedantic(fn, rounds=rounds, iterations=1)
        else:
            benchmark(fn)
        if benchmark.stats is not None and problem.unit:
            rate = problem.work / benchmark.stats.stats.median / 1e9
            benchmark.extra_info[problem.unit] = round(rate, 3)
            benchmark.extra_info["% of roof"] = round(100 * rate / roofs[problem.unit], 1)

    return run
