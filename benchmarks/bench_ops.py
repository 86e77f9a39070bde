"""pytest-benchmark of every op of `fastconv.bench.cases` (the cases of `python -m fastconv
bench`): fastconv, the NumPy reference and PyTorch, on every device; cases and backends come
from conftest.py. A new op family needs no entry here: its cases join OPS. Select with -k,
e.g. `pytest benchmarks/ --benchmark-enable -k "roi_align and cpu"`."""

from __future__ import annotations

from typing import Callable

from fastconv.bench.cases import OPS, Case

__all__ = ["OPS"]


def test_op(run_case: Callable[[Case, str], None], case: Case, backend: str) -> None:
    run_case(case, backend)
