"""pytest-benchmark of conv, conv_backward_input, conv_backward_weight: fastconv, NumPy and PyTorch
(cases and backends come from conftest.py)."""

from __future__ import annotations

from typing import Callable

from fastconv.bench.cases import Case

OPS = ("conv", "conv_backward_input", "conv_backward_weight")


def test_conv(run_case: Callable[[Case, str], None], case: Case, backend: str) -> None:
    run_case(case, backend)
