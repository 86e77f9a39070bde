"""pytest-benchmark of im2col, col2im: fastconv, NumPy and PyTorch
(cases and backends come from conftest.py)."""

from __future__ import annotations

from typing import Callable

from fastconv.bench.cases import Case

OPS = ("im2col", "col2im")


def test_im2col(run_case: Callable[[Case, str], None], case: Case, backend: str) -> None:
    run_case(case, backend)
