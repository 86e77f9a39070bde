"""pytest-benchmark of roi_align, roi_align_backward, roi_pool, roi_pool_backward: fastconv,
NumPy and torchvision where it loads (cases and backends come from conftest.py)."""

from __future__ import annotations

from typing import Callable

from fastconv.bench.cases import Case

OPS = ("roi_align", "roi_align_backward", "roi_pool", "roi_pool_backward")


def test_roi(run_case: Callable[[Case, str], None], case: Case, backend: str) -> None:
    run_case(case, backend)
