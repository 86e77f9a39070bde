"""pytest-benchmark of max_pool, avg_pool, max_pool_backward, avg_pool_backward: fastconv, NumPy and PyTorch
(cases and backends come from conftest.py)."""

from __future__ import annotations

from typing import Callable

from fastconv.bench.cases import Case

OPS = ("max_pool", "avg_pool", "max_pool_backward", "avg_pool_backward")


def test_pool(run_case: Callable[[Case, str], None], case: Case, backend: str) -> None:
    run_case(case, backend)
