"""pytest-benchmark of box_iou, box_convert, nms, batched_nms: fastconv, NumPy and PyTorch
(cases and backends come from conftest.py)."""

from __future__ import annotations

from typing import Callable

from fastconv.bench.cases import Case

OPS = ("box_iou", "box_convert", "nms", "batched_nms")


def test_boxes(run_case: Callable[[Case, str], None], case: Case, backend: str) -> None:
    run_case(case, backend)
