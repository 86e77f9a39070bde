"""What was built and what runs: `fastconv.info()`."""

from __future__ import annotations

import platform
from typing import Any, Dict

from . import _cpu, cuda
from ._version import __version__


def info(as_dict: bool = False) -> "str | Dict[str, Any]":
    """Version, compiler, the CPU instruction-set path in use (avx512, avx2 or baseline),
    OpenMP threads, and whether the CUDA backend was built (and why not).

    Returns a printable multi-line string, or the dict behind it with `as_dict=True`.
    """
    build = _cpu.build_info()
    details: Dict[str, Any] = {
        "version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "compiler": build["compiler"],
        "cpu_path": build["cpu_path"],
        "threads": build["max_threads"],
        "openmp": build["openmp"],
        "cuda_available": cuda.is_available(),
        "cuda_reason": cuda.reason(),
    }
    if as_dict:
        return details
    return "\n".join(f"{key:>15}: {value}" for key, value in details.items())
