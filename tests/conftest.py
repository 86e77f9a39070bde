"""Test configuration: `cuda`-marked tests run only where the CUDA backend can; a
sanitizer run (tools/sanitize_check.sh) makes sure it tests the instrumented module."""

from __future__ import annotations

import importlib
import os

import pytest

import fastconv


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("FASTCONV_EXPECT_SANITIZED"):
        module = importlib.import_module("fastconv._cpu").__file__ or ""
        if "sanitize" not in module:
            raise pytest.UsageError(f"expected the sanitizer build of fastconv._cpu, got "
                                    f"{module}")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if fastconv.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no CUDA backend here: {fastconv.cuda.reason()}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
