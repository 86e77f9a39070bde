"""Test configuration: `cuda`-marked tests run only where the CUDA backend can."""

from __future__ import annotations

import pytest

import fastconv


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if fastconv.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no CUDA backend here: {fastconv.cuda.reason()}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
